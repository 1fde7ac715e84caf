"""Decision API throughput and latency beside a bare aiohttp handler, in one run.

    .venv/bin/python bench/bench_decisions.py [--agents 1000] [--requests 4000] [--concurrency 8]
        [--latency-requests 2000] [--repeat 3]

What runs: the real decision app (``build_decision_app``: routing, AuthZEN parsing, caller
authentication from the token cache, lifecycle + authority from a Registry holding
``--agents`` agents, the engine, metrics and an audit record per decision written to a
file) and, for comparison, a bare aiohttp handler that parses the same JSON body and
answers ``{"decision": true}``. Each server runs in its own process on 127.0.0.1; the
client (aiohttp, keep-alive) runs here. The Registry is filled directly and the token is
pre-seeded in the TokenReview cache (what every call after the first sees), so no API
server is involved: this measures the per-request cost of the decision path.

Rounds: ``plain`` (allowed tool, no constraints) and ``constraints`` (every allowed tool
guarded by a CEL constraint, the request satisfying it). Throughput is measured with
``--concurrency`` connections, latency (p50/p99) with one connection, sequentially.
Bounded: a fixed number of requests per round, loopback only.

Reporting: the three servers run interleaved, ``--repeat`` times. For each server the run
with the median throughput is reported with its own p50 and p99 (so the two figures come
from the same run), beside the range (min-max) of each figure across the runs. The ratio
is the decision API's median throughput over the bare handler's median throughput; the
ratios of the individual repetitions (each pairs the servers of one repetition, run
back to back) are printed too, to show the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

TOKEN = "bench-token"
BODY = {
    "subject": {"type": "agent", "id": "bench/agent-500"},
    "action": {"name": "github.pulls.create"},
    "resource": {"type": "repository", "id": "payments", "properties": {"env": "staging"}},
    "context": {"change_window": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bare_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"decision": True})

    app = web.Application()
    app.router.add_post("/access/v1/evaluation", handler)
    return app


def _decision_app(agents: int, constraints: bool, audit_path: str) -> web.Application:
    from agent_identity.audit import AuditLog
    from agent_identity.authz.service import build_decision_app
    from agent_identity.authz.tokens import Caller, TokenReviewer
    from agent_identity.registry import Registry

    registry = Registry()
    allow = ["github.pulls.*", "github.issues.read", "ci.runs.*", "deploy.staging"]
    for i in range(agents):
        spec: dict[str, Any] = {
            "tools": {"allow": allow, "deny": ["github.admin.**"]},
            "sensitive": ["deploy.production"],
        }
        if constraints:
            spec["constraints"] = [
                {
                    "tools": [tool],
                    "when": "resource.properties.env != 'production' || "
                    "context.change_window == true",
                    "message": "production only in a change window",
                }
                for tool in allow
            ]
        registry.upsert(
            {
                "kind": "AuthorityScope",
                "metadata": {"name": f"scope-{i}", "namespace": "bench", "generation": 1},
                "spec": spec,
            }
        )
        registry.upsert(
            {
                "kind": "Agent",
                "metadata": {"name": f"agent-{i}", "namespace": "bench", "uid": f"uid-{i}"},
                "spec": {"owner": "team-bench", "scopeRefs": [{"name": f"scope-{i}"}]},
                "status": {"phase": "Active"},
            }
        )
    reviewer = TokenReviewer(None)
    reviewer.seed(
        TOKEN,
        Caller(username="system:serviceaccount:bench:agent-agent-500", jti="bench-jti"),
        time.time() + 3600,
    )
    audit = AuditLog(stream=None, path=Path(audit_path))
    return build_decision_app(
        registry,
        None,
        audit=audit,
        cluster_name="bench",
        reviewer=reviewer,
        expiry_interval=None,
    )


def _serve(kind: str, port: int, agents: int, constraints: bool, audit_path: str) -> None:
    app = _bare_app() if kind == "bare" else _decision_app(agents, constraints, audit_path)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    async with ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.post(url, json=BODY, headers=_headers()) as resp:
                    await resp.read()
                    return
            except OSError:
                await asyncio.sleep(0.1)
    raise TimeoutError(url)


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def _throughput(url: str, total: int, concurrency: int) -> float:
    payload = json.dumps(BODY).encode()
    remaining = total

    async def worker(session: ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=payload, headers=_headers()) as resp:
                body = await resp.json()
                if resp.status != 200 or "decision" not in body:
                    raise RuntimeError(f"unexpected answer {resp.status}: {body}")

    async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return total / (time.perf_counter() - start)


async def _latency(url: str, total: int) -> tuple[float, float, bool]:
    payload = json.dumps(BODY).encode()
    samples: list[float] = []
    decision = False
    async with ClientSession(connector=TCPConnector(limit=1)) as session:
        for _ in range(total):
            start = time.perf_counter()
            async with session.post(url, data=payload, headers=_headers()) as resp:
                body = await resp.json()
            samples.append(time.perf_counter() - start)
            decision = bool(body.get("decision"))
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) * 1000, p99 * 1000, decision


def _round(kind: str, args: argparse.Namespace, constraints: bool, audit: str) -> dict[str, Any]:
    port = _free_port()
    proc = mp.get_context("spawn").Process(
        target=_serve, args=(kind, port, args.agents, constraints, audit), daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{port}/access/v1/evaluation"
    try:
        asyncio.run(_wait_up(url))
        asyncio.run(_throughput(url, min(500, args.requests), args.concurrency))  # warm-up
        rps = asyncio.run(_throughput(url, args.requests, args.concurrency))
        p50, p99, decision = asyncio.run(_latency(url, args.latency_requests))
    finally:
        proc.terminate()
        proc.join(10)
    return {"rps": rps, "p50": p50, "p99": p99, "decision": decision}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower of the two middle ones when even)."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[(len(ordered) - 1) // 2]


def _span(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per server (odd is best)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    # The rounds are interleaved and repeated; each server's median run is reported, so a
    # burst of load from elsewhere on the machine does not decide the ratio.
    kinds = ("bare", "plain", "constraints")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        audit = os.path.join(tmp, "audit.jsonl")
        for _ in range(args.repeat):
            runs["bare"].append(_round("bare", args, False, audit))
            runs["plain"].append(_round("decisions", args, False, audit))
            runs["constraints"].append(_round("decisions", args, True, audit))
        with open(audit, encoding="utf-8") as fh:
            records = sum(1 for _ in fh)
    median = {k: _median_run(v) for k, v in runs.items()}
    print(
        f"decision API benchmark: {args.agents} agents registered, cached token, "
        f"{args.requests} requests x {args.concurrency} connections for throughput, "
        f"{args.latency_requests} sequential for latency, loopback, {args.repeat} runs per "
        "server (interleaved)"
    )
    print(
        "each row: the run with the median throughput, with that run's own p50 and p99; "
        "ranges are min-max over all runs"
    )
    header = (
        f"{'server':<28}{'decisions/s':>12}{'range':>14}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'p99 range':>15}{'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    names = {
        "bare": "bare aiohttp handler",
        "plain": "decision API",
        "constraints": "decision API + constraints",
    }
    bare_rps = median["bare"]["rps"]
    for kind in kinds:
        r = median[kind]
        rps_range = _span([x["rps"] for x in runs[kind]], ".0f")
        p99_range = _span([x["p99"] for x in runs[kind]], ".3f")
        print(
            f"{names[kind]:<28}{r['rps']:>12.0f}{rps_range:>14}{r['p50']:>9.3f}"
            f"{r['p99']:>9.3f}{p99_range:>15}{r['rps'] / bare_rps:>8.2f}"
        )
    for kind in ("plain", "constraints"):
        paired = [a["rps"] / b["rps"] for a, b in zip(runs[kind], runs["bare"], strict=True)]
        print(
            f"ratio per repetition, {names[kind]} / bare: " + " ".join(f"{x:.2f}" for x in paired)
        )
    assert all(r["decision"] for k in ("plain", "constraints") for r in runs[k]), (
        "the benchmark request must be allowed"
    )
    print(f"audit records written: {records}")
    print("targets: ratio (median decision API / median bare) >= 0.60 and p99 <= 2 ms")


if __name__ == "__main__":
    main()
