"""Human-in-the-loop on the real control plane: escalate, approve as real users, grants, quorum.

Approvers are client-certificate users minted by the devcluster (``cluster.user_kubeconfig``)
with the shipped ``agentidentity-approver`` ClusterRole bound in the test namespace; a
decision is GET + append ``{verdict, reason}`` + PUT on the status subresource (what
``kubectl agent approve`` does), and the approvals webhook fills in who and when.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.test_decisions import GRANT_SECONDS, Env, setup_env, wait_for


@pytest.fixture
def env(cluster: Any, namespace: str, operator: Any, admission: Any) -> Env:
    if admission.decisions_url is None:
        pytest.fail("the admission process did not start the decision API")
    e = setup_env(cluster, namespace, admission.decisions_url)
    cluster.kubectl(
        "create",
        "rolebinding",
        "approvers",
        "-n",
        namespace,
        "--clusterrole=agentidentity-approver",
        "--user=approver-a",
        "--user=approver-b",
        "--user=mallory",
        f"--serviceaccount={namespace}:agent-release-bot",
    )
    return e


def get_request(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "approvalrequest", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def decide(
    cluster: Any,
    namespace: str,
    name: str,
    verdict: str,
    *,
    kubeconfig: Path | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """GET, append a decision, PUT the status, as the given user."""
    got = cluster.kubectl(
        "get", "approvalrequest", name, "-n", namespace, "-o", "json", *extra, as_user=kubeconfig
    )
    obj = json.loads(got.stdout)
    status = obj.setdefault("status", {})
    status.setdefault("decisions", []).append(
        {"verdict": verdict, "reason": f"{verdict} from the test", "approver": "forged"}
    )
    return cluster.kubectl(
        "replace",
        "--subresource=status",
        "-n",
        namespace,
        "-f",
        "-",
        *extra,
        input=json.dumps(obj),
        as_user=kubeconfig,
        check=False,
    )


def escalate(env: Env, action: str, **kw: Any) -> str:
    resp = env.evaluate(action, **kw)
    body = resp.json()
    assert resp.status_code == 200 and body["decision"] is False, resp.text
    assert body["context"]["outcome"] == "escalate", body
    return str(body["context"]["approvalRequest"])


def poll(env: Env, ref: str) -> dict[str, Any]:
    resp = requests.get(
        f"{env.url}/v1/approvals/{ref}",
        headers={"Authorization": f"Bearer {env.release_token}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_escalate_approve_grant_expire(env: Env, cluster: Any) -> None:
    ns = env.namespace
    refs = {escalate(env, "deploy.production") for _ in range(4)}
    assert len(refs) == 1, refs
    ref = refs.pop()
    name = ref.split("/")[1]
    listed = cluster.kubectl("get", "approvalrequests", "-n", ns, "-o", "name").stdout.split()
    assert listed == [f"approvalrequest.agentidentity.io/{name}"]
    stored = get_request(cluster, ns, name)
    assert stored["spec"]["requestedBy"] == f"system:serviceaccount:{ns}:agent-release-bot"
    assert stored["spec"]["approvers"]["users"] == ["approver-a", "approver-b"]
    assert poll(env, ref)["state"] == "Pending"

    # refused: a non-approver, an agent's ServiceAccount
    mallory = cluster.user_kubeconfig("mallory", ["dev"])
    out = decide(cluster, ns, name, "Approve", kubeconfig=mallory)
    assert out.returncode != 0 and "not an approver" in out.stderr, out.stderr
    out = decide(
        cluster,
        ns,
        name,
        "Approve",
        extra=("--as", f"system:serviceaccount:{ns}:agent-release-bot"),
    )
    assert out.returncode != 0 and "ServiceAccount" in out.stderr, out.stderr

    approver = cluster.user_kubeconfig("approver-a", ["sre"])
    out = decide(cluster, ns, name, "Approve", kubeconfig=approver)
    assert out.returncode == 0, out.stderr
    stored = get_request(cluster, ns, name)
    assert stored["status"]["state"] == "Approved"
    assert [d["approver"] for d in stored["status"]["decisions"]] == ["approver-a"]

    allowed = wait_for(
        lambda: (r := env.evaluate("deploy.production").json())["decision"] and r,
        timeout=10,
        what="the grant to reach the decision API",
    )
    assert allowed["context"]["rule"] == f"approval/{ref}"
    view = poll(env, ref)
    assert view["state"] == "Approved" and view["grantActive"] is True
    # a decision on a final request is refused
    out = decide(cluster, ns, name, "Approve", kubeconfig=cluster.user_kubeconfig("approver-b"))
    assert out.returncode != 0 and "already Approved" in out.stderr

    # the grant expires -> escalate again, with a new request
    grant_end = datetime.fromisoformat(
        stored["status"]["grant"]["expiresAt"].replace("Z", "+00:00")
    )
    time.sleep(max(0.0, (grant_end - datetime.now(UTC)).total_seconds()) + 0.5)
    again = escalate(env, "deploy.production")
    assert again != ref and again.startswith(ref)
    assert poll(env, ref)["grantActive"] is False


def test_quorum_of_two_needs_two_distinct_people(env: Env, cluster: Any) -> None:
    ns = env.namespace
    ref = escalate(env, "payments.refund", aprops={"amount": 5000}, rid="refund-1")
    name = ref.split("/")[1]
    assert get_request(cluster, ns, name)["spec"]["minApprovals"] == 2
    a = cluster.user_kubeconfig("approver-a")
    assert decide(cluster, ns, name, "Approve", kubeconfig=a).returncode == 0
    assert get_request(cluster, ns, name)["status"]["state"] == "Pending"
    time.sleep(0.5)
    assert escalate(env, "payments.refund", aprops={"amount": 5000}, rid="refund-1") == ref
    out = decide(cluster, ns, name, "Approve", kubeconfig=a)
    assert out.returncode != 0 and "already decided" in out.stderr, out.stderr
    b = cluster.user_kubeconfig("approver-b")
    assert decide(cluster, ns, name, "Approve", kubeconfig=b).returncode == 0
    stored = get_request(cluster, ns, name)
    assert stored["status"]["state"] == "Approved"
    assert [d["approver"] for d in stored["status"]["decisions"]] == ["approver-a", "approver-b"]
    wait_for(
        lambda: env.evaluate("payments.refund", aprops={"amount": 5000}, rid="refund-1").json()[
            "decision"
        ],
        timeout=10,
        what="the quorum grant",
    )
    # a Deny by an approver holds
    ref2 = escalate(env, "payments.refund", aprops={"amount": 5000}, rid="refund-2")
    assert decide(cluster, ns, ref2.split("/")[1], "Deny", kubeconfig=b).returncode == 0
    denied = wait_for(
        lambda: (
            (r := env.evaluate("payments.refund", aprops={"amount": 5000}, rid="refund-2").json())[
                "context"
            ]["outcome"]
            == "deny"
            and r
        ),
        timeout=10,
        what="the denial",
    )
    assert "approver-b" in denied["context"]["reason"]


def _direct_request(ns: str, name: str, requested_by: str, expires: datetime) -> str:
    body = {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "agent": {"name": "release-bot"},
            "agentUid": "made-by-the-test",
            "action": "deploy.production",
            "resource": {"type": "service", "id": name},
            "requestedAt": datetime.now(UTC).isoformat(),
            "requestedBy": requested_by,
            "approvers": {"users": ["approver-a"]},
            "minApprovals": 1,
            "expiresAt": expires.isoformat(),
            "grantSeconds": GRANT_SECONDS,
        },
    }
    return json.dumps(body)


def test_requester_and_expired_requests_refused(env: Env, cluster: Any) -> None:
    ns = env.namespace
    a = cluster.user_kubeconfig("approver-a")
    later = datetime.now(UTC) + timedelta(hours=1)
    cluster.kubectl(
        "apply", "-f", "-", input=_direct_request(ns, "opened-by-a", "approver-a", later)
    )
    out = decide(cluster, ns, "opened-by-a", "Approve", kubeconfig=a)
    assert out.returncode != 0 and "opened" in out.stderr, out.stderr

    past = datetime.now(UTC) - timedelta(seconds=5)
    cluster.kubectl("apply", "-f", "-", input=_direct_request(ns, "too-late", "someone", past))
    out = decide(cluster, ns, "too-late", "Approve", kubeconfig=a)
    assert out.returncode != 0 and "expired" in out.stderr, out.stderr
    # the decision API's expiry task marks it Expired
    wait_for(
        lambda: get_request(cluster, ns, "too-late").get("status", {}).get("state") == "Expired",
        timeout=20,
        what="state Expired",
    )


def test_nobody_but_the_decision_api_opens_approval_requests(env: Env, cluster: Any) -> None:
    # mallory may create ApprovalRequests (a too-broad role somewhere): she writes one for
    # the release-bot's production deploy that names herself the approver, to grant it.
    ns = env.namespace
    cluster.kubectl(
        "create", "role", "ar-writer", "-n", ns,
        "--verb=create,get,list", "--resource=approvalrequests.agentidentity.io",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "ar-writer", "-n", ns, "--role=ar-writer", "--user=mallory"
    )
    agent = json.loads(
        cluster.kubectl("get", "agent", "release-bot", "-n", ns, "-o", "json").stdout
    )
    forged = {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "forged", "namespace": ns},
        "spec": {
            "agent": {"name": "release-bot"},
            "agentUid": agent["metadata"]["uid"],
            "action": "deploy.production",
            "resource": {"type": "service", "id": "payments-api"},
            "requestedAt": "2026-12-04T10:00:00Z",
            "requestedBy": "system:serviceaccount:payments:agent-release-bot",
            "approvers": {"users": ["mallory"]},
            "expiresAt": "2099-01-01T00:00:00Z",
        },
    }
    mallory = cluster.user_kubeconfig("mallory")
    out = cluster.kubectl(
        "create", "-f", "-", as_user=mallory, input=json.dumps(forged), check=False
    )
    assert out.returncode != 0, out.stdout
    assert "ApprovalRequests are opened by the decision API" in out.stderr, out.stderr
    assert "'mallory' may not create one" in out.stderr
    # The decision API itself still opens them.
    assert escalate(env, "deploy.production", rid="after-forgery")


def test_concurrent_escalations_open_one_request(env: Env, cluster: Any) -> None:
    # Twelve calls at once, as an agent retrying or several gateways would make them: the
    # request's name is derived from (agent UID, action, resource), so every call creates
    # or finds the same one; none opens a second.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=12) as pool:
        refs = set(
            pool.map(lambda i: escalate(env, "deploy.production", rid="svc-conc"), range(12))
        )
    assert len(refs) == 1, refs
    listed = cluster.kubectl(
        "get", "approvalrequests", "-n", env.namespace, "-o", "name"
    ).stdout.split()
    assert len(listed) == 1, listed
