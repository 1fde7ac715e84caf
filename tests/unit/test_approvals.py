"""review_status_update: who may decide an ApprovalRequest, and what gets stored."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_identity.api import ApprovalRequest
from agent_identity.authz.approvals import review_status_update
from agent_identity.authz.engine import effective_state

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SYSTEM = "system:agent-identity-decisions"


def stored(
    min_approvals: int = 1,
    decisions: list[dict[str, Any]] | None = None,
    state: str | None = None,
    expires: datetime = NOW + timedelta(hours=1),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "ar-1", "namespace": "ns", "generation": 1},
        "spec": {
            "agent": {"name": "bot"},
            "agentUid": "u",
            "action": "deploy.production",
            "resource": {"type": "service", "id": "api"},
            "requestedAt": (NOW - timedelta(minutes=1)).isoformat(),
            "requestedBy": "gateway-user",
            "approvers": {"users": ["alice", "bob", "gateway-user"], "groups": ["sre"]},
            "minApprovals": min_approvals,
            "expiresAt": expires.isoformat(),
            "grantSeconds": 600,
        },
    }
    if decisions is not None or state is not None:
        body["status"] = {"state": state or "Pending", "decisions": decisions or []}
    return body


def append(old: dict[str, Any], verdict: str = "Approve", **extra: Any) -> dict[str, Any]:
    new = copy.deepcopy(old)
    status = new.setdefault("status", {})
    status.setdefault("decisions", []).append({"verdict": verdict, "reason": "ok", **extra})
    return new


def review(
    old: dict[str, Any],
    new: dict[str, Any],
    user: str = "alice",
    groups: list[str] | None = None,
    now: datetime = NOW,
) -> Any:
    return review_status_update(old, new, user, groups or [], [], now, system_users={SYSTEM})


def test_approve_sets_state_grant_and_overwrites_approver_and_time() -> None:
    old = stored()
    new = append(old, approver="mallory", at="2000-01-01T00:00:00Z")
    result = review(old, new)
    assert result.allowed, result.message
    assert result.status is not None
    assert result.status["state"] == "Approved"
    decision = result.status["decisions"][0]
    assert decision["approver"] == "alice"
    assert decision["at"].startswith("2026-03-02T10:00:00")
    assert result.status["grant"]["expiresAt"].startswith("2026-03-02T10:10:00")
    assert any(
        c["type"] == "Approved" and c["status"] == "True" for c in result.status["conditions"]
    )


def test_deny_verdict_makes_denied() -> None:
    old = stored()
    result = review(old, append(old, "Deny"))
    assert result.allowed and result.status is not None
    assert result.status["state"] == "Denied"
    assert "grant" not in result.status


def test_group_member_may_decide() -> None:
    old = stored()
    assert review(old, append(old), user="carol", groups=["sre"]).allowed


@pytest.mark.parametrize(
    ("user", "groups", "fragment"),
    [
        ("mallory", ["dev"], "is not an approver"),
        ("gateway-user", [], "opened ApprovalRequest"),
        ("system:serviceaccount:ns:agent-bot", ["sre"], "ServiceAccount"),
        ("system:serviceaccount:ns:other", [], "ServiceAccount"),
    ],
)
def test_refused_deciders(user: str, groups: list[str], fragment: str) -> None:
    old = stored()
    result = review(old, append(old), user=user, groups=groups)
    assert not result.allowed
    assert fragment in result.message


def test_expired_request_cannot_be_decided() -> None:
    old = stored(expires=NOW - timedelta(seconds=1))
    result = review(old, append(old))
    assert not result.allowed
    assert "expired" in result.message and "ask again" in result.message


def test_final_request_cannot_be_decided() -> None:
    old = stored(
        decisions=[{"approver": "bob", "verdict": "Deny", "at": NOW.isoformat()}], state="Denied"
    )
    result = review(old, append(old))
    assert not result.allowed and "already Denied" in result.message


def test_quorum_of_two_needs_two_distinct_people() -> None:
    old = stored(min_approvals=2)
    first = review(old, append(old))
    assert first.allowed and first.status is not None
    assert first.status["state"] == "Pending"
    after_first = {**old, "status": first.status}
    again = review(after_first, append(after_first), user="alice")
    assert not again.allowed and "already decided" in again.message
    second = review(after_first, append(after_first), user="bob")
    assert second.allowed and second.status is not None
    assert second.status["state"] == "Approved"
    assert [d["approver"] for d in second.status["decisions"]] == ["alice", "bob"]


def test_decisions_are_append_only() -> None:
    old = stored(
        decisions=[
            {"approver": "bob", "verdict": "Approve", "reason": "fine", "at": NOW.isoformat()}
        ],
        min_approvals=2,
    )
    rewritten = copy.deepcopy(old)
    rewritten["status"]["decisions"][0]["reason"] = "changed"
    rewritten["status"]["decisions"].append({"verdict": "Approve"})
    result = review(old, rewritten)
    assert not result.allowed and "never rewritten" in result.message
    removed = copy.deepcopy(old)
    removed["status"]["decisions"] = []
    result = review(old, removed)
    assert not result.allowed and "append-only" in result.message


def test_two_decisions_at_once_refused() -> None:
    old = stored(min_approvals=2)
    result = review(old, append(append(old)))
    assert not result.allowed and "one decision at a time" in result.message


def test_bad_verdict_named() -> None:
    old = stored()
    result = review(old, append(old, "Maybe"))
    assert not result.allowed
    assert "verdict" in result.message and "Approve or Deny" in result.message


def test_person_cannot_set_state_directly() -> None:
    old = stored()
    new = copy.deepcopy(old)
    new["status"] = {"state": "Approved", "decisions": []}
    result = review(old, new)
    assert not result.allowed and "only decisions" in result.message


def test_unchanged_status_write_is_a_no_op() -> None:
    old = stored(decisions=[], state="Pending")
    result = review(old, copy.deepcopy(old), user="mallory")
    assert result.allowed and result.status is None


def test_system_marks_expired_but_cannot_approve() -> None:
    old = stored(expires=NOW - timedelta(seconds=1))
    new = copy.deepcopy(old)
    new["status"] = {"state": "Expired", "decisions": []}
    result = review(old, new, user=SYSTEM)
    assert result.allowed and result.status is not None
    assert result.status["state"] == "Expired"
    live = stored()
    forged = copy.deepcopy(live)
    forged["status"] = {"state": "Approved", "decisions": []}
    result = review(live, forged, user=SYSTEM)
    assert result.allowed and result.status is not None
    assert result.status["state"] == "Pending"


def test_effective_state() -> None:
    assert effective_state(ApprovalRequest.parse(stored()), NOW) == "Pending"
    late = NOW + timedelta(hours=2)
    assert effective_state(ApprovalRequest.parse(stored()), late) == "Expired"
