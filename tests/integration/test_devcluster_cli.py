"""`agent-identity devcluster up|status|env|user|down` as scripts and people use them.

A control plane of its own (no node, a temporary state directory): `eval "$(... up)"`
returns with only the exports on stdout (the detached processes hold none of its stdio),
`status` and `env` describe it, `user` mints a kubeconfig RBAC then judges, and `down`
stops every process and frees the ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_identity.devcluster.cluster import _pid_alive
from tests.conftest import figure

AI = str(Path(sys.executable).with_name("agent-identity"))

pytestmark = pytest.mark.timeout(300)


def _ai(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AI, "devcluster", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_status_env_user_down(cluster: Any, tmp_path: Path) -> None:
    del cluster  # only for the binaries' build; this test runs a control plane of its own
    state = tmp_path / "dc"
    sd = ["--state-dir", str(state)]
    assert _ai("status", *sd).returncode == 1  # nothing runs there yet

    # What people type: eval "$(agent-identity devcluster up)"; it must return.
    start = time.monotonic()
    shell = subprocess.run(
        ["bash", "-c", f'eval "$({AI} devcluster up --no-node --state-dir {state})" && '
         'echo "KUBECONFIG=$KUBECONFIG" && command -v kubectl && kubectl get --raw /readyz'],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    took = time.monotonic() - start
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[0] == f"KUBECONFIG={state / 'kubeconfig'}"
    assert lines[1].endswith("/kubectl") and "agent-identity/k8s/" in lines[1]  # ours, first
    assert lines[2] == "ok"
    figure(f"devcluster up --no-node (warm) until eval returns: {took:.1f}s")
    try:
        # `up` again: stdout is exactly the two export lines (progress went to stderr).
        again = _ai("up", "--no-node", *sd)
        assert again.returncode == 0, again.stderr
        exports = again.stdout.splitlines()
        assert [e.split("=", 1)[0] for e in exports] == ["export KUBECONFIG", "export PATH"]
        assert _ai("env", *sd).stdout.splitlines() == exports

        status = _ai("status", "--json", *sd)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["running"] and info["ready"] and info["node"] is False
        assert info["server"].startswith("https://127.0.0.1:")
        ports = [int(info["server"].rsplit(":", 1)[1])]
        assert {"etcd", "kube-apiserver", "kube-controller-manager"} <= set(info["processes"])

        # A user with no rights: authenticated by the client CA, refused by RBAC.
        who = _ai("user", "--group", "auditors", "carol@example.com", *sd)
        assert who.returncode == 0, who.stderr
        kubectl = lines[1]
        env = {**os.environ, "KUBECONFIG": who.stdout.strip()}
        me = subprocess.run(
            [kubectl, "auth", "whoami", "-o", "json"], capture_output=True, text=True, env=env
        )
        user = json.loads(me.stdout)["status"]["userInfo"]
        assert user["username"] == "carol@example.com" and "auditors" in user["groups"]
        can = subprocess.run(
            [kubectl, "auth", "can-i", "list", "pods", "-A"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert can.stdout.strip() == "no"
    finally:
        down = _ai("down", *sd)
    assert down.returncode == 0, down.stderr
    assert _ai("status", *sd).returncode == 1
    assert all(_port_free(p) for p in ports), ports
    # zombie-aware, as devcluster itself judges "stopped"
    alive = [p for p in info["processes"].values() if _pid_alive(p)]
    assert not alive, f"processes left running after down: {alive}"
    # A second down is harmless and says so.
    assert "not running" in _ai("down", *sd).stderr
