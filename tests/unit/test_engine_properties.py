"""Properties of the decision engine (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_identity.api import Agent, ApprovalPolicy, AuthorityScope
from agent_identity.api.patterns import matches, pattern_error
from agent_identity.authz.engine import Outcome, Request, decide

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SEGMENTS = ("a", "b", "c")

actions = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join)
patterns = (
    st.lists(st.sampled_from((*SEGMENTS, "*", "**")), min_size=1, max_size=3)
    .map(".".join)
    .filter(lambda p: pattern_error(p) is None)
)
WHENS = (
    "true",
    "false",
    "context.flag == true",
    "has(context.flag) && context.flag",
    "resource.properties.env != 'production'",
    "action.properties.amount > 10",
)
constraints = st.fixed_dictionaries(
    {
        "tools": st.lists(patterns, min_size=1, max_size=2, unique=True),
        "when": st.sampled_from(WHENS),
    }
)
contexts = st.fixed_dictionaries({}, optional={"flag": st.booleans()})
rprops = st.fixed_dictionaries({}, optional={"env": st.sampled_from(["production", "dev"])})
aprops = st.fixed_dictionaries({}, optional={"amount": st.integers(0, 20)})


def make_agent() -> Agent:
    return Agent.parse(
        {
            "metadata": {"name": "bot", "namespace": "ns", "uid": "u"},
            "spec": {"owner": "o", "scopeRefs": [{"name": "s"}]},
            "status": {"phase": "Active"},
        }
    )


def make_scope(spec: dict[str, Any]) -> AuthorityScope:
    return AuthorityScope.parse({"metadata": {"name": "s", "namespace": "ns"}, "spec": spec})


scope_specs = st.fixed_dictionaries(
    {
        "tools": st.fixed_dictionaries(
            {
                "allow": st.lists(patterns, max_size=4, unique=True),
                "deny": st.lists(patterns, max_size=3, unique=True),
            }
        ),
        "sensitive": st.lists(patterns, max_size=2, unique=True),
        "constraints": st.lists(constraints, max_size=2),
    }
)
policy_sets = st.lists(
    st.builds(
        lambda acts, who: ApprovalPolicy.parse(
            {
                "metadata": {"name": f"p-{who}", "namespace": "ns"},
                "spec": {"match": {"actions": acts}, "approvers": {"users": [who]}},
            }
        ),
        st.lists(patterns, min_size=1, max_size=2, unique=True),
        st.sampled_from(["alice", "bob"]),
    ),
    max_size=2,
)


def request(action: str, ctx: dict[str, Any], rp: dict[str, Any], ap: dict[str, Any]) -> Request:
    return Request(action, "service", "api", ap, rp, ctx, "caller")


@settings(max_examples=300, deadline=None)
@given(scope_specs, policy_sets, actions, contexts, rprops, aprops)
def test_no_request_both_allowed_and_denied_by_the_same_scope(
    spec: dict[str, Any],
    policies: list[ApprovalPolicy],
    action: str,
    ctx: dict[str, Any],
    rp: dict[str, Any],
    ap: dict[str, Any],
) -> None:
    decision = decide(
        make_agent(), [make_scope(spec)], policies, [], request(action, ctx, rp, ap), NOW
    )
    if any(matches(p, action) for p in spec["tools"]["deny"]):
        assert decision.outcome == Outcome.DENY
        assert decision.rule.startswith("scope/s/tools.deny[")
    if decision.allowed:
        assert not any(matches(p, action) for p in spec["tools"]["deny"])


@settings(max_examples=300, deadline=None)
@given(scope_specs, policy_sets, actions, contexts, rprops, aprops, st.integers(0, 3))
def test_removing_an_allow_never_turns_a_deny_into_an_allow(
    spec: dict[str, Any],
    policies: list[ApprovalPolicy],
    action: str,
    ctx: dict[str, Any],
    rp: dict[str, Any],
    ap: dict[str, Any],
    index: int,
) -> None:
    req = request(action, ctx, rp, ap)
    before = decide(make_agent(), [make_scope(spec)], policies, [], req, NOW)
    allow = list(spec["tools"]["allow"])
    if not allow:
        return
    del allow[index % len(allow)]
    smaller = {**spec, "tools": {**spec["tools"], "allow": allow}}
    after = decide(make_agent(), [make_scope(smaller)], policies, [], req, NOW)
    if not before.allowed:
        assert not after.allowed, (before.reason, after.reason)


@settings(max_examples=300, deadline=None)
@given(scope_specs, policy_sets, actions, contexts, rprops, aprops, constraints)
def test_adding_a_constraint_never_turns_a_deny_into_an_allow(
    spec: dict[str, Any],
    policies: list[ApprovalPolicy],
    action: str,
    ctx: dict[str, Any],
    rp: dict[str, Any],
    ap: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    req = request(action, ctx, rp, ap)
    before = decide(make_agent(), [make_scope(spec)], policies, [], req, NOW)
    more = {**spec, "constraints": [*spec["constraints"], extra]}
    after = decide(make_agent(), [make_scope(more)], policies, [], req, NOW)
    if not before.allowed:
        assert not after.allowed, (before.reason, after.reason)
    # and a constraint never escalates what was denied
    if before.outcome == Outcome.DENY:
        assert after.outcome == Outcome.DENY


@settings(max_examples=200, deadline=None)
@given(scope_specs, policy_sets, actions, contexts, rprops, aprops)
def test_same_request_same_decision(
    spec: dict[str, Any],
    policies: list[ApprovalPolicy],
    action: str,
    ctx: dict[str, Any],
    rp: dict[str, Any],
    ap: dict[str, Any],
) -> None:
    req = request(action, ctx, rp, ap)
    first = decide(make_agent(), [make_scope(spec)], policies, [], req, NOW)
    second = decide(make_agent(), [make_scope(spec)], policies, [], req, NOW)
    assert first == second
