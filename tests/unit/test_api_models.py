"""The pydantic models: wire round-trips, every one-object validator, the pattern grammar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_identity.api import (
    Agent,
    ApprovalPolicy,
    ApprovalRequest,
    AuthorityScope,
    EgressPeer,
    EgressPort,
    Lifecycle,
    LifecycleState,
    Platform,
    PolicyRule,
    TokenSpec,
)
from agent_identity.api.conditions import find, is_true, remove_condition, set_condition
from agent_identity.api.patterns import (
    covered_by_any,
    covers,
    is_valid_action,
    matches,
    pattern_error,
)
from tests.fixtures.crds import segments, tool_patterns, valid_bodies

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {m.KIND: m for m in (Agent, AuthorityScope, ApprovalPolicy, ApprovalRequest)}


def _subset(small: Any, big: Any, path: str = "") -> None:
    """Every key and value of `small` is in `big` (defaults may add keys)."""
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for key, value in small.items():
            assert key in big, f"{path}.{key} lost"
            _subset(value, big[key], f"{path}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), path
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert small == big, f"{path}: {small!r} != {big!r}"


def _example_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] in MODELS]
    return docs


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "doc", _example_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_examples_round_trip(doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]]
    wire = model.parse(doc).to_wire()
    _subset(doc, wire)
    assert model.parse(wire).to_wire() == wire


def test_examples_cover_what_the_brief_promises() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _example_docs()}
    assert AuthorityScope.parse(docs["AuthorityScope", "deployer"]).spec.sensitive == [
        "deploy.production"
    ]
    analyst = AuthorityScope.parse(docs["AuthorityScope", "analyst"]).spec
    assert all(set(r.verbs) <= {"get", "list", "watch"} for r in analyst.rules)
    agents = [Agent.parse(d) for (k, _), d in docs.items() if k == "Agent"]
    assert len(agents) == 3
    assert any(
        a.spec.platform.type == "external" and a.spec.platform.provider == "openai" for a in agents
    )
    assert any(a.spec.parent_ref is not None for a in agents)
    refunds = ApprovalPolicy.parse(docs["ApprovalPolicy", "large-refunds"]).spec
    assert refunds.match.when == "has(action.properties.amount) && action.properties.amount > 1000"


def test_wire_names_and_defaults() -> None:
    agent = Agent.parse({"metadata": {"name": "a"}, "spec": {"owner": "team-x"}})
    assert agent.spec.platform.type == "kubernetes"
    assert agent.spec.lifecycle.state == LifecycleState.ACTIVE
    assert (agent.spec.token.audience, agent.spec.token.ttl_seconds) == ("agentidentity.io", 900)
    wire = agent.to_wire()
    assert wire["apiVersion"] == "agentidentity.io/v1alpha1" and wire["kind"] == "Agent"
    assert wire["spec"]["token"] == {"audience": "agentidentity.io", "ttlSeconds": 900}
    assert "parentRef" not in wire["spec"]  # no nulls on the wire
    scope = AuthorityScope.parse({"metadata": {"name": "s"}})
    assert scope.spec.max_token_ttl_seconds == 3600
    assert scope.to_wire()["spec"]["maxTokenTTLSeconds"] == 3600
    policy = ApprovalPolicy.parse(
        {
            "metadata": {"name": "p"},
            "spec": {"match": {"actions": ["a.b"]}, "approvers": {"groups": ["g"]}},
        }
    )
    assert (policy.spec.min_approvals, policy.spec.timeout_seconds, policy.spec.grant_seconds) == (
        1,
        3600,
        900,
    )
    peer = EgressPeer.model_validate({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]})
    assert peer.to_wire() == {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}


@settings(max_examples=100, deadline=None)
@given(valid_bodies)
def test_generated_objects_round_trip(body: dict[str, Any]) -> None:
    model = MODELS[body["kind"]]
    wire = model.parse(body).to_wire()
    _subset(body, wire)
    assert model.parse(wire).to_wire() == wire


# ---------------------------------------------------------------------------- validators

_AGENT = {"metadata": {"name": "a"}}
_SOON = "2030-01-01T00:00:00Z"
_REQUEST = {
    "agent": {"name": "release-bot"},
    "agentUid": "0d6c5d3e-1b7a-4c1e-9a55-2f5a6b7c8d9e",
    "action": "deploy.production",
    "resource": {"type": "service", "id": "payments-api"},
    "requestedAt": "2026-01-01T10:00:00Z",
    "requestedBy": "system:serviceaccount:payments:release-bot",
    "approvers": {"groups": ["sre-leads"]},
    "expiresAt": "2026-01-01T11:00:00Z",
}

# (id, model, failing input, passing input, text the failure must contain)
VALIDATORS: list[tuple[str, Any, dict[str, Any], dict[str, Any], str]] = [
    ("owner-missing", Agent, {**_AGENT, "spec": {}}, {**_AGENT, "spec": {"owner": "t"}}, "owner"),
    (
        "owner-empty",
        Agent,
        {**_AGENT, "spec": {"owner": ""}},
        {**_AGENT, "spec": {"owner": "t"}},
        "owner",
    ),
    (
        "owner-invalid",
        Agent,
        {**_AGENT, "spec": {"owner": "team payments!"}},
        {**_AGENT, "spec": {"owner": "alice@example.com"}},
        "spec.owner must name the accountable person or team",
    ),
    (
        "external-needs-provider",
        Platform,
        {"type": "external"},
        {"type": "external", "provider": "openai", "externalId": "asst_123"},
        "spec.platform.provider is required",
    ),
    ("ttl-low", TokenSpec, {"ttlSeconds": 599}, {"ttlSeconds": 600}, "600"),
    ("ttl-high", TokenSpec, {"ttlSeconds": 86401}, {"ttlSeconds": 86400}, "86400"),
    (
        "sunset-needs-deprecated",
        Lifecycle,
        {"state": "Active", "sunsetAt": _SOON},
        {"state": "Retired", "sunsetAt": _SOON},
        "sunsetAt is only allowed with state Deprecated or Retired",
    ),
    (
        "deprecated-needs-sunset",
        Lifecycle,
        {"state": "Deprecated"},
        {"state": "Deprecated", "sunsetAt": _SOON},
        "sunsetAt is required with state Deprecated",
    ),
    (
        "agent-name-63",
        Agent,
        {"metadata": {"name": "a" * 64}, "spec": {"owner": "t"}},
        {"metadata": {"name": "a" * 63}, "spec": {"owner": "t"}},
        "at most 63 characters",
    ),
    (
        "verbs-star-alone",
        PolicyRule,
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*", "get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        "'*' already means every verb",
    ),
    (
        "verbs-empty-list",
        PolicyRule,
        {"apiGroups": [""], "resources": ["pods"], "verbs": []},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        "rules[].verbs must name at least one verb",
    ),
    (
        "verbs-missing",
        PolicyRule,
        {"apiGroups": [""], "resources": ["pods"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        "rules[].verbs must name at least one verb",
    ),
    (
        "verbs-empty-string",
        PolicyRule,
        {"apiGroups": [""], "resources": ["pods"], "verbs": [""]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        "verbs",
    ),
    (
        "resources-empty-string",
        PolicyRule,
        {"apiGroups": [""], "resources": [""], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        "resources",
    ),
    (
        "resources-missing",
        PolicyRule,
        {"apiGroups": ["apps"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        "rules[].resources must name at least one resource",
    ),
    (
        "api-groups-missing",
        PolicyRule,
        {"resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        'rules[].apiGroups must name at least one API group; use apiGroups: [""] for the core '
        "group",
    ),
    (
        "api-groups-empty",
        PolicyRule,
        {"apiGroups": [], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        'use apiGroups: [""] for the core group',
    ),
    (
        "api-groups-null",
        PolicyRule,
        {"apiGroups": None, "resources": ["pods"], "verbs": ["get"]},
        {"api_groups": ["", "apps"], "resources": ["pods"], "verbs": ["get"]},
        'use apiGroups: [""] for the core group',
    ),
    (
        "scope-rule-without-api-groups",
        AuthorityScope,
        {"spec": {"rules": [{"resources": ["configmaps"], "verbs": ["get"]}]}},
        {"spec": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}},
        'rules[].apiGroups must name at least one API group; use apiGroups: [""]',
    ),
    (
        "peer-cidr-and-selector",
        EgressPeer,
        {"cidr": "10.0.0.0/8", "podSelector": {}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}},
        "set either cidr or namespaceSelector/podSelector",
    ),
    ("peer-nothing", EgressPeer, {}, {"cidr": "10.0.0.0/8"}, "set either cidr"),
    (
        "peer-cidr-plain-ip",
        EgressPeer,
        {"cidr": "10.0.0.1"},
        {"cidr": "10.0.0.1/32"},
        "is not a CIDR",
    ),
    ("peer-cidr-garbage", EgressPeer, {"cidr": "ten/8"}, {"cidr": "fd00::/8"}, "is not a CIDR"),
    (
        "peer-except-needs-cidr",
        EgressPeer,
        {"podSelector": {}, "except": ["10.1.0.0/16"]},
        {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
        "except needs a cidr",
    ),
    (
        "peer-except-bad",
        EgressPeer,
        {"cidr": "10.0.0.0/8", "except": ["x"]},
        {"cidr": "10.0.0.0/8"},
        "except[]",
    ),
    (
        "port-range",
        EgressPort,
        {"port": 8080, "endPort": 80},
        {"port": 80, "endPort": 8080},
        "endPort",
    ),
    ("port-range-needs-port", EgressPort, {"endPort": 80}, {"port": 80}, "endPort needs a port"),
    (
        "scope-bad-tool",
        AuthorityScope,
        {"spec": {"tools": {"allow": ["GitHub.pulls"]}}},
        {"spec": {"tools": {"allow": ["github.pulls.*"]}}},
        "allow",
    ),
    (
        "scope-double-starstar",
        AuthorityScope,
        {"spec": {"tools": {"deny": ["github.**.**"]}}},
        {"spec": {"tools": {"deny": ["github.**.admin.**"]}}},
        "'**.**'",
    ),
    (
        "scope-max-ttl",
        AuthorityScope,
        {"spec": {"maxTokenTTLSeconds": 599}},
        {"spec": {"maxTokenTTLSeconds": 600}},
        "maxTokenTTLSeconds",
    ),
    (
        "policy-quorum-above-users",
        ApprovalPolicy,
        {
            "spec": {
                "match": {"actions": ["a"]},
                "approvers": {"users": ["u1", "u2"]},
                "minApprovals": 3,
            }
        },
        {
            "spec": {
                "match": {"actions": ["a"]},
                "approvers": {"users": ["u1", "u2"]},
                "minApprovals": 2,
            }
        },
        "spec.minApprovals is more than the number of approvers.users",
    ),
    (
        "policy-quorum-with-groups",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"users": ["u1"]}, "minApprovals": 2}},
        {
            "spec": {
                "match": {"actions": ["a"]},
                "approvers": {"users": ["u1"], "groups": ["g"]},
                "minApprovals": 2,
            }
        },
        "minApprovals",
    ),
    (
        "policy-min-approvals-zero",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"groups": ["g"]}, "minApprovals": 0}},
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"groups": ["g"]}, "minApprovals": 1}},
        "minApprovals",
    ),
    (
        "policy-no-approvers",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a"]}, "approvers": {}}},
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"groups": ["sre-leads"]}}},
        "spec.approvers: name at least one user or group",
    ),
    (
        "scope-ref-duplicate",
        Agent,
        {**_AGENT, "spec": {"owner": "t", "scopeRefs": [{"name": n} for n in ("a", "b", "a")]}},
        {**_AGENT, "spec": {"owner": "t", "scopeRefs": [{"name": "a"}, {"name": "b"}]}},
        "spec.scopeRefs lists AuthorityScope 'a' more than once; remove the duplicate",
    ),
    (
        "tools-allow-duplicate",
        AuthorityScope,
        {"spec": {"tools": {"allow": ["github.pulls.*", "ci.runs.read", "github.pulls.*"]}}},
        {"spec": {"tools": {"allow": ["github.pulls.*", "ci.runs.read"]}}},
        "spec.tools.allow lists 'github.pulls.*' more than once",
    ),
    (
        "tools-deny-duplicate",
        AuthorityScope,
        {"spec": {"tools": {"deny": ["github.admin.**", "github.admin.**"]}}},
        {"spec": {"tools": {"deny": ["github.admin.**"], "allow": ["github.admin.**"]}}},
        "spec.tools.deny lists 'github.admin.**' more than once",
    ),
    (
        "sensitive-duplicate",
        AuthorityScope,
        {"spec": {"sensitive": ["deploy.production", "deploy.production"]}},
        {"spec": {"sensitive": ["deploy.production", "deploy.staging"]}},
        "spec.sensitive lists 'deploy.production' more than once",
    ),
    (
        "constraint-tools-duplicate",
        AuthorityScope,
        {"spec": {"constraints": [{"tools": ["deploy.*", "deploy.*"], "when": "true"}]}},
        {"spec": {"constraints": [{"tools": ["deploy.*"], "when": "true"}]}},
        "spec.constraints[].tools lists 'deploy.*' more than once",
    ),
    (
        "match-actions-duplicate",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a.b", "a.b"]}, "approvers": {"groups": ["g"]}}},
        {"spec": {"match": {"actions": ["a.b", "a.*"]}, "approvers": {"groups": ["g"]}}},
        "spec.match.actions lists 'a.b' more than once",
    ),
    (
        "match-scopes-duplicate",
        ApprovalPolicy,
        {
            "spec": {
                "match": {"actions": ["a"], "scopes": ["deployer", "deployer"]},
                "approvers": {"groups": ["g"]},
            }
        },
        {
            "spec": {
                "match": {"actions": ["a"], "scopes": ["deployer", "analyst"]},
                "approvers": {"groups": ["g"]},
            }
        },
        "spec.match.scopes lists 'deployer' more than once",
    ),
    (
        "approvers-users-duplicate",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"users": ["alice", "alice"]}}},
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"users": ["alice", "bob"]}}},
        "spec.approvers.users lists 'alice' more than once",
    ),
    (
        # a repeated user must not count twice towards the quorum either
        "approvers-users-duplicate-quorum",
        ApprovalPolicy,
        {
            "spec": {
                "match": {"actions": ["a"]},
                "approvers": {"users": ["alice", "alice"]},
                "minApprovals": 2,
            }
        },
        {
            "spec": {
                "match": {"actions": ["a"]},
                "approvers": {"users": ["alice", "bob"]},
                "minApprovals": 2,
            }
        },
        "spec.approvers.users lists 'alice' more than once",
    ),
    (
        "approvers-groups-duplicate",
        ApprovalPolicy,
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"groups": ["sre", "sre"]}}},
        {"spec": {"match": {"actions": ["a"]}, "approvers": {"users": ["sre"], "groups": ["sre"]}}},
        "spec.approvers.groups lists 'sre' more than once",
    ),
    (
        "request-approvers-duplicate",
        ApprovalRequest,
        {"spec": {**_REQUEST, "approvers": {"groups": ["sre", "sre"]}}},
        {"spec": {**_REQUEST, "approvers": {"groups": ["sre"]}}},
        "spec.approvers.groups lists 'sre' more than once",
    ),
    (
        "request-policies-duplicate",
        ApprovalRequest,
        {"spec": {**_REQUEST, "policies": ["prod-deploys", "prod-deploys"]}},
        {"spec": {**_REQUEST, "policies": ["prod-deploys", "large-refunds"]}},
        "spec.policies lists 'prod-deploys' more than once",
    ),
    (
        "policy-no-actions",
        ApprovalPolicy,
        {"spec": {"match": {"actions": []}, "approvers": {"groups": ["g"]}}},
        {"spec": {"match": {"actions": ["deploy.*"]}, "approvers": {"groups": ["g"]}}},
        "actions",
    ),
]


@pytest.mark.parametrize(
    ("model", "bad", "good", "text"), [v[1:] for v in VALIDATORS], ids=[v[0] for v in VALIDATORS]
)
def test_validator(model: Any, bad: dict[str, Any], good: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(bad)
    assert text in str(caught.value)
    model.model_validate(good)


def test_rule_lists_are_all_named_where_they_are_missing() -> None:
    """Each rule says which of apiGroups, resources and verbs it lacks, at its own index."""
    with pytest.raises(ValidationError) as caught:
        AuthorityScope.parse(
            {
                "spec": {
                    "rules": [
                        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                        {"apiGroups": ["apps"]},
                        {},
                    ]
                }
            }
        )
    errors = {e["loc"]: e["msg"] for e in caught.value.errors()}
    assert set(errors) == {("spec", "rules", 1), ("spec", "rules", 2)}
    assert "resources" in errors["spec", "rules", 1] and "verbs" in errors["spec", "rules", 1]
    assert "apiGroups" not in errors["spec", "rules", 1]
    for name in ("apiGroups", "resources", "verbs"):
        assert f"rules[].{name} must name at least one" in errors["spec", "rules", 2]


def test_duplicates_are_named_with_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Agent.parse({**_AGENT, "spec": {"owner": "t", "scopeRefs": [{"name": "x"}] * 2}})
    (error,) = caught.value.errors()
    assert error["loc"] == ("spec", "scopeRefs")
    assert "spec.scopeRefs lists AuthorityScope 'x' more than once" in error["msg"]
    # the same item twice in different lists is fine: only repeats within one list count
    AuthorityScope.parse(
        {"spec": {"tools": {"allow": ["a.*"], "deny": ["a.*"]}, "sensitive": ["a.*"]}}
    )


# ---------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    "pattern",
    [
        "github",
        "github.pulls.*",
        "github.admin.**",
        "**",
        "*",
        "*.*",
        "**.read",
        "a.**.b.**",
        "x_y-z.0",
    ],
)
def test_valid_patterns(pattern: str) -> None:
    assert pattern_error(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("", "must not be empty"),
        ("GitHub.pulls", "segment 'GitHub'"),
        ("github..pulls", "segment ''"),
        ("github.pulls.", "segment ''"),
        ("github.pu*", "segment 'pu*'"),
        ("***", "segment '***'"),
        ("github.**.**", "'**.**'"),
        ("a b", "segment 'a b'"),
    ],
)
def test_invalid_patterns(pattern: str, why: str) -> None:
    error = pattern_error(pattern)
    assert error is not None and why in error


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("github.pulls.*", "github.pulls.create", True),
        ("github.pulls.*", "github.pulls", False),
        ("github.pulls.*", "github.pulls.review.submit", False),
        ("github.admin.**", "github.admin", True),
        ("github.admin.**", "github.admin.users.delete", True),
        ("github.admin.**", "github.administrators", False),
        ("**", "anything.at.all", True),
        ("**.read", "read", True),
        ("**.read", "ci.runs.read", True),
        ("**.read", "ci.runs.reader", False),
        ("a.**.z", "a.z", True),
        ("a.**.z", "a.b.c.z", True),
        ("*.refund", "payments.refund", True),
        ("*.refund", "refund", False),
        ("deploy.production", "deploy.production", True),
        ("deploy.production", "deploy.staging", False),
    ],
)
def test_matches(pattern: str, action: str, expected: bool) -> None:
    assert matches(pattern, action) is expected


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        ("github.**", "github.pulls.*", True),
        ("github.**", "github.**", True),
        ("github.pulls.*", "github.pulls.create", True),
        ("github.pulls.*", "github.pulls.*", True),
        ("github.pulls.create", "github.pulls.*", False),
        ("github.*", "github.pulls.*", False),
        ("github.*", "github.**", False),
        ("**", "a.**.b", True),
        ("a.**.b", "a.x.y.b", True),
        ("a.**.b", "a.**.c", False),
        ("*.read", "**.read", False),
        ("**.read", "*.read", True),
    ],
)
def test_covers(general: str, specific: str, expected: bool) -> None:
    assert covers(general, specific) is expected


def test_covered_by_any_and_actions() -> None:
    assert covered_by_any(["ci.**", "github.pulls.*"], "github.pulls.merge")
    assert not covered_by_any(["ci.**"], "github.pulls.merge")
    assert is_valid_action("payments.refund") and not is_valid_action("payments.*")


@st.composite
def _instances(draw: st.DrawFn, pattern: str) -> str:
    """A concrete action matched by `pattern`."""
    out: list[str] = []
    for token in pattern.split("."):
        if token == "*":
            out.append(draw(segments))
        elif token == "**":
            out += draw(st.lists(segments, max_size=3))
        else:
            out.append(token)
    return ".".join(out) or draw(segments)


@settings(max_examples=300, deadline=None)
@given(st.data(), tool_patterns(), tool_patterns())
def test_covers_is_sound(data: st.DataObject, general: str, specific: str) -> None:
    """When `general` covers `specific`, every action `specific` matches, `general` matches."""
    action = data.draw(_instances(specific))
    assert matches(specific, action), (specific, action)
    if covers(general, specific):
        assert matches(general, action), (general, specific, action)
    assert covers(specific, specific)


# ---------------------------------------------------------------------------- conditions


def test_set_condition_moves_transition_time_only_on_flip() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    conds = set_condition([], "Ready", "False", "Provisioning", "wait", 1, t0)
    same = set_condition(
        conds, "Ready", "False", "StillProvisioning", "wait more", 2, t0 + timedelta(minutes=1)
    )
    assert same[0].last_transition_time == t0 and same[0].observed_generation == 2
    assert same[0].reason == "StillProvisioning"
    flipped = set_condition(
        same, "Ready", "True", "Provisioned", "ok", 2, t0 + timedelta(minutes=2)
    )
    assert flipped[0].last_transition_time == t0 + timedelta(minutes=2)
    assert conds[0].status == "False"  # the input is not modified
    both = set_condition(flipped, "Expired", "True", "Expired", "", 2, t0)
    assert [c.type for c in both] == ["Ready", "Expired"]
    assert is_true(both, "Ready") and find(both, "Missing") is None
    assert [c.type for c in remove_condition(both, "Ready")] == ["Expired"]


def test_condition_reason_must_be_camel_case() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="reason"):
        set_condition([], "Ready", "True", "not camel case", "", 1, t0)
