"""When the webhook process is down, enforcing namespaces fail closed; kube-system does not.

A second admission process with its own configuration names is started and
killed (SIGKILL: a crash leaves its configurations behind), so the session's
process keeps serving every other test. The agent pod used here is one the
session's webhooks admit, so its refusal can only come from the dead webhook.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.admission import AdmissionProcess

GROUP = "agentidentity.io"
DEAD = "agent-identity-failclosed"


def _pod(name: str, namespace: str, label: str | None = None) -> str:
    labels = {f"{GROUP}/agent": label} if label else {}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "registry.invalid/x:1"}]},
        }
    )


def _wait_phase(cluster: Any, namespace: str, name: str, phase: str) -> None:
    deadline = time.monotonic() + 30
    while (
        cluster.kubectl(
            "get", "agent", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
        ).stdout
        != phase
    ):
        assert time.monotonic() < deadline, f"agent {name} not {phase}"
        time.sleep(0.1)


def test_webhook_down_fails_closed_except_kube_system(
    cluster: Any, namespace: str, admission: AdmissionProcess, operator: Any, tmp_path: Path
) -> None:
    agent = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "bot", "namespace": namespace},
        "spec": {"owner": "team-payments"},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(agent))
    _wait_phase(cluster, namespace, "bot", "Active")
    cluster.kubectl("label", "namespace", namespace, f"{GROUP}/enforce=deny")
    # With only the session's webhooks, this agent pod is admitted.
    cluster.kubectl("create", "-f", "-", input=_pod("before", namespace, "bot"))

    dead = AdmissionProcess(Path(cluster.kubeconfig), tmp_path, name=DEAD)
    dead.start()
    system_pod = f"failclosed-{secrets.token_hex(3)}"
    try:
        assert dead.stop(kill=True) == -signal.SIGKILL
        # a crash leaves the configurations in place
        cluster.kubectl("get", "validatingwebhookconfiguration", DEAD)
        cluster.kubectl("get", "mutatingwebhookconfiguration", DEAD)

        refused = cluster.kubectl(
            "create", "-f", "-", input=_pod("after", namespace, "bot"), check=False
        )
        assert refused.returncode != 0, refused.stdout
        assert "failed calling webhook" in refused.stderr, refused.stderr
        assert "connection refused" in refused.stderr, refused.stderr

        # kube-system is never sent to the webhooks, labelled or not
        ok = cluster.kubectl("create", "-f", "-", input=_pod(system_pod, "kube-system", "bot"))
        assert f"pod/{system_pod} created" in ok.stdout
    finally:
        cluster.kubectl(
            "delete",
            "pod",
            system_pod,
            "-n",
            "kube-system",
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )
        cluster.kubectl(
            "delete",
            "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            DEAD,
            "--ignore-not-found",
            check=False,
        )
    # once the dead configuration is gone, the namespace admits its agent again
    cluster.kubectl("create", "-f", "-", input=_pod("after", namespace, "bot"))
    assert "Traceback" not in dead.log_text()


def test_webhook_down_refuses_unregistered_pods_in_enforcing_namespaces(
    cluster: Any, namespace: str, without_admission_webhooks: None, tmp_path: Path
) -> None:
    # Only the process under test serves this cluster's webhooks here (the session's
    # configurations are set aside), so every answer below is its own, or its absence.
    cluster.kubectl("label", "namespace", namespace, f"{GROUP}/enforce=deny")
    dead = AdmissionProcess(Path(cluster.kubeconfig), tmp_path, name=DEAD)
    dead.start()
    try:
        alive = cluster.kubectl("create", "-f", "-", input=_pod("stray-1", namespace), check=False)
        assert alive.returncode != 0 and "only runs registered agents" in alive.stderr, alive
        assert dead.stop(kill=True) == -signal.SIGKILL
        refused = cluster.kubectl(
            "create", "-f", "-", input=_pod("stray-2", namespace), check=False
        )
        assert refused.returncode != 0, refused.stdout
        assert "failed calling webhook" in refused.stderr, refused.stderr
        assert "enforce-deny.agentidentity.io" in refused.stderr, refused.stderr
        # A namespace that does not enforce is not sent to that webhook: pods go through.
        free = f"{namespace[:55]}-free"
        cluster.kubectl("create", "namespace", free)
        try:
            cluster.kubectl("create", "-f", "-", input=_pod("plain", free))
        finally:
            cluster.kubectl("delete", "namespace", free, "--wait=false", check=False)
    finally:
        dead.stop(kill=True)


@pytest.fixture(autouse=True)
def _no_leftover(cluster: Any) -> Any:
    yield
    cluster.kubectl(
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        DEAD,
        "--ignore-not-found",
        check=False,
    )
