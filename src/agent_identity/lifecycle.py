"""The Agent lifecycle state machine, pure: (agent, what was observed, now) -> phase and status.

The shell (controller/) calls ``evaluate`` once to learn which children should
exist, applies them, and calls it again with what now exists to get the status
to write. Rules (DESIGN.md, Behaviour/Lifecycle):

- Retired is terminal: a status phase Retired never changes, whatever spec says.
- ``expiresAt`` passed, or Deprecated and ``sunsetAt`` passed -> Retired (actor: the operator).
- spec Retired -> Retired (actor: the last modifier).
- no valid owner -> Pending, never Active; a missing scope -> Pending.
- Suspended keeps the identity but removes the RoleBinding.
- Retired keeps only a deny-all NetworkPolicy: deleting the ServiceAccount revokes every token.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from agent_identity.api import (
    ADMITTING_PHASES,
    Agent,
    Condition,
    HistoryEntry,
    LifecycleState,
    Phase,
)
from agent_identity.api.agent import HISTORY_LIMIT, OWNER_HELP
from agent_identity.api.common import AGENT_LABEL, LAST_MODIFIED_BY_ANNOTATION, OPERATOR_ACTOR
from agent_identity.api.conditions import find, remove_condition, set_condition

UNKNOWN_ACTOR = "unknown"
OWNER_PLACEHOLDER = "unknown-owner"  # stands in for a missing owner so the rest still parses

# Condition types, in the order they appear in status.
READY = "Ready"
IDENTITY_PROVISIONED = "IdentityProvisioned"
AUTHORITY_BOUND = "AuthorityBound"
NETWORK_ISOLATED = "NetworkIsolated"
DEPRECATED = "Deprecated"
EXPIRED = "Expired"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_ORDER = (
    READY,
    IDENTITY_PROVISIONED,
    AUTHORITY_BOUND,
    NETWORK_ISOLATED,
    DEPRECATED,
    EXPIRED,
    RECONCILING,
    STALLED,
)

# Reasons.
OWNER_MISSING = "OwnerMissing"
SCOPE_NOT_FOUND = "ScopeNotFound"
INVALID_SPEC = "InvalidSpec"
PROVISIONING = "Provisioning"
REASON_EXPIRED = "Expired"
REASON_SUNSET = "Sunset"
REASON_RETIRED = "Retired"


class Child(enum.StrEnum):
    SERVICE_ACCOUNT = "ServiceAccount"
    ROLE = "Role"
    ROLE_BINDING = "RoleBinding"
    NETWORK_POLICY = "NetworkPolicy"


NetworkMode = Literal["restricted", "deny-all"]


@dataclass(frozen=True)
class Desired:
    """Which children should exist (the NetworkPolicy always does, restricted or deny-all)."""

    service_account: bool
    role: bool
    role_binding: bool
    network: NetworkMode

    def present(self) -> frozenset[Child]:
        out = {Child.NETWORK_POLICY}
        if self.service_account:
            out.add(Child.SERVICE_ACCOUNT)
        if self.role:
            out.add(Child.ROLE)
        if self.role_binding:
            out.add(Child.ROLE_BINDING)
        return frozenset(out)

    def absent(self) -> frozenset[Child]:
        return frozenset(Child) - self.present()


@dataclass(frozen=True)
class Observed:
    """What the shell found: children present (with the desired content), missing scopes, owner."""

    children: frozenset[Child] = frozenset()
    missing_scopes: tuple[str, ...] = ()
    owner_error: str | None = None


@dataclass(frozen=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class LifecycleResult:
    phase: Phase
    conditions: list[Condition]
    desired: Desired
    converged: bool
    history: list[HistoryEntry]
    entry: HistoryEntry | None  # the transition appended to history, if any
    event: EventSpec | None
    deadline: datetime | None  # the next expiresAt / sunsetAt still ahead
    requeue_after: timedelta | None


@dataclass(frozen=True)
class _Target:
    phase: Phase
    reason: str
    message: str
    by_operator: bool = False


@dataclass(frozen=True)
class ParsedAgent:
    """An Agent body parsed for reconciling: the model, or why it cannot be reconciled."""

    agent: Agent | None
    owner_error: str | None = None
    error: str | None = None


def _fmt(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return "; ".join(parts)


def parse_agent(body: dict[str, Any]) -> ParsedAgent:
    """Parse an Agent, tolerating a missing or invalid owner (reported, never Active)."""
    try:
        return ParsedAgent(Agent.parse(body))
    except ValidationError as exc:
        errors = exc.errors()
        if errors and all(tuple(e["loc"][:2]) == ("spec", "owner") for e in errors):
            spec = dict(body.get("spec") or {})
            missing = "owner" not in spec or spec.get("owner") in (None, "")
            spec["owner"] = OWNER_PLACEHOLDER
            try:
                agent = Agent.parse({**body, "spec": spec})
            except ValidationError as again:
                return ParsedAgent(None, error=_error_text(again))
            why = (
                "spec.owner is missing: every agent needs an accountable person or team; "
                "set spec.owner (e.g. team-payments or alice@example.com)"
                if missing
                else f"spec.owner {body['spec'].get('owner')!r} is not valid: {OWNER_HELP}"
            )
            return ParsedAgent(agent, owner_error=why)
        return ParsedAgent(None, error=_error_text(exc))


def actor_of(agent: Agent) -> str:
    return agent.metadata.annotations.get(LAST_MODIFIED_BY_ANNOTATION) or UNKNOWN_ACTOR


def deadline_of(agent: Agent, now: datetime) -> datetime | None:
    """The earliest of expiresAt and (when Deprecated) sunsetAt that is still ahead."""
    if agent.status.phase == Phase.RETIRED:
        return None
    lc = agent.spec.lifecycle
    times = [t for t in (lc.expires_at,) if t is not None]
    if lc.state == LifecycleState.DEPRECATED and lc.sunset_at is not None:
        times.append(lc.sunset_at)
    ahead = [t for t in times if t > now]
    return min(ahead) if ahead else None


def _target(agent: Agent, observed: Observed, now: datetime) -> _Target:
    lc = agent.spec.lifecycle
    if agent.status.phase == Phase.RETIRED:
        # Terminal: keep saying why it retired (Expired, Sunset or Retired).
        ready = find(agent.status.conditions, READY)
        if ready is not None and ready.status == "False":
            return _Target(Phase.RETIRED, ready.reason, ready.message)
        return _Target(Phase.RETIRED, REASON_RETIRED, "Retired is terminal")
    if lc.expires_at is not None and now >= lc.expires_at:
        return _Target(
            Phase.RETIRED,
            REASON_EXPIRED,
            f"spec.lifecycle.expiresAt {_fmt(lc.expires_at)} has passed",
            by_operator=True,
        )
    if lc.state == LifecycleState.DEPRECATED and lc.sunset_at is not None and now >= lc.sunset_at:
        return _Target(
            Phase.RETIRED,
            REASON_SUNSET,
            f"deprecated agent reached spec.lifecycle.sunsetAt {_fmt(lc.sunset_at)}",
            by_operator=True,
        )
    if lc.state == LifecycleState.RETIRED:
        return _Target(Phase.RETIRED, REASON_RETIRED, "spec.lifecycle.state is Retired")
    if observed.owner_error is not None:
        return _Target(Phase.PENDING, OWNER_MISSING, observed.owner_error)
    if observed.missing_scopes:
        names = ", ".join(sorted(set(observed.missing_scopes)))
        noun = "AuthorityScope" if len(set(observed.missing_scopes)) == 1 else "AuthorityScopes"
        return _Target(
            Phase.PENDING,
            SCOPE_NOT_FOUND,
            f"{noun} {names} not found in namespace {agent.metadata.namespace}; create "
            "it or remove it from spec.scopeRefs (the agent becomes Ready once it exists)",
        )
    if lc.state == LifecycleState.SUSPENDED:
        return _Target(
            Phase.SUSPENDED,
            "Suspended",
            "spec.lifecycle.state is Suspended: the RoleBinding is removed and new pods are "
            "refused; set state: Active to resume",
        )
    if lc.state == LifecycleState.DEPRECATED:
        sunset = _fmt(lc.sunset_at) if lc.sunset_at else "?"
        return _Target(
            Phase.DEPRECATED,
            "Deprecated",
            f"deprecated: shortest token TTL, retires at {sunset}",
        )
    return _Target(Phase.ACTIVE, "Active", "spec.lifecycle.state is Active")


def _desired(target: _Target) -> Desired:
    if target.phase == Phase.RETIRED:
        return Desired(False, False, False, "deny-all")
    if target.phase == Phase.PENDING:
        # No owner: no identity at all. A missing scope: the identity, but no authority
        # until every scope exists (never a partial grant).
        return Desired(target.reason == SCOPE_NOT_FOUND, False, False, "deny-all")
    if target.phase == Phase.SUSPENDED:
        return Desired(True, True, False, "restricted")
    return Desired(True, True, True, "restricted")


def desired_children(agent: Agent, observed: Observed, now: datetime) -> Desired:
    return _desired(_target(agent, observed, _second(now)))


def _second(now: datetime) -> datetime:
    # Kubernetes times have second precision; so do ours, so status compares stably.
    return now.replace(microsecond=0)


def _transition_reason(prev: Phase | None, target: _Target, phase: Phase) -> str:
    if phase != target.phase:
        return PROVISIONING
    if phase == Phase.ACTIVE:
        return {Phase.SUSPENDED: "Resumed", Phase.DEPRECATED: "Reactivated"}.get(
            prev or Phase.PENDING, "Provisioned"
        )
    return target.reason


def evaluate(agent: Agent, observed: Observed, now: datetime) -> LifecycleResult:
    """The phase, conditions, desired children, history entry, event and requeue of one agent."""
    now = _second(now)
    gen = agent.metadata.generation
    prev = agent.status.phase
    target = _target(agent, observed, now)
    desired = _desired(target)
    missing = desired.present() - observed.children
    extra = observed.children - desired.present()
    converged = not missing and not extra

    phase = target.phase
    if (
        not converged
        and phase in (Phase.ACTIVE, Phase.SUSPENDED, Phase.DEPRECATED)
        and prev in (None, Phase.PENDING)
    ):
        phase = Phase.PENDING  # never provisioned yet
    refused = target.phase == Phase.PENDING

    conds = list(agent.status.conditions)

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, "True" if ok else "False", reason, message, gen, now)

    # Ready: the summary.
    if not converged and not refused:
        waiting = ", ".join(sorted(missing | extra))
        put(READY, False, PROVISIONING, f"reconciling children: {waiting}")
    elif phase in (Phase.ACTIVE, Phase.DEPRECATED):
        put(
            READY,
            True,
            "Ready",
            f"identity, authority and network policy in place; {target.message}",
        )
    else:
        put(READY, False, target.reason, target.message)

    sa_here = Child.SERVICE_ACCOUNT in observed.children
    if desired.service_account:
        put(
            IDENTITY_PROVISIONED,
            sa_here,
            "ServiceAccountReady" if sa_here else "ServiceAccountMissing",
            f"ServiceAccount {'exists' if sa_here else 'is being created'}",
        )
    else:
        msg = (
            "ServiceAccount deleted: every token of the agent is revoked"
            if target.phase == Phase.RETIRED
            else f"no ServiceAccount: {target.message}"
        )
        put(IDENTITY_PROVISIONED, False, target.reason, msg)

    bound = {Child.ROLE, Child.ROLE_BINDING} <= observed.children
    if desired.role_binding:
        put(
            AUTHORITY_BOUND,
            bound,
            "RoleBound" if bound else "RoleBindingMissing",
            "Role bound to the agent's ServiceAccount" if bound else "binding the Role",
        )
    else:
        put(AUTHORITY_BOUND, False, target.reason, f"no RoleBinding: {target.message}")

    np_here = Child.NETWORK_POLICY in observed.children
    if np_here:
        deny = desired.network == "deny-all"
        put(
            NETWORK_ISOLATED,
            True,
            "DenyAll" if deny else "EgressRestricted",
            "all egress denied"
            if deny
            else "egress limited to DNS, the decision API and the scopes' egress",
        )
    else:
        put(NETWORK_ISOLATED, False, "NetworkPolicyMissing", "creating the NetworkPolicy")

    if phase == Phase.DEPRECATED:
        put(DEPRECATED, True, "Deprecated", target.message)
    else:
        conds = remove_condition(conds, DEPRECATED)

    if target.reason in (REASON_EXPIRED, REASON_SUNSET) and prev != Phase.RETIRED:
        put(EXPIRED, True, target.reason, target.message)
    elif target.phase != Phase.RETIRED:
        conds = remove_condition(conds, EXPIRED)
    # (a terminal Retired keeps whatever Expired condition it had)

    # kstatus: a missing scope is waited for (Reconciling: it may arrive in the same sync);
    # a spec only a person can fix (no owner) is Stalled, which Flux reports as failed.
    waits_for_scope = refused and target.reason == SCOPE_NOT_FOUND
    if waits_for_scope:
        put(RECONCILING, True, target.reason, target.message)
    elif not converged:
        waiting = ", ".join(sorted(missing | extra))
        put(RECONCILING, True, PROVISIONING, f"reconciling children: {waiting}")
    else:
        conds = remove_condition(conds, RECONCILING)
    if refused and not waits_for_scope:
        put(STALLED, True, target.reason, target.message)
    else:
        conds = remove_condition(conds, STALLED)

    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    conds.sort(key=lambda c: (order.get(c.type, len(order)), c.type))

    entry: HistoryEntry | None = None
    event: EventSpec | None = None
    history = list(agent.status.history)
    if phase != prev:
        reason = _transition_reason(prev, target, phase)
        actor = OPERATOR_ACTOR if target.by_operator else actor_of(agent)
        message = target.message if phase == target.phase else "provisioning children"
        entry = HistoryEntry(
            from_=prev.value if prev else None,
            to=phase.value,
            actor=actor,
            at=now,
            reason=reason,
            message=message,
        )
        history = [*history, entry][-HISTORY_LIMIT:]
        warn = refused or target.by_operator
        event = EventSpec(
            "Warning" if warn else "Normal",
            reason,
            f"{prev.value if prev else 'new'} -> {phase.value} by {actor}: {message}",
        )

    deadline = deadline_of(agent, now) if phase != Phase.RETIRED else None
    return LifecycleResult(
        phase=phase,
        conditions=conds,
        desired=desired,
        converged=converged,
        history=history,
        entry=entry,
        event=event,
        deadline=deadline,
        requeue_after=(deadline - now) if deadline is not None else None,
    )


def invalid_conditions(
    conditions: Sequence[Condition], generation: int | None, error: str, now: datetime
) -> list[Condition]:
    """Conditions of an Agent whose spec does not parse: not Ready, stalled, with the reason."""
    now = _second(now)
    message = f"the Agent cannot be reconciled: {error}"
    conds = set_condition(list(conditions), READY, "False", INVALID_SPEC, message, generation, now)
    conds = set_condition(conds, STALLED, "True", INVALID_SPEC, message, generation, now)
    return remove_condition(conds, RECONCILING)


# --- overdue: an agent past its deadline that still admits ------------------------------

# How long past expiresAt / sunsetAt an agent may still admit before it counts as overdue
# (the operator retires it within about a second; this leaves room for retries).
OVERDUE_GRACE = timedelta(seconds=60)


def is_overdue(
    phase: Phase | None, deadline: datetime | None, now: datetime, grace: timedelta = OVERDUE_GRACE
) -> bool:
    """True when an agent still admits (Active, Deprecated) ``grace`` after its deadline:
    the operator failed to retire it (the decision API refuses it anyway)."""
    return phase in ADMITTING_PHASES and deadline is not None and now >= deadline + grace


# --- the kill switch: pods of an agent that no longer admits ------------------------------

# Phases whose running pods the operator deletes (the webhook already refuses new ones).
KILL_PHASES = frozenset({Phase.SUSPENDED, Phase.RETIRED})
# Seconds a deleted agent pod gets to stop: a kill switch, not a drain. The API server
# removes a pod that no node runs at once, whatever the grace period.
KILL_GRACE_SECONDS = 1
_FINISHED_POD_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PodDeletion:
    """One pod the operator deletes, and why (for the Event and the audit record)."""

    name: str
    uid: str
    message: str


def pods_to_delete(
    agent_name: str,
    phase: Phase | None,
    pods: Sequence[Any],
    already_deleted: frozenset[str] = frozenset(),
) -> list[PodDeletion]:
    """The pods (wire dicts) of ``agent_name`` to delete now that its phase is ``phase``.

    Only Suspended and Retired agents lose their pods; pods labelled for another agent,
    finished pods (Succeeded/Failed: nothing runs), pods already terminating within
    ``KILL_GRACE_SECONDS`` and pods whose uid is in ``already_deleted`` are left alone.
    Sorted by name, so the Events read in a stable order.
    """
    if phase not in KILL_PHASES:
        return []
    why = (
        "it is Retired: its identity is revoked for good"
        if phase == Phase.RETIRED
        else "it is Suspended: new pods are refused until it is resumed"
    )
    out: list[PodDeletion] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = str(meta.get("name") or "")
        uid = str(meta.get("uid") or "")
        if not name or labels.get(AGENT_LABEL) != agent_name or uid in already_deleted:
            continue
        if (pod.get("status") or {}).get("phase") in _FINISHED_POD_PHASES:
            continue
        if meta.get("deletionTimestamp") is not None:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None or int(grace) <= KILL_GRACE_SECONDS:
                continue
        out.append(PodDeletion(name, uid, f"deleted pod {name} of agent {agent_name}: {why}"))
    return sorted(out, key=lambda d: d.name)


# --- resume: workloads whose pod creation was refused while the agent was suspended --------

# Controllers that recreate pods. Their create failures while the agent was Suspended
# put them on an exponential backoff (up to minutes); one touch re-queues them at once.
WORKLOAD_KINDS = ("ReplicaSet", "StatefulSet", "DaemonSet")
RESUMED_ANNOTATION = "agentidentity.io/resumed-at"


def resumed(entry: HistoryEntry | None) -> bool:
    """The transition ``entry`` lets pods in again after the agent had lost them."""
    return (
        entry is not None
        and entry.from_ in {p.value for p in KILL_PHASES}
        and entry.to in {p.value for p in ADMITTING_PHASES}
    )


def workloads_to_nudge(agent_name: str, workloads: Sequence[Any]) -> list[str]:
    """Names of the workloads (wire dicts of one kind) whose pods are ``agent_name``'s.

    A workload belongs to the agent when its pod template carries the agent label; a
    ReplicaSet scaled to zero (an old revision of a Deployment) has nothing to bring back.
    """
    out = []
    for workload in workloads:
        spec = workload.get("spec") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(AGENT_LABEL) != agent_name or spec.get("replicas") == 0:
            continue
        name = (workload.get("metadata") or {}).get("name")
        if name:
            out.append(str(name))
    return sorted(out)
