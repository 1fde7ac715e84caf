"""Pod-creation latency through the real API server, with and without our webhooks.

Run with ``.venv/bin/python bench/bench_admission.py [--pods N] [--agents 1000]``.
It starts its own local control plane (agent_identity.devcluster, a temporary state
directory), installs the CRDs and creates N agent pods (sequentially, via the Python
client, all on 127.0.0.1) three ways in one run:

1. ``no webhook``: the pod names its agent's ServiceAccount itself;
2. ``webhooks``: ``agent-identity admission --dev`` installed (mutating + validating);
3. ``webhooks + 1000 agents``: the same with 1,000 more Agents in the registry.

It prints p50/p95/p99 per way and the ratios to the no-webhook way (target: p95 with
our webhooks at most 1.15x). Ways run interleaved in rounds so drift of the shared machine
hits them alike: A B A B ... (before the 1,000 agents exist), then A C A C ...; for A the
webhook configurations are removed (and re-installed after), waiting each time until the
API server really stops (or starts) calling them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent_identity.admission.process import install_webhooks, remove_webhooks
from agent_identity.api import crdgen
from agent_identity.devcluster import DevCluster

GROUP, VERSION = "agentidentity.io", "v1alpha1"
AGENT_IDENTITY = str(Path(sys.executable).with_name("agent-identity"))


def wait_sa(core: client.CoreV1Api, ns: str) -> None:
    for _ in range(300):
        try:
            core.read_namespaced_service_account("default", ns)
            return
        except ApiException:
            time.sleep(0.1)
    raise TimeoutError(ns)


def make_agent(api: client.ApiClient, ns: str, name: str) -> None:
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "agents",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {"owner": "bench"},
        },
    )
    # The operator's job; the benchmark measures admission, so it writes the status itself.
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "agents", name, {"status": {"phase": "Active"}}
    )
    client.CoreV1Api(api).create_namespaced_service_account(
        ns, {"metadata": {"name": f"agent-{name}"}}
    )


def pod(name: str, sa: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "registry.invalid/agent:1"}]}
    if sa:
        spec["serviceAccountName"] = sa
        spec["automountServiceAccountToken"] = False
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {f"{GROUP}/agent": "bench"}},
        "spec": spec,
    }


def create_pods(
    core: client.CoreV1Api, ns: str, prefix: str, n: int, sa: str | None
) -> list[float]:
    out = []
    for i in range(n):
        body = pod(f"{prefix}-{i}", sa)
        t0 = time.perf_counter()
        created = core.create_namespaced_pod(ns, body, _preload_content=False)
        out.append(time.perf_counter() - t0)
        spec = json.loads(created.data)["spec"]
        if sa is None:  # proof that our webhook mutated it
            assert spec["serviceAccountName"] == "agent-bench", spec
    return out


def wait_active(core: client.CoreV1Api, active: bool, timeout: float = 30) -> None:
    """Until the API server does (or no longer does) call our webhooks."""
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "labels": {f"{GROUP}/agent": "no-such-agent"}},
        "spec": {"containers": [{"name": "main", "image": "x"}]},
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.create_namespaced_pod("bench", probe, dry_run="All")
            called = False
        except ApiException as exc:
            called = "no Agent" in str(exc.body)
        if called == active:
            return
        time.sleep(0.05)
    raise TimeoutError(f"webhooks active={active} not reached")


def _sums(text: str, metric: str, key: str) -> dict[str, tuple[float, float]]:
    """{label ``key`` (+ type): (sum, count)} of a Prometheus histogram, accepted requests."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, i in (("_sum{", 0), ("_count{", 1)):
            if not line.startswith(metric + suffix) or 'rejected="true"' in line:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            name = labels.get(key, "?") + (f" ({labels['type']})" if "type" in labels else "")
            out.setdefault(name, [0.0, 0.0])[i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def where_the_time_goes(dev: DevCluster, log: str) -> str:
    """Per webhook call: the API server's own measurement vs our handler's."""
    kubectl = [str(dev.bin_dir / "kubectl"), "--kubeconfig", str(dev.kubeconfig)]
    server = subprocess.run(
        [*kubectl, "get", "--raw", "/metrics"], capture_output=True, text=True, check=True
    ).stdout
    metrics_url = re.search(r"metrics (http://\S+)", log)
    ours = urllib.request.urlopen(metrics_url.group(1)).read().decode() if metrics_url else ""
    lines = ["per webhook call (all ways, accepted requests), mean ms:"]
    for name, (total, count) in sorted(
        _sums(server, "apiserver_admission_webhook_admission_duration_seconds", "name").items()
    ):
        if count:
            lines.append(f"  api server sees {name:50} {total / count * 1000:6.2f} ({count:.0f})")
    for name, (total, count) in sorted(
        _sums(ours, "agent_identity_admission_duration_seconds", "webhook").items()
    ):
        if count and "pods" in name:
            lines.append(f"  our handler      {name:50} {total / count * 1000:6.2f} ({count:.0f})")
    return "\n".join(lines)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=300, help="pods per way (default 300)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    per_round = max(1, args.pods // args.rounds)

    with (
        tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp,
        DevCluster.start(Path(tmp) / "cluster") as dev,
    ):
        api = config.new_client_from_config(config_file=str(dev.kubeconfig))
        core = client.CoreV1Api(api)
        crdgen.install_crds(api, timeout=60)
        for ns in ("bench", "bench-many"):
            core.create_namespace({"metadata": {"name": ns}})
            wait_sa(core, ns)
        make_agent(api, "bench", "bench")

        log = Path(tmp) / "admission.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [AGENT_IDENTITY, "admission", "--dev", "--kubeconfig", str(dev.kubeconfig)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            deadline = time.monotonic() + 90
            while "webhooks installed:" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            # Grab the installed configurations so way 1 can remove and restore them.
            reg = client.AdmissionregistrationV1Api(api)
            validating = api.sanitize_for_serialization(
                reg.read_validating_webhook_configuration("agent-identity")
            )
            mutating = api.sanitize_for_serialization(
                reg.read_mutating_webhook_configuration("agent-identity")
            )
            for doc in (validating, mutating):
                doc["metadata"] = {"name": doc["metadata"]["name"]}

            # Phase 1 (before the 1,000 exist): rounds of A (no webhook) / B (webhooks);
            # phase 2: the 1,000 agents are created, then rounds of A / C.
            results: dict[str, list[float]] = {}

            def rounds(prefix: str, way: str, baseline: str) -> None:
                create_pods(core, "bench", f"warm-{prefix}", 20, None)
                for r in range(args.rounds):
                    remove_webhooks(api, "agent-identity")
                    wait_active(core, False)
                    results.setdefault(baseline, []).extend(
                        create_pods(core, "bench", f"{prefix}a{r}", per_round, "agent-bench")
                    )
                    install_webhooks(api, validating, mutating)
                    wait_active(core, True)
                    results.setdefault(way, []).extend(
                        create_pods(core, "bench", f"{prefix}w{r}", per_round, None)
                    )

            rounds("p1", "webhooks", "no webhook")
            print(f"registering {args.agents} agents ...", flush=True)
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: make_agent(api, "bench-many", f"many-{i}"), range(args.agents)
                    )
                )
            print(f"  done in {time.monotonic() - t0:.1f}s", flush=True)
            rounds("p2", f"webhooks + {args.agents} agents", "no webhook (phase 2)")
            breakdown = where_the_time_goes(dev, log.read_text())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

        base = {way: pct(results["no webhook"], p) for p, way in ((50, 50), (95, 95), (99, 99))}
        print(
            f"\n{per_round * args.rounds} pods per way, sequential creates via the Python client;"
        )
        print(
            "ratios to 'no webhook' (phase 1); '(phase 2)' is the baseline re-measured beside way 3"
        )
        cols = ("p50 ms", "p95 ms", "p99 ms")
        head = f"{'way':30} " + " ".join(f"{c:>8}" for c in cols) + "   p50 x   p95 x   p99 x"
        print(head)
        for way, samples in results.items():
            p50, p95, p99 = (pct(samples, p) for p in (50, 95, 99))
            print(
                f"{way:30} {p50:8.2f} {p95:8.2f} {p99:8.2f} {p50 / base[50]:6.2f}x "
                f"{p95 / base[95]:6.2f}x {p99 / base[99]:6.2f}x"
            )
        print(breakdown)
        print(
            "mean: "
            + ", ".join(f"{w} {statistics.mean(s) * 1000:.2f} ms" for w, s in results.items())
        )


if __name__ == "__main__":
    main()
