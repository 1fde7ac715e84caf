"""The kill switch on the real control plane: suspending an agent deletes its pods.

Without a node, pods are still API objects: the controller-manager creates them from a
Deployment's ReplicaSet, the admission webhook admits and mutates them, and the operator
deletes them when their agent becomes Suspended or Retired. The webhook then refuses the
ReplicaSet's replacements (FailedCreate Events carry our message), and resuming lets the
Deployment bring them back. Figures (suspend-to-pods-gone, resume-to-pods-back) are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import figure, wait_for
from tests.fixtures.admission import AdmissionProcess
from tests.fixtures.operator import OperatorProcess

PLUGIN = str(Path(sys.executable).with_name("kubectl-agent"))
API = "agentidentity.io/v1alpha1"
LABEL = "agentidentity.io/agent"
# No node runs these pods, so no image is pulled; the name only has to be valid.
IMAGE = "localhost/agent-identity:never-pulled"
GONE_WITHIN = 10.0  # seconds from `kubectl agent suspend` to the last pod gone


@pytest.fixture
def world(
    cluster: Any, namespace: str, operator: OperatorProcess, admission: AdmissionProcess
) -> World:
    return World(cluster, namespace, operator, admission)


class World:
    def __init__(
        self, cluster: Any, namespace: str, operator: OperatorProcess, admission: AdmissionProcess
    ) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.operator = operator
        self.admission = admission
        from kubernetes import client

        self.core = client.CoreV1Api(cluster.api_client())

    def apply(self, *docs: dict[str, Any]) -> None:
        for doc in docs:
            doc["metadata"]["namespace"] = self.ns
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
        self.cluster.kubectl("apply", "-f", "-", input=body)

    def agent(self, name: str, owner: str = "team-payments", replicas: int = 2) -> None:
        """An Active agent with a scope and a Deployment of ``replicas`` agent pods."""
        self.apply(
            {
                "apiVersion": API,
                "kind": "AuthorityScope",
                "metadata": {"name": "tools"},
                "spec": {"tools": {"allow": ["github.pulls.*"]}},
            },
            {
                "apiVersion": API,
                "kind": "Agent",
                "metadata": {"name": name},
                "spec": {"owner": owner, "scopeRefs": [{"name": "tools"}]},
            },
        )
        self.wait_phase(name, "Active")
        self.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {LABEL: name}},
                    "template": {
                        "metadata": {"labels": {LABEL: name}},
                        "spec": {
                            "containers": [
                                {"name": "agent", "image": IMAGE, "command": ["sleep", "inf"]}
                            ]
                        },
                    },
                },
            }
        )

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> None:
        def check() -> bool:
            out = self.cluster.kubectl(
                "get", "agents.agentidentity.io", name, "-n", self.ns, "-o", "json"
            )
            return bool(json.loads(out.stdout).get("status", {}).get("phase") == phase)

        wait_for(f"agent {name} phase {phase}", check, timeout)

    def pods(self, agent: str) -> list[Any]:
        """Pods of the agent that are not terminating."""
        items = self.core.list_namespaced_pod(self.ns, label_selector=f"{LABEL}={agent}").items
        return [
            p for p in items if p.metadata is not None and p.metadata.deletion_timestamp is None
        ]

    def wait_pods(self, agent: str, n: int, timeout: float = 60) -> list[Any]:
        return list(
            wait_for(
                f"{n} pods of agent {agent}",
                lambda: (lambda p: p if len(p) == n else None)(self.pods(agent)),
                timeout,
            )
        )

    def plugin(self, *args: str) -> str:
        proc = subprocess.run(
            [PLUGIN, *args, "--kubeconfig", str(self.cluster.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl agent {args}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def failed_creates(self) -> list[str]:
        events = self.core.list_namespaced_event(self.ns).items
        return [
            e.message or ""
            for e in events
            if e.reason == "FailedCreate" and e.involved_object.kind == "ReplicaSet"
        ]

    def agent_events(self, agent: str, reason: str) -> list[str]:
        events = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={agent},involvedObject.kind=Agent"
        ).items
        return [e.message or "" for e in events if e.reason == reason]

    def deleted_records(self, agent: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.operator.audit_records()
            if r.get("kind") == "pod-deleted"
            and r.get("namespace") == self.ns
            and r.get("gen_ai.agent.name") == agent
        ]


def stays(what: str, check: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert check(), f"{what} stopped holding"
        time.sleep(0.2)


def test_suspend_deletes_running_pods_and_resume_brings_them_back(world: World) -> None:
    w = world
    w.agent("bot", replicas=2)
    before = w.wait_pods("bot", 2)
    # admitted and mutated by the webhook: the agent's ServiceAccount and token volume
    url = w.admission.decisions_url
    if not w.cluster.has_node:  # no node: the dev decision API listens on loopback only
        assert url and url.startswith("http://127.0.0.1:"), url
    for pod in before:
        assert pod.spec.service_account_name == "agent-bot"
        assert any(v.name == "agentidentity-token" for v in pod.spec.volumes)
        env = {e.name: e.value for e in pod.spec.containers[0].env or []}
        assert env["AGENT_IDENTITY_DECISIONS_URL"] == url
    names = sorted(p.metadata.name for p in before)

    start = time.monotonic()
    w.plugin("suspend", "bot", "-n", w.ns)
    wait_for("the pods of bot to be gone", lambda: not w.pods("bot"), GONE_WITHIN)
    gone = time.monotonic() - start
    figure(f"\nkill switch: suspend -> {len(names)} pods gone in {gone:.2f}s")

    # The ReplicaSet tries to replace them; the webhook refuses, naming the suspension.
    refused = wait_for(
        "a FailedCreate event with the webhook's message",
        lambda: [m for m in w.failed_creates() if 'agent "bot" is Suspended' in m],
        30,
    )
    assert "kubectl agent resume bot" in refused[0]
    stays("no pod of bot", lambda: not w.pods("bot"), 3)

    # One audit record and one Event on the Agent per deleted pod.
    records = wait_for("pod-deleted audit records", lambda: w.deleted_records("bot"), 10)
    assert sorted(r["pod"] for r in records) == names
    for r in records:
        assert r["actor"] == "system:agent-identity-operator"
        assert r["reason"] == "AgentSuspended" and r["phase"] == "Suspended"
        assert r["agent"].endswith(f"/{w.ns}/bot") and r["agentUid"]
    events = wait_for("PodDeleted events", lambda: w.agent_events("bot", "PodDeleted"), 10)
    assert sorted(m.split()[2] for m in events) == names

    start = time.monotonic()
    w.plugin("resume", "bot", "-n", w.ns)
    back = w.wait_pods("bot", 2, timeout=90)
    figure(f"kill switch: resume -> {len(back)} pods back in {time.monotonic() - start:.2f}s")
    assert not {p.metadata.name for p in back} & set(names)
    w.operator.assert_no_traceback()


def test_retire_deletes_pods_for_good(world: World) -> None:
    w = world
    w.agent("old", replicas=1)
    (pod,) = w.wait_pods("old", 1)
    start = time.monotonic()
    w.plugin("retire", "old", "-n", w.ns)
    wait_for("the pod of old to be gone", lambda: not w.pods("old"), GONE_WITHIN)
    figure(f"\nkill switch: retire -> pod gone in {time.monotonic() - start:.2f}s")
    wait_for(
        "a FailedCreate event for the retired agent",
        lambda: [m for m in w.failed_creates() if 'agent "old"' in m and "Retired" in m],
        30,
    )
    (record,) = wait_for("the audit record", lambda: w.deleted_records("old"), 10)
    assert record["pod"] == pod.metadata.name and record["reason"] == "AgentRetired"


def test_bulk_suspend_by_owner_and_by_namespace(world: World) -> None:
    w = world
    for name, owner in (("a1", "team-a"), ("a2", "team-a"), ("b1", "team-b")):
        w.agent(name, owner=owner, replicas=1)
    for name in ("a1", "a2", "b1"):
        w.wait_pods(name, 1)

    start = time.monotonic()
    out = w.plugin("suspend", "--owner", "team-a", "-n", w.ns)
    assert "a1" in out and "a2" in out and "b1" not in out
    wait_for("team-a's pods gone", lambda: not w.pods("a1") and not w.pods("a2"), GONE_WITHIN)
    figure(
        f"\nkill switch: suspend --owner (2 agents) -> pods gone in {time.monotonic() - start:.2f}s"
    )
    assert len(w.pods("b1")) == 1  # another owner's agent keeps running

    start = time.monotonic()
    w.plugin("resume", "--owner", "team-a", "-n", w.ns)
    w.wait_pods("a1", 1, timeout=90)
    w.wait_pods("a2", 1, timeout=90)
    figure(f"kill switch: resume --owner -> pods back in {time.monotonic() - start:.2f}s")

    start = time.monotonic()
    w.plugin("suspend", "--all", "-n", w.ns)
    wait_for(
        "every pod of the namespace gone",
        lambda: not any(w.pods(n) for n in ("a1", "a2", "b1")),
        GONE_WITHIN,
    )
    figure(f"kill switch: suspend --all (3 agents) -> pods gone in {time.monotonic() - start:.2f}s")
    start = time.monotonic()
    w.plugin("resume", "--all", "-n", w.ns)
    for name in ("a1", "a2", "b1"):
        w.wait_pods(name, 1, timeout=90)
    figure(f"kill switch: resume --all -> pods back in {time.monotonic() - start:.2f}s")
    w.operator.assert_no_traceback()
