"""Approval decisions on ``approvalrequests/status``: who decided comes from the request.

The rules (approvers, quorum, no self-approval, no agents, expiry) are the
decision engine's, in ``agent_identity.authz.approvals.review_status_update``;
this module turns its verdict into an admission answer: a denial, or a
JSONPatch that replaces ``/status`` with the status to store (approver and
time filled from userInfo and the clock, state and grant recomputed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from agent_identity import audit
from agent_identity.admission.review import Decision, allow, deny, user_of
from agent_identity.registry import Registry


def _reviewer() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("agent_identity.authz.approvals")
    except ModuleNotFoundError as exc:
        if exc.name == "agent_identity.authz.approvals":
            return None
        raise
    fn: Callable[..., Any] | None = getattr(module, "review_status_update", None)
    return fn


def review_status(
    request: dict[str, Any],
    registry: Registry,
    now: datetime,
    reviewer: Callable[..., Any] | None = None,
    system_users: Collection[str] = (),
) -> Decision:
    """Check a status UPDATE; ``system_users``: the process's own identity (it expires requests)."""
    if request.get("operation") != "UPDATE":
        return allow()
    reviewer = reviewer or _reviewer()
    if reviewer is None:
        # Fail closed: without the rules nobody may record a decision.
        return deny(
            "approval decisions cannot be recorded: this admission process was built without "
            "agent_identity.authz.approvals; upgrade the agent-identity admission deployment",
            "ApprovalsUnavailable",
        )
    old: dict[str, Any] = request.get("oldObject") or {}
    new: dict[str, Any] = request.get("object") or {}
    namespace = str(request.get("namespace") or "")
    username, groups = user_of(request)
    review = reviewer(
        old, new, username, groups, registry.policies_in(namespace), now, system_users=system_users
    )
    if not review.allowed:
        return deny(review.message, "ApprovalRefused")
    if review.status is None or review.status == new.get("status"):
        return allow("ApprovalRecorded")
    op = "replace" if "status" in new else "add"
    audit = [] if request.get("dryRun") else _decision_records(old, review.status, username)
    return allow(
        "ApprovalRecorded",
        patch=[{"op": op, "path": "/status", "value": review.status}],
        audit=audit,
    )


def _decision_records(
    old: dict[str, Any], status: dict[str, Any], username: str
) -> list[dict[str, Any]]:
    """The audit record of the one decision a person appended (none for a recomputation)."""
    before = len((old.get("status") or {}).get("decisions") or [])
    decisions = status.get("decisions") or []
    if len(decisions) <= before:
        return []
    decided = decisions[-1]
    meta = old.get("metadata") or {}
    spec = old.get("spec") or {}
    namespace = str(meta.get("namespace") or "")
    return [
        audit.record(
            "approval",
            agent_uid=spec.get("agentUid") or None,
            agent_name=(spec.get("agent") or {}).get("name"),
            namespace=namespace,
            actor=username,
            outcome=str(decided.get("verdict", "")).lower() or None,
            reason=decided.get("reason") or None,
            at=decided.get("at"),
            approvalRequest=f"{namespace}/{meta.get('name')}",
            action=spec.get("action"),
            verdict=decided.get("verdict"),
            state=status.get("state"),
        )
    ]


def review_creation(request: dict[str, Any], system_users: Collection[str]) -> Decision:
    """Only the decision API opens ApprovalRequests: it fills in who may approve (from the
    matching ApprovalPolicy) and who asked; a request anyone else wrote could name its own
    author as the approver. RBAC gives create to the decision API alone; this holds even
    where a broader role grants it too."""
    if request.get("operation") != "CREATE":
        return allow()
    username, _groups = user_of(request)
    if not system_users:
        # The process could not learn its own identity (SelfSubjectReview failed): it cannot
        # tell its own requests from others', and refusing would stop every escalation.
        return allow(
            "IdentityUnknown",
            warnings=[
                "agent-identity admission does not know its own identity, so it cannot check "
                "who opens ApprovalRequests; see its log"
            ],
        )
    if username in system_users:
        return allow("OpenedByDecisionAPI")
    return deny(
        f"ApprovalRequests are opened by the decision API when an agent asks for an action "
        f"that needs a person (POST /access/v1/evaluation); {username!r} may not create one "
        "directly: have the agent ask, then approve it with `kubectl agent approve`",
        "NotTheDecisionAPI",
    )
