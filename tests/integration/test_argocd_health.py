"""The Argo CD health checks (manifests/argocd/health/*.lua, run with lupa) on real objects.

The operator reconciles real Agents; their status, read back from the API server, goes
through the Lua scripts exactly as Argo CD would hand it over (the object as JSON).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.test_decisions import agent_phase, wait_for
from tests.unit.chart_support import argocd_health

pytestmark = pytest.mark.timeout(300)

OBJECTS = """
apiVersion: agentidentity.io/v1alpha1
kind: AuthorityScope
metadata: {name: reader}
spec:
  tools: {allow: ["ci.runs.read"]}
---
apiVersion: agentidentity.io/v1alpha1
kind: AuthorityScope
metadata: {name: doomed}
spec:
  tools: {allow: ["ci.runs.read"]}
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: ready-bot}
spec: {owner: team-a, scopeRefs: [{name: reader}]}
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: orphan-bot}
spec: {owner: team-a, scopeRefs: [{name: doomed}]}
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: paused-bot}
spec: {owner: team-a, scopeRefs: [{name: reader}]}
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: old-bot}
spec: {owner: team-a, scopeRefs: [{name: reader}]}
"""


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def set_state(cluster: Any, namespace: str, name: str, state: str) -> None:
    patch = json.dumps({"spec": {"lifecycle": {"state": state}}})
    cluster.kubectl("patch", "agent", name, "-n", namespace, "--type=merge", "-p", patch)


def test_argocd_health_on_real_agents(cluster: Any, namespace: str, operator: Any) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    for name in ("ready-bot", "orphan-bot", "paused-bot", "old-bot"):
        wait_for(
            lambda n=name: agent_phase(cluster, namespace, n) == "Active", what=f"{name} Active"
        )

    # Ready and observed -> Healthy
    ready = get(cluster, namespace, "agent", "ready-bot")
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    assert argocd_health("Agent", ready)["status"] == "Healthy"

    # not Ready: its scope is gone -> Pending, Ready False -> Progressing
    cluster.kubectl("delete", "authorityscope", "doomed", "-n", namespace)
    wait_for(lambda: agent_phase(cluster, namespace, "orphan-bot") == "Pending", what="Pending")
    orphan = get(cluster, namespace, "agent", "orphan-bot")
    ready_cond = next(c for c in orphan["status"]["conditions"] if c["type"] == "Ready")
    assert ready_cond["status"] == "False"
    health = argocd_health("Agent", orphan)
    assert health["status"] == "Progressing" and "doomed" in health["message"]

    # Suspended -> Suspended
    set_state(cluster, namespace, "paused-bot", "Suspended")
    wait_for(lambda: agent_phase(cluster, namespace, "paused-bot") == "Suspended", what="Suspended")
    assert (
        argocd_health("Agent", get(cluster, namespace, "agent", "paused-bot"))["status"]
        == "Suspended"
    )

    # Retired -> Degraded
    set_state(cluster, namespace, "old-bot", "Retired")
    wait_for(lambda: agent_phase(cluster, namespace, "old-bot") == "Retired", what="Retired")
    assert (
        argocd_health("Agent", get(cluster, namespace, "agent", "old-bot"))["status"] == "Degraded"
    )

    # A spec change the operator has not observed yet -> Progressing (generation ahead).
    stale = get(cluster, namespace, "agent", "ready-bot")
    stale["metadata"]["generation"] += 1
    assert argocd_health("Agent", stale)["status"] == "Progressing"

    # The scope itself, as stored (with whatever status the operator keeps on it).
    scope = get(cluster, namespace, "authorityscope", "reader")
    assert argocd_health("AuthorityScope", scope)["status"] == "Healthy"


def test_argocd_health_on_real_approval_requests(
    cluster: Any, namespace: str, operator: Any, admission: Any
) -> None:
    from tests.integration.test_approvals import decide
    from tests.integration.test_decisions import setup_env

    assert admission.decisions_url, "the admission process did not start the decision API"
    env = setup_env(cluster, namespace, admission.decisions_url)
    cluster.kubectl(
        "create", "rolebinding", "approvers", "-n", namespace,
        "--clusterrole=agentidentity-approver", "--user=approver-a",
    )  # fmt: skip
    approver = cluster.user_kubeconfig("approver-a")

    def open_request(rid: str) -> str:
        body = env.evaluate("deploy.production", rid=rid).json()
        assert body["context"]["outcome"] == "escalate", body
        return str(body["context"]["approvalRequest"]).split("/")[-1]

    def state(name: str) -> str:
        return str(get(cluster, namespace, "approvalrequest", name).get("status", {}).get("state"))

    approved, denied = open_request("svc-a"), open_request("svc-b")
    for name in (approved, denied):
        wait_for(lambda n=name: state(n) == "Pending", what="Pending")
        pending = get(cluster, namespace, "approvalrequest", name)
        assert argocd_health("ApprovalRequest", pending)["status"] == "Progressing"
    assert decide(cluster, namespace, approved, "Approve", kubeconfig=approver).returncode == 0
    assert decide(cluster, namespace, denied, "Deny", kubeconfig=approver).returncode == 0
    wait_for(lambda: state(approved) == "Approved", what="Approved")
    wait_for(lambda: state(denied) == "Denied", what="Denied")
    got = get(cluster, namespace, "approvalrequest", approved)
    assert argocd_health("ApprovalRequest", got)["status"] == "Healthy"
    got = get(cluster, namespace, "approvalrequest", denied)
    assert argocd_health("ApprovalRequest", got)["status"] == "Degraded"
    policy = get(cluster, namespace, "approvalpolicy", "prod-deploys")
    assert argocd_health("ApprovalPolicy", policy)["status"] == "Healthy"
