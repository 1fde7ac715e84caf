"""`make run` (hack/run.sh) for real, without the node: a control plane of its own.

The script a newcomer runs: it starts its own local control plane (a state directory of its
own, never the session's cluster), installs the CRDs, runs the operator and the admission
process, applies examples/ and waits until every example agent is Ready, prints the
KUBECONFIG to use and stays up; Ctrl-C stops everything and the cluster is gone. (With the
node, the same script goes on to the agent-pod demo: tests/e2e/test_demo.py runs that part.)
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import figure

ROOT = Path(__file__).resolve().parents[2]
AI = Path(sys.executable).with_name("agent-identity")

pytestmark = pytest.mark.timeout(400)


def _read_until(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first stdout line starting with ``prefix`` (run.sh's progress goes to stderr)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sel.select(timeout=1):
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"run.sh printed no {prefix!r} line (exit code {proc.poll()})")


def test_make_run_without_node(cluster: Any, tmp_path: Path) -> None:
    del cluster  # only for the binaries' build; run.sh starts a control plane of its own
    state_dir = tmp_path / "cluster"
    err = tmp_path / "run.stderr"
    env = {
        **os.environ,
        "STATE_DIR": str(state_dir),
        "RUN_NODE": "0",
        "AI": str(AI),
        "OPERATOR_METRICS_PORT": "0",
        "ADMISSION_METRICS_PORT": "0",
    }
    start = time.monotonic()
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "hack" / "run.sh")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        try:
            line = _read_until(proc, "KUBECONFIG=", timeout=300)
        except AssertionError:
            raise AssertionError(err.read_text()[-5000:]) from None
        up = time.monotonic() - start
        kubeconfig = line.split("=", 1)[1]
        assert kubeconfig == str(state_dir / "kubeconfig")
        kubectl = json.loads((state_dir / "cluster.json").read_text())["bin_dir"] + "/kubectl"

        def get(*args: str) -> Any:
            out = subprocess.run(
                [kubectl, "--kubeconfig", kubeconfig, "get", *args, "-o", "json"],
                capture_output=True,
                text=True,
                check=True,
            )
            return json.loads(out.stdout)

        agents = get("agents", "-n", "payments")["items"]
        assert sorted(a["metadata"]["name"] for a in agents) == [
            "orchestrator",
            "release-bot",
            "support-assistant",
        ]
        for agent in agents:
            ready = [c for c in agent["status"]["conditions"] if c["type"] == "Ready"]
            assert ready and ready[0]["status"] == "True", agent["status"]
        # The admission process installed its webhooks into this cluster (and nothing ran
        # on the session's cluster).
        assert get("validatingwebhookconfiguration", "agent-identity")["webhooks"]
        text = err.read_text()
        assert "== applying examples/" in text and "release-bot" in text
        assert "RUN_MODE=local" in text
        figure(f"make run (RUN_NODE=0): cluster, operator, webhooks, examples Ready in {up:.1f}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a person stops it
        code = proc.wait(timeout=90)
    assert code == 130, err.read_text()[-3000:]
    status = subprocess.run(
        [str(AI), "devcluster", "status", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 1, status.stdout + status.stderr  # stopped
    assert "== stopping" in err.read_text()
