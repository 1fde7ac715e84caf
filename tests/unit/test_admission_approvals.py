from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_identity.admission.approvals import review_status
from tests.unit.test_admission_helpers import NOW, registry


@dataclass
class Review:
    allowed: bool
    message: str
    status: dict[str, Any] | None = None


def _req(user: str = "sre-lead") -> dict[str, Any]:
    obj = {
        "metadata": {"name": "r", "namespace": "payments"},
        "status": {"decisions": [{"verdict": "Approve"}]},
    }
    return {
        "operation": "UPDATE",
        "namespace": "payments",
        "userInfo": {"username": user, "groups": ["sre-leads"]},
        "object": obj,
        "oldObject": {**obj, "status": {}},
    }


def test_refusal_is_a_denial_with_the_reviewers_message() -> None:
    calls: list[tuple[Any, ...]] = []

    def reviewer(*args: Any, **kw: Any) -> Review:
        calls.append((*args, kw))
        return Review(False, "you opened this request; someone else must decide")

    d = review_status(_req(), registry(), NOW, reviewer=reviewer, system_users=["system:svc"])
    assert not d.allowed and d.reason == "ApprovalRefused" and "someone else" in d.message
    _old, _new, user, groups, _policies, now, kw = calls[0]
    assert (user, groups, now, kw) == (
        "sre-lead",
        ["sre-leads"],
        NOW,
        {"system_users": ["system:svc"]},
    )


def test_accepted_decision_replaces_status() -> None:
    status = {"state": "Approved", "decisions": [{"approver": "sre-lead", "verdict": "Approve"}]}
    d = review_status(_req(), registry(), NOW, reviewer=lambda *a, **k: Review(True, "", status))
    assert d.allowed and d.patch == [{"op": "replace", "path": "/status", "value": status}]


def test_real_reviewer_is_wired() -> None:
    # the decision engine's module is part of the build: a malformed request is refused by it
    d = review_status(_req(), registry(), NOW)
    assert not d.allowed and d.reason == "ApprovalRefused"


def test_an_appended_decision_is_one_audit_record() -> None:
    status = {
        "state": "Approved",
        "decisions": [
            {
                "approver": "sre-lead",
                "verdict": "Approve",
                "reason": "ok",
                "at": "2026-12-03T12:00:00Z",
            }
        ],
    }
    req = _req()
    req["oldObject"]["spec"] = {"agent": {"name": "bot"}, "agentUid": "u-1", "action": "deploy.x"}
    d = review_status(req, registry(), NOW, reviewer=lambda *a, **k: Review(True, "", status))
    (rec,) = d.audit
    assert rec["kind"] == "approval" and rec["actor"] == "sre-lead"
    assert (rec["verdict"], rec["outcome"], rec["state"]) == ("Approve", "approve", "Approved")
    assert rec["approvalRequest"] == "payments/r" and rec["gen_ai.agent.name"] == "bot"
    assert rec["agentUid"] == "u-1" and rec["action"] == "deploy.x" and rec["reason"] == "ok"
    # A server-side dry run records nothing; a recomputation (no new decision) neither.
    dry = {**req, "dryRun": True}
    assert (
        review_status(dry, registry(), NOW, reviewer=lambda *a, **k: Review(True, "", status)).audit
        == []
    )
    req["oldObject"]["status"] = status
    same = {**status, "state": "Expired"}
    assert (
        review_status(req, registry(), NOW, reviewer=lambda *a, **k: Review(True, "", same)).audit
        == []
    )


def test_only_the_decision_api_opens_approval_requests() -> None:
    from agent_identity.admission.approvals import review_creation

    def create(user: str) -> dict[str, Any]:
        return {"operation": "CREATE", "userInfo": {"username": user, "groups": []}}

    me = "system:serviceaccount:agent-identity-system:agent-identity-admission"
    assert review_creation(create(me), [me]).allowed
    d = review_creation(create("mallory"), [me])
    assert not d.allowed and d.reason == "NotTheDecisionAPI"
    assert "'mallory' may not create one" in d.message and "kubectl agent approve" in d.message
    # Not knowing its own identity, the process lets creations through, with a warning.
    d = review_creation(create("mallory"), [])
    assert d.allowed and d.warnings and "own identity" in d.warnings[0]
