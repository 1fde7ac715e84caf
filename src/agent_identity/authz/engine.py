"""The decision engine: one agent, one action on one resource, one context -> a Decision.

Pure: no I/O, no Kubernetes client. The decision order is the design's, and each step
names the rule that decided:

1. lifecycle: the agent's effective phase (the stricter of ``status.phase`` and a
   ``spec.lifecycle.state`` of Suspended/Retired not yet reconciled, then ``expiresAt`` and
   ``sunsetAt`` against ``now``). Pending, Suspended, Retired and expired agents are denied
   (rule ``lifecycle/<phase>``); Deprecated agents go on, and every reason says so.
2. a ``tools.deny`` pattern of any bound scope matches -> deny (``scope/<s>/tools.deny[i]``).
3. no bound scope has the action in ``tools.allow`` or ``sensitive`` -> deny
   (``default/unknown-action``): what is not granted is denied.
4. a constraint of any bound scope whose ``tools`` match the action evaluates false, or fails
   -> deny with the constraint's message (``scope/<s>/constraints[i]``). Constraints are
   global to the agent: a second scope that allows the same tool without a constraint does
   not lift it (so adding a constraint can only take authority away).
5. approval: needed when the action is ``sensitive`` in a bound scope or an ApprovalPolicy
   of the namespace matches (actions, agentSelector, scopes, ``when``). A person's Denied
   request for this agent, action and resource that has not expired -> deny; a live grant
   (an Approved request whose ``grant.expiresAt`` is after now) -> allow; a matching policy
   -> escalate (approvers: the union of the matching policies, quorum: the largest
   ``minApprovals``, timeout and grant: the shortest); sensitive with no policy -> deny
   ("no approver is configured").
6. allow (``scope/<s>/tools.allow[i]``).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_identity.api import (
    Agent,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalState,
    AuthorityScope,
    LifecycleState,
    Phase,
)
from agent_identity.api.patterns import is_valid_action, matches, matches_any
from agent_identity.authz.cel import DEFAULT_LIMIT, CelError, EvaluationLimit, compile_expression


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class Request:
    """What is asked: the action, the resource, and everything the caller sent with them."""

    action: str
    resource_type: str
    resource_id: str
    action_properties: Mapping[str, Any] = field(default_factory=dict)
    resource_properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    caller: str = ""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    rule: str
    phase: str = ""
    policies: tuple[str, ...] = ()
    approver_users: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    min_approvals: int = 1
    timeout_seconds: int = 0
    grant_seconds: int = 0
    approval_request: str | None = None  # the request whose grant or denial decided

    @property
    def allowed(self) -> bool:
        return self.outcome == Outcome.ALLOW


_RESTRICTIVENESS = {
    Phase.RETIRED: 5,
    Phase.SUSPENDED: 4,
    Phase.PENDING: 3,
    Phase.DEPRECATED: 2,
    Phase.ACTIVE: 1,
}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def effective_phase(agent: Agent, now: datetime) -> tuple[Phase, str]:
    """The phase the engine acts on and why (for the reason).

    ``status.phase`` is what the operator reconciled; a requested Suspended or Retired state
    takes effect here at once (before the operator has caught up), and dates are checked
    against ``now`` so an expired agent is refused even if no reconcile has run since.
    """
    now = _aware(now)
    phase = agent.status.phase or Phase.PENDING
    why = f"status.phase is {phase.value}"
    requested = agent.spec.lifecycle.state
    strict = {LifecycleState.SUSPENDED: Phase.SUSPENDED, LifecycleState.RETIRED: Phase.RETIRED}
    if requested in strict and _RESTRICTIVENESS[strict[requested]] > _RESTRICTIVENESS[phase]:
        phase = strict[requested]
        why = f"spec.lifecycle.state is {requested.value}"
    lifecycle = agent.spec.lifecycle
    if phase != Phase.RETIRED:
        if lifecycle.expires_at is not None and _aware(lifecycle.expires_at) <= now:
            return Phase.RETIRED, f"it expired at {_ts(lifecycle.expires_at)}"
        if (
            lifecycle.sunset_at is not None
            and _aware(lifecycle.sunset_at) <= now
            and (phase == Phase.DEPRECATED or requested == LifecycleState.DEPRECATED)
        ):
            return Phase.RETIRED, f"its sunset date {_ts(lifecycle.sunset_at)} has passed"
    if phase == Phase.ACTIVE and requested == LifecycleState.DEPRECATED:
        phase = Phase.DEPRECATED
        why = "spec.lifecycle.state is Deprecated"
    return phase, why


def _ts(value: datetime) -> str:
    return _aware(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def agent_ref(agent: Agent) -> str:
    return f"{agent.metadata.namespace or ''}/{agent.metadata.name}"


def activation(agent: Agent, phase: Phase, request: Request, now: datetime) -> dict[str, Any]:
    """The CEL variables for one request (see authz/cel.py for the environment)."""
    return {
        "subject": {
            "name": agent.metadata.name,
            "namespace": agent.metadata.namespace or "",
            "owner": agent.spec.owner,
            "platform": agent.spec.platform.type.value,
            "phase": phase.value,
            "labels": dict(agent.metadata.labels),
            "annotations": dict(agent.metadata.annotations),
        },
        "action": {"name": request.action, "properties": dict(request.action_properties)},
        "resource": {
            "type": request.resource_type,
            "id": request.resource_id,
            "properties": dict(request.resource_properties),
        },
        "context": dict(request.context),
        "request": {"time": _aware(now), "caller": request.caller},
    }


_PATH_RE = re.compile(r"\b(subject|action|resource|context|request)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_MISSING = object()


def _lookup(act: Mapping[str, Any], root: str, path: str) -> Any:
    value: Any = act.get(root, _MISSING)
    for part in path.split(".")[1:]:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _values(source: str, act: Mapping[str, Any]) -> str:
    """The values an expression read, e.g. ``resource.properties.env="production"``."""
    seen: dict[str, str] = {}
    for match in _PATH_RE.finditer(source):
        path = match.group(0)
        # ``has(x.y)`` reads nothing; method calls (``.startsWith``) are not fields.
        end = match.end()
        if end < len(source) and source[end] == "(":
            path = path.rsplit(".", 1)[0]
        if path in seen or "." not in path:
            continue
        value = _lookup(act, match.group(1), path)
        if value is _MISSING:
            seen[path] = f"{path} absent"
        elif isinstance(value, Mapping | list):
            continue
        else:
            shown = _ts(value) if isinstance(value, datetime) else repr(value)
            if isinstance(value, bool):
                shown = "true" if value else "false"
            elif isinstance(value, str):
                shown = '"' + value.replace('"', '\\"') + '"'
            seen[path] = f"{path}={shown}"
    return ", ".join(seen.values())


def _evaluate(
    source: str,
    act: Mapping[str, Any],
    limit: EvaluationLimit,
    *,
    want_values: bool = False,
) -> tuple[bool | None, str]:
    """(result, detail); result None when the expression failed, detail says why.

    Only the parts of the activation the expression reads are handed to CEL, and ``limit``
    (the per-evaluation cost limit, see authz/cel.py) is checked on them before it runs: an
    expression over it fails like any evaluation error, so the request is denied.
    """
    try:
        result = compile_expression(source).evaluate(act, limit)
    except CelError as exc:
        return None, exc.message
    # The values read are shown in reasons; an allowing constraint needs none.
    return result, "" if result and not want_values else _values(source, act)


def _deprecated_note(phase: Phase, agent: Agent) -> str:
    if phase != Phase.DEPRECATED:
        return ""
    sunset = agent.spec.lifecycle.sunset_at
    when = f" and retires at {_ts(sunset)}" if sunset is not None else ""
    return f" (note: agent {agent_ref(agent)} is Deprecated{when}; move to its replacement)"


def policy_matches(
    policy: ApprovalPolicy, agent: Agent, scope_names: Iterable[str], action: str
) -> bool:
    """The static part of a policy match (actions, agentSelector, scopes); not ``when``."""
    match = policy.spec.match
    if matches_any(match.actions, action) is None:
        return False
    if match.agent_selector is not None and not match.agent_selector.matches(agent.metadata.labels):
        return False
    return not match.scopes or bool(set(match.scopes) & set(scope_names))


def _same_key(req: ApprovalRequest, agent: Agent, request: Request) -> bool:
    spec = req.spec
    return (
        spec.agent_uid == (agent.metadata.uid or "")
        and spec.agent.name == agent.metadata.name
        and spec.action == request.action
        and spec.resource.type == request.resource_type
        and spec.resource.id == request.resource_id
    )


def decide(
    agent: Agent,
    scopes: Sequence[AuthorityScope],
    policies: Sequence[ApprovalPolicy],
    grants: Sequence[ApprovalRequest],
    request: Request,
    now: datetime,
    *,
    limit: EvaluationLimit = DEFAULT_LIMIT,
) -> Decision:
    """Decide one request; ``grants`` are the agent's ApprovalRequests (any state).

    ``limit`` bounds each CEL evaluation (constraints and policy conditions).
    """
    now = _aware(now)
    ref = agent_ref(agent)
    action = request.action

    # 1. lifecycle
    phase, why = effective_phase(agent, now)
    if phase not in (Phase.ACTIVE, Phase.DEPRECATED):
        verb = {
            Phase.PENDING: "is not provisioned yet (Pending)",
            Phase.SUSPENDED: "is Suspended",
            Phase.RETIRED: "is Retired",
        }[phase]
        return Decision(
            Outcome.DENY,
            f"agent {ref} {verb}: {why}; it may not act",
            f"lifecycle/{phase.value}",
            phase=phase.value,
        )
    note = _deprecated_note(phase, agent)

    if not is_valid_action(action):
        return Decision(
            Outcome.DENY,
            f"action {action!r} is not a valid action name (segments of a-z, 0-9, '_' or '-' "
            f"separated by '.'), so no scope can grant it{note}",
            "default/invalid-action",
            phase=phase.value,
        )

    # 2. deny patterns
    for scope in scopes:
        for i, pattern in enumerate(scope.spec.tools.deny):
            if matches(pattern, action):
                return Decision(
                    Outcome.DENY,
                    f"action {action} is denied by AuthorityScope {scope.metadata.name} "
                    f"(tools.deny pattern {pattern!r}){note}",
                    f"scope/{scope.metadata.name}/tools.deny[{i}]",
                    phase=phase.value,
                )

    # 3. granted at all?
    allow_rule: str | None = None
    sensitive_rule: str | None = None
    for scope in scopes:
        for i, pattern in enumerate(scope.spec.tools.allow):
            if allow_rule is None and matches(pattern, action):
                allow_rule = f"scope/{scope.metadata.name}/tools.allow[{i}]"
        for i, pattern in enumerate(scope.spec.sensitive):
            if sensitive_rule is None and matches(pattern, action):
                sensitive_rule = f"scope/{scope.metadata.name}/sensitive[{i}]"
    if allow_rule is None and sensitive_rule is None:
        names = ", ".join(s.metadata.name for s in scopes)
        where = f"its AuthorityScopes ({names})" if scopes else "it (no AuthorityScope is bound)"
        return Decision(
            Outcome.DENY,
            f"action {action} is not granted to agent {ref}: no pattern in tools.allow or "
            f"sensitive of {where} matches it{note}",
            "default/unknown-action",
            phase=phase.value,
        )

    # 4. constraints (the CEL activation is built only when an expression needs it)
    act_cache: list[dict[str, Any]] = []

    def act() -> dict[str, Any]:
        if not act_cache:
            act_cache.append(activation(agent, phase, request, now))
        return act_cache[0]

    for scope in scopes:
        for i, constraint in enumerate(scope.spec.constraints):
            if matches_any(constraint.tools, action) is None:
                continue
            rule = f"scope/{scope.metadata.name}/constraints[{i}]"
            result, detail = _evaluate(constraint.when, act(), limit)
            if result is None:
                lead = f"{constraint.message}: " if constraint.message else ""
                return Decision(
                    Outcome.DENY,
                    f"{lead}constraint {rule} could not be evaluated, so {action} is denied: "
                    f"{detail}{note}",
                    rule,
                    phase=phase.value,
                )
            if not result:
                message = constraint.message or f"constraint {constraint.when!r} is false"
                values = f" ({detail})" if detail else ""
                return Decision(
                    Outcome.DENY,
                    f"{message}: constraint {rule} {constraint.when!r} is false{values}{note}",
                    rule,
                    phase=phase.value,
                )

    # 5. approval
    scope_names = [s.metadata.name for s in scopes]
    namespace = agent.metadata.namespace or ""
    matched: list[ApprovalPolicy] = []
    conditions: list[str] = []
    for policy in policies:
        if (policy.metadata.namespace or namespace) != namespace:
            continue
        if not policy_matches(policy, agent, scope_names, action):
            continue
        name = policy.metadata.name
        if policy.spec.match.when is not None:
            result, detail = _evaluate(policy.spec.match.when, act(), limit, want_values=True)
            if result is None:
                return Decision(
                    Outcome.DENY,
                    f"the condition of ApprovalPolicy {name} could not be evaluated, so "
                    f"{action} is denied: {detail}{note}",
                    f"policy/{name}/match.when",
                    phase=phase.value,
                )
            if not result:
                continue
            conditions.append(
                f"ApprovalPolicy {name} condition {policy.spec.match.when!r} holds"
                + (f" ({detail})" if detail else "")
            )
        matched.append(policy)
    if sensitive_rule is None and not matched:
        assert allow_rule is not None
        return Decision(
            Outcome.ALLOW,
            f"action {action} is allowed by {allow_rule}{note}",
            allow_rule,
            phase=phase.value,
        )

    needs = sensitive_rule or f"policy/{matched[0].metadata.name}"
    for req in sorted(grants, key=lambda r: r.metadata.name):
        if not _same_key(req, agent, request):
            continue
        state = effective_state(req, now)
        name = f"{req.metadata.namespace or namespace}/{req.metadata.name}"
        if (
            state == ApprovalState.APPROVED
            and req.status.grant is not None
            and _aware(req.status.grant.expires_at) > now
        ):
            deciders = ", ".join(
                sorted({d.approver for d in req.status.decisions if d.verdict == "Approve"})
            )
            return Decision(
                Outcome.ALLOW,
                f"action {action} needs approval ({needs}) and ApprovalRequest {name} was "
                f"approved by {deciders}; the grant is valid until "
                f"{_ts(req.status.grant.expires_at)}{note}",
                f"approval/{name}",
                phase=phase.value,
                approval_request=name,
            )
        if state == ApprovalState.DENIED and _aware(req.spec.expires_at) > now:
            denial = next((d for d in req.status.decisions if d.verdict == "Deny"), None)
            who = f"{denial.approver} ({denial.reason or 'no reason given'})" if denial else "?"
            return Decision(
                Outcome.DENY,
                f"action {action} was denied by {who} in ApprovalRequest {name}; the denial "
                f"holds until {_ts(req.spec.expires_at)}{note}",
                f"approval/{name}",
                phase=phase.value,
                approval_request=name,
            )

    if not matched:
        return Decision(
            Outcome.DENY,
            f"action {action} is sensitive ({sensitive_rule}) but no approver is configured: "
            f"no ApprovalPolicy in namespace {namespace} matches it; ask the platform team to "
            f"add one{note}",
            sensitive_rule or "default/no-approver",
            phase=phase.value,
        )

    users = sorted({u for p in matched for u in p.spec.approvers.users})
    groups = sorted({g for p in matched for g in p.spec.approvers.groups})
    min_approvals = max(p.spec.min_approvals for p in matched)
    timeout = min(p.spec.timeout_seconds for p in matched)
    grant = min(p.spec.grant_seconds for p in matched)
    policy_names = tuple(p.metadata.name for p in matched)
    who = ", ".join([*(f"user {u}" for u in users), *(f"group {g}" for g in groups)])
    because = "; ".join(conditions)
    return Decision(
        Outcome.ESCALATE,
        f"action {action} needs approval ({needs}; ApprovalPolicy {', '.join(policy_names)}"
        + (f"; {because}" if because else "")
        + f"): {min_approvals} approval(s) from {who}{note}",
        sensitive_rule if sensitive_rule else f"policy/{policy_names[0]}",
        phase=phase.value,
        policies=policy_names,
        approver_users=tuple(users),
        approver_groups=tuple(groups),
        min_approvals=min_approvals,
        timeout_seconds=timeout,
        grant_seconds=grant,
    )


def effective_state(req: ApprovalRequest, now: datetime) -> ApprovalState:
    """The state with expiry applied: a Pending request past ``spec.expiresAt`` is Expired."""
    state = req.status.state
    if state == ApprovalState.PENDING and _aware(now) > _aware(req.spec.expires_at):
        return ApprovalState.EXPIRED
    return state


def approval_request_name(
    agent_uid: str, action: str, resource_type: str, resource_id: str, attempt: int = 0
) -> str:
    """A deterministic ApprovalRequest name, so concurrent calls and replicas agree.

    ``attempt`` numbers the successive requests for the same agent, action and resource
    (a new one once the previous is final); 0 has no suffix.
    """
    key = "\x00".join((agent_uid, action, resource_type, resource_id))
    name = "ar-" + hashlib.sha256(key.encode()).hexdigest()[:20]
    return name if attempt == 0 else f"{name}-{attempt}"


def approval_attempt(name: str, base: str) -> int | None:
    """The attempt number of ``name`` if it belongs to ``base``, else None."""
    if name == base:
        return 0
    if name.startswith(base + "-") and name[len(base) + 1 :].isdigit():
        return int(name[len(base) + 1 :])
    return None


def expires_at(now: datetime, seconds: int) -> datetime:
    return _aware(now) + timedelta(seconds=seconds)


# searches ----------------------------------------------------------------------------


def concrete_actions(scopes: Sequence[AuthorityScope]) -> list[str]:
    """The concrete actions (no wildcard) named in the scopes' allow and sensitive patterns."""
    found: set[str] = set()
    for scope in scopes:
        for pattern in (*scope.spec.tools.allow, *scope.spec.sensitive):
            if is_valid_action(pattern):
                found.add(pattern)
    return sorted(found)


def search_actions(
    agent: Agent,
    scopes: Sequence[AuthorityScope],
    policies: Sequence[ApprovalPolicy],
    grants: Sequence[ApprovalRequest],
    request: Request,
    now: datetime,
    *,
    limit: EvaluationLimit = DEFAULT_LIMIT,
) -> list[tuple[str, Decision]]:
    """The concrete actions the agent may take now on the request's resource, with context.

    Patterns with wildcards name no concrete action, so only literal patterns are listed
    (``request.action`` is ignored).
    """
    out: list[tuple[str, Decision]] = []
    for action in concrete_actions(scopes):
        probe = Request(
            action=action,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            action_properties={},
            resource_properties=request.resource_properties,
            context=request.context,
            caller=request.caller,
        )
        decision = decide(agent, scopes, policies, grants, probe, now, limit=limit)
        if decision.allowed:
            out.append((action, decision))
    return out


@dataclass(frozen=True)
class Candidate:
    agent: Agent
    scopes: Sequence[AuthorityScope]
    policies: Sequence[ApprovalPolicy]
    grants: Sequence[ApprovalRequest] = ()


def search_subjects(
    candidates: Iterable[Candidate],
    request: Request,
    now: datetime,
    *,
    limit: EvaluationLimit = DEFAULT_LIMIT,
) -> list[tuple[Agent, Decision]]:
    """The agents that may take ``request.action`` on its resource now, in the given order."""
    out: list[tuple[Agent, Decision]] = []
    for cand in candidates:
        decision = decide(
            cand.agent, cand.scopes, cand.policies, cand.grants, request, now, limit=limit
        )
        if decision.allowed:
            out.append((cand.agent, decision))
    return out
