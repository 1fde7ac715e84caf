"""The demo `make run` shows (hack/demo.sh), run for real on the session's node.

examples/ applied as a user would (`kubectl apply -f examples/`), then the very script
`make run` calls: the release-bot pod is admitted and asks the decision API; it is allowed
to deploy to staging, denied an admin action, denied production outside a change window,
and inside the window escalated until a named approver approves with `kubectl agent
approve`, after which its waiting check answers allow. The script checks each outcome
itself and fails when one differs; this test checks that it ran to the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_identity import __version__

ROOT = Path(__file__).resolve().parents[2]
NS = "payments"  # the examples' namespace


@pytest.fixture
def examples_applied(
    cluster: Any, operator: Any, admission: Any, shipped_roles: None, project_image: str
) -> Iterator[None]:
    if cluster.devcluster is None or not cluster.devcluster.has_node:
        pytest.skip("the demo runs the agent as a pod on the local cluster's node")
    assert project_image == f"localhost/agent-identity:{__version__}"
    cluster.kubectl("apply", "-f", str(ROOT / "examples"))
    try:
        deadline = time.monotonic() + 60
        while True:
            agents = json.loads(cluster.kubectl("get", "agents", "-n", NS, "-o", "json").stdout)
            phases = {
                a["metadata"]["name"]: a.get("status", {}).get("phase") for a in agents["items"]
            }
            if phases and all(p == "Active" for p in phases.values()):
                break
            assert time.monotonic() < deadline, f"example agents not Active: {phases}"
            time.sleep(0.5)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found")


def test_make_run_demo(cluster: Any, examples_applied: None, tmp_path: Path) -> None:
    dev = cluster.devcluster
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{dev.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "STATE_DIR": str(dev.state_dir),
        "LOGS": str(tmp_path),
        "AI": str(Path(sys.executable).with_name("agent-identity")),
        "KUBECTL_AGENT": str(Path(sys.executable).with_name("kubectl-agent")),
    }
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = proc.stderr
    assert "demo done" in out
    # The answers the demo shows, in order: allow, deny, deny by the constraint, escalate,
    # then allow after the approval.
    assert out.index("allow deploy.staging on service/payments-api") < out.index(
        "deny github.admin.delete-repo"
    )
    assert "production deploys happen only inside a change window" in out
    assert "escalate deploy.production on service/payments-api" in out
    assert "allow deploy.production on service/payments-api" in out
    assert "approved" in out.lower()
    took = time.monotonic() - start
    print(f"\nmake run demo: pod Running, four questions, one approval in {took:.1f}s")


def test_example_pod_runs_this_version_of_the_image() -> None:
    # examples/pods/ names the image by tag; it must be the one `make image` builds now.
    text = (ROOT / "examples" / "pods" / "release-bot.yaml").read_text()
    assert f"image: localhost/agent-identity:{__version__}" in text
