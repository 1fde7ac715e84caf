"""The metrics after a real scenario, scraped over HTTP from both processes.

Agents applied and reconciled by the operator; an agent pod admitted (and mutated) and a
pod of an unknown agent denied by the webhooks; allow, deny and escalate decisions from
the decision API with a real agent token; the escalation approved by a real user. Then
`/metrics` of the operator (`--metrics-port`) and of the admission process must carry the
series the dashboard and the alerts use, with the expected labels and non-zero counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_approvals import decide
from tests.integration.test_decisions import setup_env, wait_for

pytestmark = pytest.mark.timeout(300)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    )


def admission_metrics_url(admission: Any) -> str:
    found = re.search(r"metrics (http://\S+/metrics)", admission.log_text())
    assert found, "the admission process did not print its metrics URL"
    return found.group(1)


def _pod(name: str, agent: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"agentidentity.io/agent": agent}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/agent:1"}]},
        }
    )


def test_metrics_after_a_real_scenario(
    cluster: Any, namespace: str, operator: Any, admission: Any
) -> None:
    assert admission.decisions_url, "the admission process did not start the decision API"
    admission_url = admission_metrics_url(admission)
    operator_url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    before = scrape(admission_url)

    env = setup_env(cluster, namespace, admission.decisions_url)  # 2 agents, scopes, policies
    cluster.kubectl(
        "create", "rolebinding", "approvers", "-n", namespace,
        "--clusterrole=agentidentity-approver", "--user=approver-a",
    )  # fmt: skip

    # admission: one agent pod admitted (and mutated), one of an unknown agent denied
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("worker", "release-bot"))
    denied = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=_pod("ghost", "ghost-bot"), check=False
    )
    assert denied.returncode != 0 and "ghost-bot" in denied.stderr
    # enforce=audit: an unregistered pod is admitted, and counted (and audited).
    audited_ns = f"{namespace[:57]}-audit"
    cluster.kubectl("create", "namespace", audited_ns)
    try:
        cluster.kubectl("label", "namespace", audited_ns, "agentidentity.io/enforce=audit")
        plain = json.loads(_pod("plain", "x"))
        del plain["metadata"]["labels"]
        cluster.kubectl("apply", "-n", audited_ns, "-f", "-", input=json.dumps(plain))
    finally:
        cluster.kubectl("delete", "namespace", audited_ns, "--wait=false", check=False)

    # decisions: allow, deny, escalate; then a person approves the escalation
    assert env.evaluate("ci.runs.read").json()["context"]["outcome"] == "allow"
    assert env.evaluate("github.admin.delete").json()["context"]["outcome"] == "deny"
    body = env.evaluate("deploy.production").json()
    assert body["context"]["outcome"] == "escalate", body
    request_name = body["context"]["approvalRequest"].split("/")[-1]
    # While it waits for a person, the pending gauge counts it (refreshed every 5 s).
    pending = "agent_identity_approval_requests_pending"
    wait_for(
        lambda: value(scrape(admission_url), pending) >= 1,
        what="the open request to be counted as pending",
        timeout=30,
    )
    approved = decide(
        cluster, namespace, request_name, "Approve",
        kubeconfig=cluster.user_kubeconfig("approver-a"),
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr

    # --- the operator
    op = wait_for(
        lambda: (
            (s := scrape(operator_url))
            and value(s, "agent_identity_agents", namespace=namespace, phase="Active") == 2
            and s
        ),
        what="agent_identity_agents of this namespace",
    )
    assert value(op, "agent_identity_scope_bindings", namespace=namespace) == 2
    assert value(op, "agent_identity_reconcile_duration_seconds_count", kind="Agent") >= 2
    assert (
        value(op, "agent_identity_reconcile_duration_seconds_bucket", kind="Agent", le="+Inf") >= 2
    )
    for labels, _ in op["agent_identity_agents"]:
        assert set(labels) == {"namespace", "phase"}  # bounded: no agent names

    # --- the admission process (webhooks + decision API)
    # The approval's wait is observed by the decision API's approvals round (every 5 s),
    # once it sees the request decided: wait for that, not for the pending gauge, which
    # may read 0 before the round ever saw the request pending.
    wait = "agent_identity_approval_wait_seconds_count"
    adm = wait_for(
        lambda: (s := scrape(admission_url)) and value(s, wait) - value(before, wait) >= 1 and s,
        what="the approval's wait to be observed",
        timeout=30,
    )

    def grew(name: str, **labels: str) -> float:
        return value(adm, name, **labels) - value(before, name, **labels)

    requests_total = "agent_identity_admission_requests_total"
    assert grew(requests_total, outcome="allowed") >= 2  # validate + mutate of the worker
    assert grew(requests_total, outcome="denied") >= 1
    webhooks = {lbl["webhook"] for lbl, _ in adm[requests_total]}
    assert {"validate-pods", "mutate-pods", "validate-resources"} <= webhooks
    for labels, _ in adm[requests_total]:
        assert set(labels) == {"webhook", "outcome", "reason"}
        assert labels["outcome"] in ("allowed", "denied", "warned")
    assert grew(requests_total, webhook="validate-pods-audit", reason="UnregisteredPodAudited") >= 1
    assert grew("agent_identity_admission_duration_seconds_count", webhook="mutate-pods") >= 1
    assert grew("agent_identity_token_ttl_seconds_count") >= 1
    assert value(adm, "agent_identity_token_ttl_seconds_bucket", le="900.0") >= 1

    for outcome in ("allow", "deny", "escalate"):
        assert grew("agent_identity_decisions_total", outcome=outcome) >= 1, outcome
    assert grew("agent_identity_decision_duration_seconds_count") >= 3
    assert grew("agent_identity_approval_wait_seconds_count") >= 1
    assert grew("agent_identity_approval_decisions_total", verdict="Approve") >= 1
    kinds = {lbl["kind"] for lbl, _ in adm["agent_identity_watch_last_sync_timestamp_seconds"]}
    assert {"Agent", "AuthorityScope", "ApprovalPolicy", "ApprovalRequest"} <= kinds
