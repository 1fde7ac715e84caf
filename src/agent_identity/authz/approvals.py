"""Approval decisions: the rules a write to ``approvalrequests/status`` must follow.

Pure. The admission process's mutating webhook on ``approvalrequests/status`` UPDATE calls
``review_status_update`` with the old and new objects and the authenticated user; a person
decides by appending ``{verdict, reason}`` to ``status.decisions`` (GET, append, PUT; what
``kubectl agent approve|deny`` does). The webhook then writes back the returned ``status``
(the whole status, computed here), so:

- who decided and when come from the authenticated request and the server clock
  (``approver``/``at`` written by the client are overwritten);
- only users or groups named in ``spec.approvers`` (the snapshot of the matching policies
  taken when the request was opened) may decide; nobody decides a request they opened
  (``spec.requestedBy``); no ServiceAccount decides; one decision per person;
- expired or already final requests cannot be decided; decisions are append-only;
- ``state`` and ``grant`` are recomputed: Denied on any Deny, Approved when distinct
  approvers reach ``spec.minApprovals`` (the grant lasts ``spec.grantSeconds`` from the
  approval), Expired once ``spec.expiresAt`` has passed while Pending.

Writes that are not decisions (no decision appended) are only allowed from the system
identities passed as ``system_users`` (the decision API's own identity, which marks
expired requests Expired); for those, the status is recomputed from the existing decisions
and the clock, so even the system cannot invent an approval.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agent_identity.api import (
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalRequestStatus,
    ApprovalState,
    Grant,
    Verdict,
)
from agent_identity.api.conditions import set_condition
from agent_identity.authz.engine import _aware, _ts, effective_state

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
FINAL_STATES = frozenset({ApprovalState.APPROVED, ApprovalState.DENIED, ApprovalState.EXPIRED})

# The process's own identities whose non-decision status writes are allowed (recomputed),
# used when the caller passes no ``system_users``. The decision API registers its identity
# (SelfSubjectReview) at start-up; the webhook runs in the same process.
_SYSTEM_USERS: set[str] = set()


def register_system_user(username: str) -> None:
    """Allow ``username`` (this process's identity) to write recomputed statuses."""
    if username:
        _SYSTEM_USERS.add(username)


__all__ = [
    "FINAL_STATES",
    "ApprovalReview",
    "compute_status",
    "effective_state",
    "register_system_user",
    "review_status_update",
]


@dataclass(frozen=True)
class ApprovalReview:
    allowed: bool
    message: str
    status: dict[str, Any] | None = None  # the status to store (wire form) when allowed


def _deny(message: str) -> ApprovalReview:
    return ApprovalReview(False, message, None)


def compute_status(
    req: ApprovalRequest, decisions: Sequence[ApprovalDecision], now: datetime
) -> ApprovalRequestStatus:
    """State, grant and the Approved condition from ``decisions`` and the clock."""
    old = req.status
    spec = req.spec
    state = ApprovalState.PENDING
    grant: Grant | None = None
    approvers: set[str] = set()
    reason, message, cond = "Pending", "waiting for approvals", "False"
    for decision in decisions:
        if decision.verdict == Verdict.DENY:
            state = ApprovalState.DENIED
            grant = None
            reason = "Denied"
            message = f"denied by {decision.approver}: {decision.reason or 'no reason given'}"
            break
        approvers.add(decision.approver)
        if len(approvers) >= spec.min_approvals and state == ApprovalState.PENDING:
            state = ApprovalState.APPROVED
            # A grant already issued keeps its end; a new one starts at this approval.
            if old.grant is not None and old.state == ApprovalState.APPROVED:
                grant = old.grant
            else:
                grant = Grant(expires_at=_aware(now) + timedelta(seconds=spec.grant_seconds))
            reason, cond = "Approved", "True"
            message = f"approved by {', '.join(sorted(approvers))}; grant until " + _ts(
                grant.expires_at
            )
    if state == ApprovalState.PENDING:
        if _aware(now) > _aware(spec.expires_at):
            state = ApprovalState.EXPIRED
            reason = "Expired"
            message = f"no decision before {_ts(spec.expires_at)}"
        else:
            message = f"{len(approvers)} of {spec.min_approvals} approval(s)"
    conditions = set_condition(
        old.conditions,
        "Approved",
        cond,  # type: ignore[arg-type]
        reason,
        message,
        req.metadata.generation,
        _aware(now),
    )
    return ApprovalRequestStatus(
        state=state, decisions=list(decisions), grant=grant, conditions=conditions
    )


def _who(username: str, groups: Sequence[str]) -> str:
    return f"{username} (groups: {', '.join(groups) or 'none'})"


def review_status_update(
    old: dict[str, Any],
    new: dict[str, Any],
    username: str,
    groups: list[str],
    policies: list[ApprovalPolicy],
    now: datetime,
    *,
    system_users: Collection[str] | None = None,
) -> ApprovalReview:
    """Check one UPDATE of ``approvalrequests/status`` and compute the status to store.

    ``policies`` are the namespace's ApprovalPolicies; the approvers are taken from the
    request's own ``spec.approvers`` (its snapshot), so editing a policy later does not
    change who may decide a request already open; ``policies`` is accepted so the caller
    need not know that.
    """
    del policies  # see the docstring: spec.approvers is authoritative
    if system_users is None:
        system_users = _SYSTEM_USERS
    now = _aware(now)
    try:
        req = ApprovalRequest.parse(old)
    except ValidationError as exc:
        return _deny(f"the stored ApprovalRequest does not parse ({exc.errors()[0]['msg']})")
    name = f"{req.metadata.namespace}/{req.metadata.name}"

    raw_status = new.get("status") or {}
    raw_new = raw_status.get("decisions") if isinstance(raw_status, dict) else None
    if raw_new is None:
        raw_new = []
    if not isinstance(raw_new, list):
        return _deny("status.decisions must be a list; append {verdict, reason} to it")
    old_decisions = req.status.decisions
    if len(raw_new) < len(old_decisions):
        return _deny(
            f"status.decisions of ApprovalRequest {name} are append-only: "
            f"{len(old_decisions) - len(raw_new)} existing decision(s) were removed; "
            "re-read the request and append your decision"
        )
    for i, (old_d, raw) in enumerate(zip(old_decisions, raw_new, strict=False)):
        try:
            same = ApprovalDecision.model_validate(raw) == old_d
        except ValidationError:
            same = False
        if not same:
            return _deny(
                f"status.decisions[{i}] of ApprovalRequest {name} was changed; decisions are "
                "never rewritten: re-read the request and only append your decision"
            )
    appended = raw_new[len(old_decisions) :]

    if not appended:
        if username in system_users:
            status = compute_status(req, old_decisions, now)
            return ApprovalReview(True, "status recomputed", status.to_wire())
        current = req.status.to_wire()
        try:
            proposed = ApprovalRequestStatus.model_validate(raw_status).to_wire()
        except ValidationError:
            proposed = None
        if proposed == current:
            return ApprovalReview(True, "no change", None)
        return _deny(
            f"only decisions can be written to the status of ApprovalRequest {name}: append "
            "{verdict: Approve|Deny, reason} to status.decisions (kubectl agent approve|deny); "
            "state and grant are computed"
        )
    if len(appended) > 1:
        return _deny(
            f"append one decision at a time to ApprovalRequest {name} "
            f"({len(appended)} were appended); each person decides once"
        )
    raw = appended[0]
    if not isinstance(raw, dict):
        return _deny("status.decisions[] entries are objects {verdict: Approve|Deny, reason}")
    verdict_raw = raw.get("verdict")
    try:
        verdict = Verdict(str(verdict_raw))
    except ValueError:
        return _deny(
            f"status.decisions[{len(old_decisions)}].verdict is {verdict_raw!r}; "
            "use Approve or Deny"
        )
    reason = raw.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 1024:
        return _deny(
            f"status.decisions[{len(old_decisions)}].reason must be a string of at most 1024 "
            "characters"
        )

    spec = req.spec
    if username.startswith(SERVICE_ACCOUNT_PREFIX):
        return _deny(
            f"{username} is a ServiceAccount; ServiceAccounts (agents included) never decide "
            f"approval requests: a person named in spec.approvers of {name} must decide"
        )
    if username == spec.requested_by:
        return _deny(
            f"{username} opened ApprovalRequest {name} and cannot decide it; another approver must"
        )
    state = effective_state(req, now)
    if state == ApprovalState.EXPIRED:
        return _deny(
            f"ApprovalRequest {name} expired at {_ts(spec.expires_at)} and can no longer be "
            "decided; the agent must ask again, which opens a new request"
        )
    if state in FINAL_STATES:
        return _deny(
            f"ApprovalRequest {name} is already {state.value}; decisions on a final request "
            "are not recorded"
        )
    allowed_users = set(spec.approvers.users)
    allowed_groups = set(spec.approvers.groups)
    if username not in allowed_users and not allowed_groups & set(groups):
        named = ", ".join(
            [*(f"user {u}" for u in sorted(allowed_users))]
            + [f"group {g}" for g in sorted(allowed_groups)]
        )
        return _deny(
            f"{_who(username, groups)} is not an approver of ApprovalRequest {name}; "
            f"only {named} may decide it"
        )
    if any(d.approver == username for d in old_decisions):
        return _deny(
            f"{username} has already decided ApprovalRequest {name}; each person decides once "
            f"({spec.min_approvals} distinct approval(s) are needed)"
        )

    decision = ApprovalDecision(approver=username, verdict=verdict, reason=reason, at=now)
    status = compute_status(req, [*old_decisions, decision], now)
    return ApprovalReview(
        True,
        f"{verdict.value} by {username} recorded; ApprovalRequest {name} is {status.state.value}",
        status.to_wire(),
    )
