"""Admission handlers driven directly: requests/s and p99, with 1,000 agents registered.

Run with ``.venv/bin/python bench/bench_admission_handlers.py [--requests N]`` (bounded;
no cluster: the registry is filled in memory, the HTTP server listens on 127.0.0.1).

Two layers are measured for each webhook:

* ``pure``: the decision function alone (request dict + registry + clock -> Decision);
* ``http``: the whole aiohttp handler (JSON in, AdmissionReview out) over one keep-alive
  connection on 127.0.0.1, as the API server calls it (minus TLS).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession

from agent_identity.admission import pods, provenance, resources
from agent_identity.admission.server import Admission
from agent_identity.audit import AuditLog
from agent_identity.registry import KINDS, Registry

NS = "bench"
NOW = datetime.now(UTC)


def build_registry(agents: int) -> Registry:
    scopes = [
        {
            "kind": "AuthorityScope",
            "metadata": {"name": f"scope-{i}", "namespace": NS},
            "spec": {
                "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
                "tools": {"allow": ["github.pulls.*"], "deny": ["github.admin.**"]},
                "maxTokenTTLSeconds": 1800,
            },
        }
        for i in range(10)
    ]
    bodies = [
        {
            "kind": "Agent",
            "metadata": {"name": f"agent-{i}", "namespace": NS, "uid": f"u{i}"},
            "spec": {"owner": "team", "scopeRefs": [{"name": f"scope-{i % 10}"}]},
            "status": {"phase": "Active"},
        }
        for i in range(agents)
    ]
    reg = Registry()
    reg.replace_all("AuthorityScope", scopes)
    reg.replace_all("Agent", bodies)
    for kind in KINDS:
        reg.synced.add(kind)
    return reg


def pod_request(i: int) -> dict[str, Any]:
    return {
        "uid": f"r{i}",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": NS,
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"p{i}",
                "namespace": NS,
                "labels": {"agentidentity.io/agent": f"agent-{i % 1000}"},
            },
            "spec": {
                "serviceAccountName": "default",
                "containers": [{"name": "main", "image": "x"}, {"name": "side", "image": "y"}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}],
            },
        },
    }


def agent_update_request(i: int) -> dict[str, Any]:
    old = {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": f"agent-{i % 1000}",
            "namespace": NS,
            "annotations": {
                "agentidentity.io/created-by": "alice",
                "agentidentity.io/last-modified-by": "alice",
            },
        },
        "spec": {"owner": "team", "scopeRefs": [{"name": f"scope-{i % 10}"}]},
        "status": {"phase": "Active"},
    }
    new = {**old, "spec": {**old["spec"], "description": f"edit {i}"}}
    return {
        "uid": f"r{i}",
        "kind": {"group": "agentidentity.io", "version": "v1alpha1", "kind": "Agent"},
        "namespace": NS,
        "operation": "UPDATE",
        "userInfo": {"username": "alice", "groups": []},
        "object": new,
        "oldObject": old,
    }


def stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(samples) / sum(samples), statistics.median(ordered) * 1e6, p99 * 1e6


def bench_pure(
    name: str, fn: Callable[[dict[str, Any]], Any], make: Callable[[int], dict[str, Any]], n: int
) -> None:
    requests = [make(i) for i in range(n)]
    for r in requests[:50]:
        fn(r)
    samples = []
    for r in requests:
        t0 = time.perf_counter()
        fn(r)
        samples.append(time.perf_counter() - t0)
    rps, p50, p99 = stats(samples)
    print(f"{'pure':5} {name:28} {rps:12,.0f} {p50:10.1f} {p99:10.1f}")


async def bench_http(reg: Registry, n: int) -> None:
    from aiohttp import web

    adm = Admission(reg, None, AuditLog(stream=None), "http://127.0.0.1:1")
    runner = web.AppRunner(adm.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ClientSession() as session:
            for path, make in (
                ("/validate/pods", pod_request),
                ("/mutate/pods", pod_request),
                ("/validate/resources", agent_update_request),
                ("/mutate/provenance", agent_update_request),
            ):
                bodies = [
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "request": make(i),
                    }
                    for i in range(n)
                ]
                for b in bodies[:50]:
                    async with session.post(f"http://127.0.0.1:{port}{path}", json=b) as resp:
                        await resp.read()
                samples = []
                for b in bodies:
                    t0 = time.perf_counter()
                    async with session.post(f"http://127.0.0.1:{port}{path}", json=b) as resp:
                        out = await resp.json()
                    samples.append(time.perf_counter() - t0)
                    assert out["response"]["allowed"], out
                rps, p50, p99 = stats(samples)
                print(f"{'http':5} {path:28} {rps:12,.0f} {p50:10.1f} {p99:10.1f}")
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args()
    reg = build_registry(args.agents)
    print(f"{args.agents} agents registered; {args.requests} requests per row (sequential)")
    print(f"{'layer':5} {'webhook':28} {'requests/s':>12} {'p50 µs':>10} {'p99 µs':>10}")
    bench_pure("validate_pod", lambda r: pods.validate_pod(r, reg, NOW), pod_request, args.requests)
    bench_pure(
        "mutate_pod", lambda r: pods.mutate_pod(r, reg, NOW, "http://d"), pod_request, args.requests
    )
    bench_pure(
        "validate_resource (Agent)",
        lambda r: resources.validate_resource(r, reg, NOW),
        agent_update_request,
        args.requests,
    )
    bench_pure("provenance.mutate", provenance.mutate, agent_update_request, args.requests)
    asyncio.run(bench_http(reg, args.requests))


if __name__ == "__main__":
    main()
