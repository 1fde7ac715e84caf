"""The decision engine on a table of (scope, policy, request, expected) cases."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_identity.api import Agent, ApprovalPolicy, ApprovalRequest, AuthorityScope
from agent_identity.authz.cel import MAX_EVALUATION_COST, EvaluationLimit
from agent_identity.authz.engine import (
    Candidate,
    Outcome,
    Request,
    approval_attempt,
    approval_request_name,
    decide,
    effective_phase,
    search_actions,
    search_subjects,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC
UID = "uid-1"


def agent(
    phase: str | None = "Active",
    state: str = "Active",
    labels: dict[str, str] | None = None,
    scopes: tuple[str, ...] = ("s",),
    expires: datetime | None = None,
    sunset: datetime | None = None,
    name: str = "bot",
) -> Agent:
    lifecycle: dict[str, Any] = {"state": state}
    if expires:
        lifecycle["expiresAt"] = expires.isoformat()
    if sunset:
        lifecycle["sunsetAt"] = sunset.isoformat()
    status: dict[str, Any] = {"phase": phase} if phase else {}
    return Agent.parse(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": UID, "labels": labels or {}},
            "spec": {
                "owner": "team-a",
                "scopeRefs": [{"name": s} for s in scopes],
                "lifecycle": lifecycle,
            },
            "status": status,
        }
    )


def scope(name: str = "s", **spec: Any) -> AuthorityScope:
    return AuthorityScope.parse({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


def policy(name: str = "p", **spec: Any) -> ApprovalPolicy:
    spec.setdefault("approvers", {"users": ["alice"]})
    return ApprovalPolicy.parse({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


def approval(
    state: str = "Approved",
    action: str = "deploy.production",
    grant_until: datetime | None = NOW + timedelta(minutes=5),
    expires: datetime = NOW + timedelta(hours=1),
    uid: str = UID,
    decisions: list[dict[str, Any]] | None = None,
) -> ApprovalRequest:
    status: dict[str, Any] = {"state": state, "decisions": decisions or []}
    if grant_until is not None and state == "Approved":
        status["grant"] = {"expiresAt": grant_until.isoformat()}
        status["decisions"] = decisions or [
            {"approver": "alice", "verdict": "Approve", "at": NOW.isoformat()}
        ]
    return ApprovalRequest.parse(
        {
            "metadata": {"name": "ar-x", "namespace": "ns"},
            "spec": {
                "agent": {"name": "bot"},
                "agentUid": uid,
                "action": action,
                "resource": {"type": "service", "id": "api"},
                "requestedAt": NOW.isoformat(),
                "requestedBy": "system:serviceaccount:ns:agent-bot",
                "approvers": {"users": ["alice"]},
                "expiresAt": expires.isoformat(),
            },
            "status": status,
        }
    )


def req(
    action: str = "github.pulls.create",
    rprops: dict[str, Any] | None = None,
    aprops: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Request:
    return Request(
        action=action,
        resource_type="service",
        resource_id="api",
        action_properties=aprops or {},
        resource_properties=rprops or {},
        context=context or {},
        caller="system:serviceaccount:ns:agent-bot",
    )


BASE = {"tools": {"allow": ["github.pulls.*", "ci.runs.read"], "deny": ["github.admin.**"]}}
DEPLOY = {
    "tools": {"allow": ["deploy.*"]},
    "constraints": [
        {
            "tools": ["deploy.*"],
            "when": 'resource.properties.env != "production" || context.change_window == true',
            "message": "production deploys only in a change window",
        }
    ],
}
REFUND = {"tools": {"allow": ["payments.refund"]}}
REFUND_POLICY = {
    "match": {"actions": ["payments.refund"], "when": "action.properties.amount > 1000"},
    "approvers": {"users": ["alice"], "groups": ["finance"]},
}
SENSITIVE = {"tools": {"allow": ["ci.*"]}, "sensitive": ["deploy.production"]}
PROD_POLICY = {"match": {"actions": ["deploy.production"]}, "approvers": {"users": ["alice"]}}

CASES: list[tuple[str, Any, list[Any], list[Any], Request, Outcome, str]] = [
    # (id, agent, scopes, policies, request, outcome, rule prefix)
    ("allow-basic", agent(), [scope(**BASE)], [], req(), Outcome.ALLOW, "scope/s/tools.allow[0]"),
    (
        "allow-second-pattern",
        agent(),
        [scope(**BASE)],
        [],
        req("ci.runs.read"),
        Outcome.ALLOW,
        "scope/s/tools.allow[1]",
    ),
    (
        "unknown-action",
        agent(),
        [scope(**BASE)],
        [],
        req("ci.runs.delete"),
        Outcome.DENY,
        "default/unknown-action",
    ),
    (
        "star-one-segment",
        agent(),
        [scope(**BASE)],
        [],
        req("github.pulls.review.submit"),
        Outcome.DENY,
        "default/unknown-action",
    ),
    (
        "deny-wins",
        agent(),
        [scope(tools={"allow": ["github.**"], "deny": ["github.admin.**"]})],
        [],
        req("github.admin.users.delete"),
        Outcome.DENY,
        "scope/s/tools.deny[0]",
    ),
    (
        "deny-zero-depth",
        agent(),
        [scope(**BASE)],
        [],
        req("github.admin"),
        Outcome.DENY,
        "scope/s/tools.deny[0]",
    ),
    (
        "deny-other-scope",
        agent(scopes=("s", "t")),
        [scope(**BASE), scope("t", tools={"deny": ["github.pulls.create"]})],
        [],
        req(),
        Outcome.DENY,
        "scope/t/tools.deny[0]",
    ),
    ("no-scopes", agent(scopes=()), [], [], req(), Outcome.DENY, "default/unknown-action"),
    (
        "invalid-action",
        agent(),
        [scope(**BASE)],
        [],
        req("Github.Pulls"),
        Outcome.DENY,
        "default/invalid-action",
    ),
    (
        "suspended",
        agent(phase="Suspended", state="Suspended"),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Suspended",
    ),
    (
        "suspend-requested",
        agent(state="Suspended"),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Suspended",
    ),
    (
        "retired",
        agent(phase="Retired", state="Retired"),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Retired",
    ),
    (
        "retire-requested",
        agent(state="Retired"),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Retired",
    ),
    ("pending", agent(phase=None), [scope(**BASE)], [], req(), Outcome.DENY, "lifecycle/Pending"),
    (
        "expired",
        agent(expires=NOW - timedelta(seconds=1)),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Retired",
    ),
    (
        "not-yet-expired",
        agent(expires=NOW + timedelta(days=1)),
        [scope(**BASE)],
        [],
        req(),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "deprecated-allowed",
        agent(phase="Deprecated", state="Deprecated", sunset=NOW + timedelta(days=3)),
        [scope(**BASE)],
        [],
        req(),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "sunset-passed",
        agent(phase="Deprecated", state="Deprecated", sunset=NOW - timedelta(seconds=1)),
        [scope(**BASE)],
        [],
        req(),
        Outcome.DENY,
        "lifecycle/Retired",
    ),
    (
        "constraint-true-staging",
        agent(),
        [scope(**DEPLOY)],
        [],
        req("deploy.service", rprops={"env": "staging"}),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "constraint-false-prod",
        agent(),
        [scope(**DEPLOY)],
        [],
        req("deploy.service", rprops={"env": "production"}),
        Outcome.DENY,
        "scope/s/constraints[0]",
    ),
    (
        "constraint-window",
        agent(),
        [scope(**DEPLOY)],
        [],
        req("deploy.service", rprops={"env": "production"}, context={"change_window": True}),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "constraint-missing-key",
        agent(),
        [scope(**DEPLOY)],
        [],
        req("deploy.service"),
        Outcome.DENY,
        "scope/s/constraints[0]",
    ),
    (
        "constraint-has-guard",
        agent(),
        [
            scope(
                tools={"allow": ["deploy.*"]},
                constraints=[
                    {
                        "tools": ["deploy.*"],
                        "when": "!has(resource.properties.env) || "
                        "resource.properties.env != 'production'",
                    }
                ],
            )
        ],
        [],
        req("deploy.service"),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "constraint-other-tool",
        agent(),
        [scope(tools={"allow": ["deploy.*", "ci.read"]}, constraints=DEPLOY["constraints"])],
        [],
        req("ci.read"),
        Outcome.ALLOW,
        "scope/s/tools.allow[1]",
    ),
    (
        "constraint-other-scope",
        agent(scopes=("s", "t")),
        [scope(tools={"allow": ["deploy.*"]}), scope("t", constraints=DEPLOY["constraints"])],
        [],
        req("deploy.x", rprops={"env": "production"}),
        Outcome.DENY,
        "scope/t/constraints[0]",
    ),
    (
        "constraint-type-error",
        agent(),
        [
            scope(
                tools={"allow": ["pay"]},
                constraints=[{"tools": ["pay"], "when": "action.properties.amount > 10"}],
            )
        ],
        [],
        req("pay", aprops={"amount": "lots"}),
        Outcome.DENY,
        "scope/s/constraints[0]",
    ),
    (
        "constraint-subject-label",
        agent(labels={"tier": "gold"}),
        [
            scope(
                tools={"allow": ["x"]},
                constraints=[{"tools": ["x"], "when": "subject.labels.tier == 'gold'"}],
            )
        ],
        [],
        req("x"),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "constraint-time",
        agent(),
        [
            scope(
                tools={"allow": ["x"]},
                constraints=[{"tools": ["x"], "when": "request.time.getHours() >= 18"}],
            )
        ],
        [],
        req("x"),
        Outcome.DENY,
        "scope/s/constraints[0]",
    ),
    (
        "constraint-deny-entry-unconditional",
        agent(),
        [
            scope(
                tools={"allow": ["x.*"], "deny": ["x.y"]},
                constraints=[{"tools": ["x.*"], "when": "true"}],
            )
        ],
        [],
        req("x.y"),
        Outcome.DENY,
        "scope/s/tools.deny[0]",
    ),
    (
        "sensitive-escalates",
        agent(),
        [scope(**SENSITIVE)],
        [policy(**PROD_POLICY)],
        req("deploy.production"),
        Outcome.ESCALATE,
        "scope/s/sensitive[0]",
    ),
    (
        "sensitive-no-policy",
        agent(),
        [scope(**SENSITIVE)],
        [],
        req("deploy.production"),
        Outcome.DENY,
        "scope/s/sensitive[0]",
    ),
    (
        "sensitive-grant",
        agent(),
        [scope(**SENSITIVE)],
        [policy(**PROD_POLICY)],
        req("deploy.production"),
        Outcome.ALLOW,
        "approval/ns/ar-x",
    ),
    (
        "policy-when-true",
        agent(),
        [scope(**REFUND)],
        [policy(**REFUND_POLICY)],
        req("payments.refund", aprops={"amount": 5000}),
        Outcome.ESCALATE,
        "policy/p",
    ),
    (
        "policy-when-false",
        agent(),
        [scope(**REFUND)],
        [policy(**REFUND_POLICY)],
        req("payments.refund", aprops={"amount": 50}),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "policy-when-double",
        agent(),
        [scope(**REFUND)],
        [policy(**REFUND_POLICY)],
        req("payments.refund", aprops={"amount": 1000.5}),
        Outcome.ESCALATE,
        "policy/p",
    ),
    (
        "policy-when-missing-key",
        agent(),
        [scope(**REFUND)],
        [policy(**REFUND_POLICY)],
        req("payments.refund"),
        Outcome.DENY,
        "policy/p/match.when",
    ),
    (
        "policy-selector-miss",
        agent(labels={"team": "b"}),
        [scope(**REFUND)],
        [
            policy(
                match={"actions": ["payments.*"], "agentSelector": {"matchLabels": {"team": "a"}}}
            )
        ],
        req("payments.refund"),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "policy-selector-hit",
        agent(labels={"team": "a"}),
        [scope(**REFUND)],
        [
            policy(
                match={"actions": ["payments.*"], "agentSelector": {"matchLabels": {"team": "a"}}}
            )
        ],
        req("payments.refund"),
        Outcome.ESCALATE,
        "policy/p",
    ),
    (
        "policy-scope-miss",
        agent(),
        [scope(**REFUND)],
        [policy(match={"actions": ["payments.*"], "scopes": ["other"]})],
        req("payments.refund"),
        Outcome.ALLOW,
        "scope/s/tools.allow[0]",
    ),
    (
        "policy-does-not-grant",
        agent(),
        [scope(**BASE)],
        [policy(match={"actions": ["payments.*"]})],
        req("payments.refund"),
        Outcome.DENY,
        "default/unknown-action",
    ),
]


@pytest.mark.parametrize(
    ("agent_", "scopes", "policies", "request_", "outcome", "rule"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_engine_table(
    request: pytest.FixtureRequest,
    agent_: Agent,
    scopes: list[AuthorityScope],
    policies: list[ApprovalPolicy],
    request_: Request,
    outcome: Outcome,
    rule: str,
) -> None:
    grants = [approval()] if request.node.callspec.id.endswith("-grant") else []
    decision = decide(agent_, scopes, policies, grants, request_, NOW)
    assert decision.outcome == outcome, decision.reason
    assert decision.rule == rule, decision.reason
    assert decision.reason


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_deprecated_reason_says_so() -> None:
    a = agent(phase="Deprecated", state="Deprecated", sunset=NOW + timedelta(days=3))
    decision = decide(a, [scope(**BASE)], [], [], req(), NOW)
    assert decision.allowed
    assert "Deprecated" in decision.reason and "retires at" in decision.reason


def test_constraint_reason_names_message_and_values() -> None:
    decision = decide(
        agent(),
        [scope(**DEPLOY)],
        [],
        [],
        req("deploy.svc", rprops={"env": "production"}, context={"change_window": False}),
        NOW,
    )
    assert "production deploys only in a change window" in decision.reason
    assert 'resource.properties.env="production"' in decision.reason
    assert "context.change_window=false" in decision.reason


def test_constraint_error_names_expression_and_error() -> None:
    decision = decide(agent(), [scope(**DEPLOY)], [], [], req("deploy.svc"), NOW)
    assert decision.outcome == Outcome.DENY
    assert "production deploys only in a change window" in decision.reason
    assert "could not be evaluated" in decision.reason
    assert "no such key" in decision.reason
    assert "resource.properties.env" in decision.reason


def test_escalate_carries_approvers_union_and_quorum() -> None:
    p1 = policy(
        "p1",
        match={"actions": ["deploy.*"]},
        approvers={"users": ["alice", "bob"]},
        minApprovals=2,
        timeoutSeconds=600,
        grantSeconds=300,
    )
    p2 = policy(
        "p2",
        match={"actions": ["deploy.production"]},
        approvers={"groups": ["sre"]},
        timeoutSeconds=1200,
        grantSeconds=60,
    )
    decision = decide(agent(), [scope(**SENSITIVE)], [p1, p2], [], req("deploy.production"), NOW)
    assert decision.outcome == Outcome.ESCALATE
    assert decision.policies == ("p1", "p2")
    assert decision.approver_users == ("alice", "bob")
    assert decision.approver_groups == ("sre",)
    assert (decision.min_approvals, decision.timeout_seconds, decision.grant_seconds) == (
        2,
        600,
        60,
    )


@pytest.mark.parametrize(
    ("grant", "outcome"),
    [
        (approval(grant_until=NOW - timedelta(seconds=1)), Outcome.ESCALATE),
        (approval(uid="other"), Outcome.ESCALATE),
        (approval(action="deploy.staging"), Outcome.ESCALATE),
        (approval(state="Pending"), Outcome.ESCALATE),
        (approval(state="Pending", expires=NOW - timedelta(seconds=1)), Outcome.ESCALATE),
        (
            approval(
                state="Denied",
                decisions=[
                    {"approver": "alice", "verdict": "Deny", "reason": "no", "at": NOW.isoformat()}
                ],
            ),
            Outcome.DENY,
        ),
        (approval(state="Denied", expires=NOW - timedelta(seconds=1)), Outcome.ESCALATE),
        (approval(), Outcome.ALLOW),
    ],
)
def test_grants(grant: ApprovalRequest, outcome: Outcome) -> None:
    decision = decide(
        agent(),
        [scope(**SENSITIVE)],
        [policy(**PROD_POLICY)],
        [grant],
        req("deploy.production"),
        NOW,
    )
    assert decision.outcome == outcome, decision.reason


def test_effective_phase_prefers_stricter() -> None:
    assert effective_phase(agent(phase="Active", state="Retired"), NOW)[0] == "Retired"
    assert effective_phase(agent(phase="Suspended", state="Active"), NOW)[0] == "Suspended"


def test_approval_request_name_deterministic() -> None:
    a = approval_request_name("u", "deploy.production", "service", "api")
    assert a == approval_request_name("u", "deploy.production", "service", "api")
    assert a != approval_request_name("u", "deploy.production", "service", "api2")
    assert a.startswith("ar-") and len(a) <= 63
    assert approval_attempt(a, a) == 0
    assert approval_attempt(a + "-3", a) == 3
    assert approval_attempt(a + "x", a) is None
    assert approval_request_name("u", "a", "b", "c", 2).endswith("-2")


def test_search_actions_lists_literal_patterns_the_agent_may_take() -> None:
    s = scope(
        tools={
            "allow": ["github.pulls.*", "ci.runs.read", "deploy.staging"],
            "deny": ["ci.runs.read"],
        },
        sensitive=["deploy.production"],
    )
    found = search_actions(agent(), [s], [policy(**PROD_POLICY)], [], req("ignored"), NOW)
    assert [a for a, _ in found] == ["deploy.staging"]


def test_search_subjects() -> None:
    allowed = Candidate(agent(name="a"), [scope(**BASE)], [])
    denied = Candidate(agent(name="b"), [scope(**REFUND)], [])
    retired = Candidate(agent(name="c", state="Retired"), [scope(**BASE)], [])
    found = search_subjects([allowed, denied, retired], req(), NOW)
    assert [a.metadata.name for a, _ in found] == ["a"]


# the per-evaluation CEL limit ---------------------------------------------------------

PATHOLOGICAL = "context.xs.all(a, context.xs.all(b, context.xs.all(c, true)))"
LIMITED = {
    "tools": {"allow": ["github.pulls.*"]},
    "constraints": [
        {"tools": ["github.pulls.*"], "when": PATHOLOGICAL, "message": "every triple checks"}
    ],
}


def test_pathological_constraint_is_stopped_within_its_limit_and_denies() -> None:
    request = req(context={"xs": list(range(3000))})  # 27 billion iterations if it ran
    start = time.perf_counter()
    decision = decide(agent(), [scope(**LIMITED)], [], [], request, NOW)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"the decision took {elapsed:.3f} s"
    assert decision.outcome == Outcome.DENY
    assert decision.rule == "scope/s/constraints[0]"
    assert "could not be evaluated" in decision.reason
    assert PATHOLOGICAL in decision.reason
    assert f"per-evaluation limit of {MAX_EVALUATION_COST}" in decision.reason
    assert "context.xs (3000 entries)" in decision.reason


def test_same_constraint_allows_on_a_small_input() -> None:
    decision = decide(agent(), [scope(**LIMITED)], [], [], req(context={"xs": [1, 2, 3]}), NOW)
    assert decision.outcome == Outcome.ALLOW


def test_large_unrelated_context_list_is_still_allowed() -> None:
    request = req(
        "deploy.svc",
        rprops={"env": "production"},
        context={"change_window": True, "audit_trail": list(range(100_000))},
    )
    start = time.perf_counter()
    decision = decide(agent(), [scope(**DEPLOY)], [], [], request, NOW)
    assert time.perf_counter() - start < 0.5
    assert decision.outcome == Outcome.ALLOW, decision.reason


def test_limit_is_passed_in() -> None:
    request = req(context={"xs": list(range(10))})
    assert decide(agent(), [scope(**LIMITED)], [], [], request, NOW).allowed
    tight = decide(
        agent(), [scope(**LIMITED)], [], [], request, NOW, limit=EvaluationLimit(max_cost=100)
    )
    assert tight.outcome == Outcome.DENY
    assert "per-evaluation limit of 100" in tight.reason
    found = search_actions(
        agent(),
        [scope(**LIMITED)],
        [],
        [],
        request,
        NOW,
        limit=EvaluationLimit(max_cost=100),
    )
    assert found == []


def test_policy_condition_over_the_limit_denies() -> None:
    pol = policy(match={"actions": ["github.pulls.*"], "when": PATHOLOGICAL})
    request = req(context={"xs": list(range(3000))})
    decision = decide(agent(), [scope(**BASE)], [pol], [], request, NOW)
    assert decision.outcome == Outcome.DENY
    assert decision.rule == "policy/p/match.when"
    assert PATHOLOGICAL in decision.reason
    assert "per-evaluation limit" in decision.reason
