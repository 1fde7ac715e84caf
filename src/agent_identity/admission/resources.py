"""Validation of our own resources, pure: what the CRD schema cannot check.

* references exist in the namespace (``spec.scopeRefs``, ``spec.parentRef``);
* a sub-agent's effective authority (RBAC rules, tools, egress) is within its
  parent's, and its token TTL is not longer — also when a scope either of them
  is bound to changes;
* ``spec.token.ttlSeconds`` is not above the bound scopes' ``maxTokenTTLSeconds``;
* lifecycle transitions are legal against the effective phase in status;
* CEL expressions compile (``constraints[].when``, ``match.when``);
* provenance annotations are what the webhook records;
* the RBAC escalation guard: the permissions a user must hold are returned in
  ``Decision.permissions`` for the shell to check with SubjectAccessReviews.

Only spec changes are checked on UPDATE: the operator's finalizer and
annotation bookkeeping must never be blocked by a rule about the spec.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agent_identity import GROUP
from agent_identity.admission import provenance
from agent_identity.admission.agentstate import effective_state
from agent_identity.admission.authority import (
    Authority,
    describe_tuple,
    expand_rule,
    permissions,
    rule_covers,
    subset_violation,
)
from agent_identity.admission.review import Decision, Permission, Ref, allow, deny, format_time
from agent_identity.api import Agent, ApprovalPolicy, AuthorityScope, LifecycleState, Phase
from agent_identity.api.agent import DEFAULT_TOKEN_TTL
from agent_identity.authz.cel import check_expression
from agent_identity.registry import Registry

ESCALATE = "escalate"  # RBAC's verb for "may grant more than I hold", on authorityscopes


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))


def validate_resource(request: dict[str, Any], registry: Registry, now: datetime) -> Decision:
    """Decide a CREATE or UPDATE of an Agent, AuthorityScope or ApprovalPolicy."""
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE"):
        return allow()
    problem = provenance.violation(request)
    if problem is not None:
        return deny(problem, "ProvenanceSetByHand")
    new: dict[str, Any] = request.get("object") or {}
    old: dict[str, Any] | None = request.get("oldObject") if operation == "UPDATE" else None
    if old is not None and old.get("spec") == new.get("spec"):
        return allow()
    kind = str((request.get("kind") or {}).get("kind") or new.get("kind") or "")
    try:
        if kind == "Agent":
            return _validate_agent(request, registry, now, Agent.parse(new), old)
        if kind == "AuthorityScope":
            return _validate_scope(registry, AuthorityScope.parse(new), old)
        if kind == "ApprovalPolicy":
            return _validate_policy(ApprovalPolicy.parse(new))
    except ValidationError as exc:
        return deny(f"{kind} is not valid: {_first_error(exc)}", "Invalid")
    return allow()


# --- Agent ------------------------------------------------------------------------------


def _validate_agent(
    request: dict[str, Any],
    registry: Registry,
    now: datetime,
    agent: Agent,
    old_body: dict[str, Any] | None,
) -> Decision:
    ns = agent.metadata.namespace or str(request.get("namespace") or "")
    agent.metadata.namespace = ns
    name = agent.metadata.name or str(request.get("name") or "")
    confirm: list[Ref] = []

    if old_body is not None:
        try:
            old = Agent.parse(old_body)
        except ValidationError:
            old = None
        if old is not None:
            problem = transition_error(old, agent, now)
            if problem is not None:
                return deny(problem, "IllegalTransition")

    scopes: list[AuthorityScope] = []
    for i, ref in enumerate(agent.spec.scope_refs):
        confirm.append(("AuthorityScope", ns, ref.name))
        scope = registry.scope(ns, ref.name)
        if scope is None:
            invalid = registry.invalid_reason("AuthorityScope", ns, ref.name)
            what = f"is not valid ({invalid})" if invalid else "does not exist"
            return deny(
                f'spec.scopeRefs[{i}]: AuthorityScope "{ref.name}" {what} in namespace '
                f'"{ns}"; create it first (or earlier in the same kubectl apply) or remove the '
                "reference",
                "ScopeNotFound",
                confirm=confirm,
            )
        scopes.append(scope)

    # The CRD defaults ttlSeconds, so the default value cannot be told from an explicit
    # one: an agent left at the default is capped at injection rather than refused.
    if scopes and agent.spec.token.ttl_seconds != DEFAULT_TOKEN_TTL:
        tightest = min(scopes, key=lambda s: s.spec.max_token_ttl_seconds)
        limit = tightest.spec.max_token_ttl_seconds
        if agent.spec.token.ttl_seconds > limit:
            return deny(
                f"spec.token.ttlSeconds {agent.spec.token.ttl_seconds} is above "
                f'maxTokenTTLSeconds {limit} of AuthorityScope "{tightest.metadata.name}"; set '
                f"spec.token.ttlSeconds to at most {limit}",
                "TokenTTLTooLong",
                confirm=confirm,
            )

    if agent.spec.parent_ref is not None:
        parent_name = agent.spec.parent_ref.name
        confirm.append(("Agent", ns, parent_name))
        if parent_name == name:
            return deny(
                f"spec.parentRef: agent {name!r} cannot be its own parent; remove parentRef",
                "ParentInvalid",
            )
        parent = registry.agent(ns, parent_name)
        if parent is None:
            invalid = registry.invalid_reason("Agent", ns, parent_name)
            what = f"is not valid ({invalid})" if invalid else "does not exist"
            return deny(
                f'spec.parentRef: Agent "{parent_name}" {what} in namespace "{ns}"; register '
                "the parent first or remove parentRef",
                "ParentNotFound",
                confirm=confirm,
            )
        if effective_state(parent, now).phase == Phase.RETIRED:
            return deny(
                f'spec.parentRef: parent agent "{parent_name}" is Retired; a retired agent '
                "cannot spawn sub-agents: choose an active parent",
                "ParentRetired",
                confirm=confirm,
            )
        parent_scopes, _ = registry.scopes_of(parent)
        confirm.extend(("AuthorityScope", ns, s.metadata.name) for s in parent_scopes)
        problem = child_violation(agent, scopes, parent, parent_scopes)
        if problem is not None:
            return deny(
                f'agent "{name}" would be wider than its parent "{parent_name}": {problem}; '
                "narrow the child's scopes (spec.scopeRefs) or widen the parent's",
                "WiderThanParent",
                confirm=confirm,
            )

    if old_body is not None:
        # A parent that narrows its own authority (scopes, token TTL) must not leave a
        # sub-agent wider than itself: the same subset rule, seen from the parent.
        for child in registry.sub_agents(ns, parent=name):
            if child.metadata.name == name or effective_state(child, now).phase == Phase.RETIRED:
                continue
            child_scopes, _ = registry.scopes_of(child)
            problem = child_violation(child, child_scopes, agent, scopes)
            if problem is not None:
                return deny(
                    f'this change to agent "{name}" would leave its sub-agent '
                    f'"{child.metadata.name}" wider than it: {problem}; narrow or retire the '
                    "sub-agent first, or keep the parent's authority",
                    "WiderThanParent",
                    confirm=[*confirm, ("Agent", ns, child.metadata.name)],
                )

    old_refs: set[str] = set()
    if old_body is not None:
        old_refs = {
            str(r.get("name")) for r in ((old_body.get("spec") or {}).get("scopeRefs") or [])
        }
    newly_bound = [s for s in scopes if s.metadata.name not in old_refs]
    if newly_bound:
        names = ", ".join(repr(s.metadata.name) for s in newly_bound)
        return allow(
            permissions=permissions(ns, (r for s in newly_bound for r in s.spec.rules)),
            waiver=Permission(ns, ESCALATE, GROUP, "authorityscopes"),
            guarded=f"binding agent {name!r} to AuthorityScope {names}",
        )
    return allow()


def effective_ttl(agent: Agent, scopes: list[AuthorityScope]) -> int:
    ttl = agent.spec.token.ttl_seconds
    for scope in scopes:
        ttl = min(ttl, scope.spec.max_token_ttl_seconds)
    return ttl


def child_violation(
    child: Agent,
    child_scopes: list[AuthorityScope],
    parent: Agent,
    parent_scopes: list[AuthorityScope],
) -> str | None:
    """Why the child's effective authority is not within the parent's, or None."""
    problem = subset_violation(Authority.of(child_scopes), Authority.of(parent_scopes))
    if problem is not None:
        return problem
    child_ttl, parent_ttl = effective_ttl(child, child_scopes), effective_ttl(parent, parent_scopes)
    if child_ttl > parent_ttl:
        return (
            f"token TTL {child_ttl}s is longer than the parent's {parent_ttl}s (set "
            f"spec.token.ttlSeconds to at most {parent_ttl})"
        )
    return None


_LEGAL = {
    LifecycleState.ACTIVE: {LifecycleState.SUSPENDED, LifecycleState.DEPRECATED},
    LifecycleState.SUSPENDED: {LifecycleState.ACTIVE, LifecycleState.DEPRECATED},
    LifecycleState.DEPRECATED: {LifecycleState.ACTIVE},
}


def transition_error(old: Agent, new: Agent, now: datetime) -> str | None:
    """Why changing ``old`` into ``new`` is not a legal lifecycle transition, or None.

    Checked against the effective phase in the old object's status (with the
    clock applied), so an agent retired by expiry or sunset stays retired
    whatever its spec says.
    """
    name = new.metadata.name
    state = effective_state(old, now)
    if state.phase is not None and state.phase != Phase.PENDING:
        current = LifecycleState(state.phase.value)
    else:
        current = old.spec.lifecycle.state
    target = new.spec.lifecycle.state
    if current == LifecycleState.RETIRED:
        if target == LifecycleState.RETIRED:
            return None
        why = {"expired": " (its expiresAt passed)", "sunset": " (its sunsetAt passed)"}
        return (
            f'agent "{name}" is Retired since {format_time(state.since)}'
            f"{why.get(state.why, '')}: Retired is terminal and cannot become {target}; keep "
            "spec.lifecycle.state: Retired and register a new Agent instead"
        )
    if target == current or target == LifecycleState.RETIRED:
        return None
    if target not in _LEGAL.get(current, set()):
        allowed = [*sorted(s.value for s in _LEGAL.get(current, set())), "Retired"]
        return (
            f'spec.lifecycle.state: agent "{name}" cannot go from {current} to {target}; '
            f"from {current} it can go to {' or '.join(allowed)}"
        )
    if current == LifecycleState.DEPRECATED and target == LifecycleState.ACTIVE:
        sunset = old.spec.lifecycle.sunset_at
        if sunset is not None and (sunset if sunset.tzinfo else sunset.replace(tzinfo=UTC)) <= now:
            return (
                f'spec.lifecycle.state: agent "{name}" passed its sunsetAt '
                f"({format_time(sunset)}), so it can no longer return to Active; register a "
                "new Agent"
            )
    if target == LifecycleState.DEPRECATED:
        sunset = new.spec.lifecycle.sunset_at
        if sunset is not None and (sunset if sunset.tzinfo else sunset.replace(tzinfo=UTC)) <= now:
            return (
                f"spec.lifecycle.sunsetAt {format_time(sunset)} is in the past; a deprecation "
                "needs a future sunsetAt (or set state: Retired)"
            )
    return None


# --- AuthorityScope ---------------------------------------------------------------------


def _validate_scope(
    registry: Registry, scope: AuthorityScope, old_body: dict[str, Any] | None
) -> Decision:
    ns = scope.metadata.namespace or ""
    name = scope.metadata.name
    for i, constraint in enumerate(scope.spec.constraints):
        problem = check_expression(constraint.when)
        if problem is not None:
            return deny(f"spec.constraints[{i}].when: {problem}", "InvalidExpression")

    # sub-agents: a scope change must not make a child wider than its parent
    confirm: list[Ref] = [("AuthorityScope", ns, name)]
    bound = set(registry.agents_bound_to(ns, name))
    for agent in registry.sub_agents(ns):
        assert agent.spec.parent_ref is not None  # sub_agents has one
        parent = registry.agent(ns, agent.spec.parent_ref.name)
        if parent is None or (
            agent.metadata.name not in bound and parent.metadata.name not in bound
        ):
            continue

        def with_new(a: Agent) -> list[AuthorityScope]:
            found, _ = registry.scopes_of(a)
            return [scope if s.metadata.name == name else s for s in found]

        problem = child_violation(agent, with_new(agent), parent, with_new(parent))
        if problem is not None:
            confirm += [("Agent", ns, agent.metadata.name), ("Agent", ns, parent.metadata.name)]
            return deny(
                f'this change to AuthorityScope "{name}" would make agent '
                f'"{agent.metadata.name}" wider than its parent "{parent.metadata.name}": '
                f"{problem}",
                "WiderThanParent",
                confirm=confirm,
            )

    old_rules = []
    if old_body is not None:
        try:
            old_rules = AuthorityScope.parse(old_body).spec.rules
        except ValidationError:
            old_rules = []
    widened = [
        rule
        for rule in scope.spec.rules
        if not all(any(rule_covers(o, t) for o in old_rules) for t in expand_rule(rule))
    ]
    if widened:
        verb = "widening" if old_body is not None else "creating"
        return allow(
            permissions=[
                p
                for p in permissions(ns, widened)
                if not any(rule_covers(o, _tuple(p)) for o in old_rules)
            ],
            waiver=Permission(ns, ESCALATE, GROUP, "authorityscopes"),
            guarded=f"{verb} AuthorityScope {name!r}",
        )
    return allow()


def _tuple(p: Permission) -> tuple[str, str, str, str]:
    res = p.resource + (f"/{p.subresource}" if p.subresource else "")
    return (p.group, res, p.verb, p.name)


# --- ApprovalPolicy ---------------------------------------------------------------------


def _validate_policy(policy: ApprovalPolicy) -> Decision:
    if policy.spec.match.when is not None:
        problem = check_expression(policy.spec.match.when)
        if problem is not None:
            return deny(f"spec.match.when: {problem}", "InvalidExpression")
    return allow()


def escalation_denial(request: dict[str, Any], decision: Decision, missing: Permission) -> Decision:
    """The denial when the requesting user lacks ``missing`` (from a SubjectAccessReview)."""
    user = str((request.get("userInfo") or {}).get("username") or "")
    return deny(
        f"{decision.guarded} would grant permissions {user!r} does not hold: {user!r} cannot "
        f"{missing.describe()}; ask someone who holds it to do this, or get that permission "
        f"first (or the {ESCALATE!r} verb on authorityscopes.{GROUP})",
        "Escalation",
    )


__all__ = [
    "child_violation",
    "describe_tuple",
    "escalation_denial",
    "transition_error",
    "validate_resource",
]
