"""Running `make run`'s demo (hack/demo.sh) from tests: examples/ applied, the script run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent_identity import __version__

ROOT = Path(__file__).resolve().parents[2]
NS = "payments"  # the examples' namespace
IMAGE = f"localhost/agent-identity:{__version__}"


def apply_examples(cluster: Any, timeout: float = 90) -> None:
    """`kubectl apply -f examples/`, then wait until every example agent is Active."""
    cluster.kubectl("apply", "-f", str(ROOT / "examples"))
    deadline = time.monotonic() + timeout
    while True:
        agents = json.loads(cluster.kubectl("get", "agents", "-n", NS, "-o", "json").stdout)
        phases = {a["metadata"]["name"]: a.get("status", {}).get("phase") for a in agents["items"]}
        if phases and all(p == "Active" for p in phases.values()):
            return
        assert time.monotonic() < deadline, f"example agents not Active: {phases}"
        time.sleep(0.5)


def delete_examples(cluster: Any) -> None:
    cluster.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found")


def run_demo(cluster: Any, logs: Path) -> subprocess.CompletedProcess[str]:
    """hack/demo.sh against the cluster, as `make run` runs it (its story is on stderr)."""
    dev = cluster.devcluster
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{dev.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "STATE_DIR": str(dev.state_dir),
        "LOGS": str(logs),
        "AI": str(Path(sys.executable).with_name("agent-identity")),
        "KUBECTL_AGENT": str(Path(sys.executable).with_name("kubectl-agent")),
    }
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )


def assert_demo_story(proc: subprocess.CompletedProcess[str]) -> None:
    """The answers the demo shows, in order: allow, deny, deny by the constraint, escalate,
    then allow after a person's approval."""
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = proc.stderr
    assert "demo done" in out
    order = [
        "allow deploy.staging on service/payments-api",
        "deny github.admin.delete-repo",
        "production deploys happen only inside a change window",
        "approves",
        "allow deploy.production on service/payments-api",
    ]
    at = [out.find(s) for s in order]
    assert all(i >= 0 for i in at) and at == sorted(at), list(zip(order, at, strict=True))
    assert "escalate deploy.production on service/payments-api" in out
