from __future__ import annotations

import copy
from typing import Any

import pytest

from agent_identity.admission.resources import validate_resource
from agent_identity.admission.review import Permission
from tests.unit.test_admission_helpers import NOW, agent, registry, review, scope

PROV = {"agentidentity.io/created-by": "alice", "agentidentity.io/last-modified-by": "alice"}

PARENT_SCOPE = scope(
    "parent-scope",
    rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}],
    tools={"allow": ["github.pulls.*", "github.**"], "deny": ["github.admin.**"]},
    sensitive=["deploy.production"],
    network={"egress": [{"to": [{"cidr": "10.20.0.0/16"}], "ports": [{"port": 443}]}]},
    maxTokenTTLSeconds=1800,
)
REG_OBJECTS = [
    PARENT_SCOPE,
    scope("reader", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
    scope(
        "narrow",
        rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        tools={"allow": ["github.pulls.create"], "deny": ["github.admin.**"]},
    ),
    agent("orchestrator", scopes=("parent-scope",)),
    agent("gone", phase="Retired", state="Retired"),
]


def child_with(spec: dict[str, Any]) -> dict[str, Any]:
    objs = [*REG_OBJECTS, scope("child-scope", **spec)]
    reg = registry(*objs)
    body = agent("child", scopes=("child-scope",), parent="orchestrator", phase=None)
    body["metadata"]["annotations"] = dict(PROV)
    return validate_resource(review(body), reg, NOW).__dict__


def with_prov(body: dict[str, Any], who: str = "alice") -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["annotations"] = {
        "agentidentity.io/created-by": who,
        "agentidentity.io/last-modified-by": who,
    }
    return body


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            {"rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}]},
            "RBAC rule delete deployments (apiGroup 'apps') is not granted to the parent",
        ),
        ({"tools": {"allow": ["slack.post"]}}, "tool 'slack.post' is not allowed to the parent"),
        ({"tools": {"allow": ["deploy.production"]}}, "only with an approval"),
        (
            {"tools": {"allow": ["github.**"]}},
            "reaches actions the parent denies ('github.admin.**')",
        ),
        (
            {"network": {"egress": [{"to": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 443}]}]}},
            "network egress",
        ),
        ({"network": {"egress": [{"to": [{"cidr": "10.20.1.0/24"}]}]}}, "network egress"),
        ({"maxTokenTTLSeconds": 3600, "tools": {"allow": ["github.pulls.list"]}}, "token TTL"),
    ],
)
def test_sub_agent_wider_than_parent(spec: dict[str, Any], fragment: str) -> None:
    d = child_with(spec)
    if "token TTL" in fragment:
        # the child's default 900 s is within the parent's 900 s; ask for more explicitly
        objs = [*REG_OBJECTS, scope("child-scope", **spec)]
        body = with_prov(agent("child", scopes=("child-scope",), parent="orchestrator", ttl=3600))
        d = validate_resource(review(body), registry(*objs), NOW).__dict__
    assert not d["allowed"], d
    assert d["reason"] == "WiderThanParent"
    assert 'agent "child" would be wider than its parent "orchestrator"' in d["message"]
    assert fragment in d["message"]
    assert ("Agent", "payments", "orchestrator") in d["confirm"]


def test_sub_agent_within_parent_is_allowed_and_guarded() -> None:
    d = child_with(
        {
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
            "tools": {"allow": ["github.pulls.create"], "deny": ["github.admin.**"]},
            "sensitive": ["deploy.production"],
            "network": {"egress": [{"to": [{"cidr": "10.20.1.0/24"}], "ports": [{"port": 443}]}]},
        }
    )
    assert d["allowed"], d["message"]
    assert d["permissions"] == [Permission("payments", "get", "apps", "deployments")]
    assert d["waiver"] == Permission("payments", "escalate", "agentidentity.io", "authorityscopes")


def test_missing_scope_reference() -> None:
    body = with_prov(agent("bot", scopes=("reader", "nope")))
    d = validate_resource(review(body), registry(*REG_OBJECTS), NOW)
    assert not d.allowed and d.reason == "ScopeNotFound"
    assert (
        'spec.scopeRefs[1]: AuthorityScope "nope" does not exist in namespace "payments"'
        in d.message
    )
    assert ("AuthorityScope", "payments", "nope") in d.confirm


def test_missing_and_retired_parent() -> None:
    d = validate_resource(
        review(with_prov(agent("c", parent="ghost"))), registry(*REG_OBJECTS), NOW
    )
    assert d.reason == "ParentNotFound" and 'Agent "ghost" does not exist' in d.message
    d = validate_resource(review(with_prov(agent("c", parent="gone"))), registry(*REG_OBJECTS), NOW)
    assert d.reason == "ParentRetired"
    d = validate_resource(review(with_prov(agent("c", parent="c"))), registry(*REG_OBJECTS), NOW)
    assert d.reason == "ParentInvalid"


def test_ttl_above_scope_max() -> None:
    objs = [*REG_OBJECTS, scope("short", maxTokenTTLSeconds=600)]
    d = validate_resource(
        review(with_prov(agent("bot", scopes=("short",), ttl=1200))), registry(*objs), NOW
    )
    assert not d.allowed and d.reason == "TokenTTLTooLong"
    assert (
        'spec.token.ttlSeconds 1200 is above maxTokenTTLSeconds 600 of AuthorityScope "short"'
        in d.message
    )
    # the default TTL is capped at injection, not refused
    assert validate_resource(
        review(with_prov(agent("bot", scopes=("short",)))), registry(*objs), NOW
    ).allowed


def _update(old: dict[str, Any], new: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    old, new = with_prov(old), with_prov(new)
    new["metadata"]["annotations"]["agentidentity.io/last-modified-by"] = user
    return review(new, operation="UPDATE", old=old, user=user)


@pytest.mark.parametrize(
    ("old", "new", "ok", "fragment"),
    [
        (agent("a"), agent("a", state="Suspended"), True, None),
        (agent("a", phase="Suspended", state="Suspended"), agent("a"), True, None),
        (agent("a"), agent("a", state="Deprecated", sunset="2027-01-01T00:00:00Z"), True, None),
        (agent("a"), agent("a", state="Retired"), True, None),
        (
            agent("a", phase="Deprecated", state="Deprecated", sunset="2027-01-01T00:00:00Z"),
            agent("a"),
            True,
            None,
        ),
        (
            agent("a", phase="Deprecated", state="Deprecated", sunset="2027-01-01T00:00:00Z"),
            agent("a", state="Suspended"),
            False,
            "cannot go from Deprecated to Suspended; from Deprecated it can go to Active or "
            "Retired",
        ),
        (agent("a", phase="Retired", state="Retired"), agent("a"), False, "Retired is terminal"),
        # retired by expiry: editing expiresAt does not revive it
        (
            agent("a", expires="2026-11-01T00:00:00Z"),
            agent("a", expires="2027-11-01T00:00:00Z"),
            False,
            "its expiresAt passed",
        ),
        (
            agent("a"),
            agent("a", state="Deprecated", sunset="2026-01-01T00:00:00Z"),
            False,
            "in the past",
        ),
    ],
)
def test_lifecycle_transitions(old: dict, new: dict, ok: bool, fragment: str | None) -> None:
    d = validate_resource(_update(old, new), registry(*REG_OBJECTS), NOW)
    assert d.allowed is ok, d.message
    if fragment:
        assert d.reason == "IllegalTransition" and fragment in d.message


def test_metadata_only_update_is_never_blocked() -> None:
    old = with_prov(agent("c", parent="ghost", scopes=("nope",)))
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["agentidentity.io/finalizer"]
    d = validate_resource(
        review(new, operation="UPDATE", old=old, user="system:op"), registry(), NOW
    )
    assert d.allowed


def test_binding_only_new_scopes_is_guarded() -> None:
    old = agent("bot", scopes=("reader",))
    new = agent("bot", scopes=("reader", "narrow"))
    d = validate_resource(_update(old, new), registry(*REG_OBJECTS), NOW)
    assert d.allowed and d.permissions == [Permission("payments", "get", "apps", "deployments")]
    assert "binding agent 'bot' to AuthorityScope 'narrow'" in d.guarded


def test_scope_create_and_widen_need_permissions() -> None:
    s = with_prov(
        scope(
            "s", rules=[{"apiGroups": [""], "resources": ["secrets", "pods/log"], "verbs": ["get"]}]
        )
    )
    d = validate_resource(review(s), registry(), NOW)
    assert d.allowed and d.permissions == [
        Permission("payments", "get", "", "secrets"),
        Permission("payments", "get", "", "pods", "log"),
    ]
    wider = copy.deepcopy(s)
    wider["spec"]["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    d = validate_resource(review(wider, operation="UPDATE", old=s), registry(), NOW)
    assert d.permissions == [Permission("payments", "list", "", "secrets")]
    narrower = copy.deepcopy(s)
    narrower["spec"]["rules"][0]["resources"] = ["secrets"]
    d = validate_resource(review(narrower, operation="UPDATE", old=s), registry(), NOW)
    assert d.allowed and not d.permissions


def test_widening_a_childs_scope_beyond_its_parent_is_denied() -> None:
    child_scope = scope("child-scope", tools={"allow": ["github.pulls.list"]})
    objs = [
        *REG_OBJECTS,
        child_scope,
        agent("child", scopes=("child-scope",), parent="orchestrator"),
    ]
    wider = with_prov(scope("child-scope", tools={"allow": ["slack.post"]}))
    d = validate_resource(
        review(wider, operation="UPDATE", old=with_prov(child_scope)), registry(*objs), NOW
    )
    assert not d.allowed and d.reason == "WiderThanParent"
    assert 'would make agent "child" wider than its parent "orchestrator"' in d.message


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            scope(
                "s",
                constraints=[
                    {"tools": ["a.b"], "when": "true"},
                    {"tools": ["a.c"], "when": "nope.x == 1"},
                ],
            ),
            "spec.constraints[1].when",
        ),
        (
            {
                "apiVersion": "agentidentity.io/v1alpha1",
                "kind": "ApprovalPolicy",
                "metadata": {"name": "p", "namespace": "payments"},
                "spec": {
                    "match": {"actions": ["a.b"], "when": "1 +"},
                    "approvers": {"users": ["x"]},
                },
            },
            "spec.match.when",
        ),
    ],
)
def test_cel_expressions_are_compiled(body: dict, path: str) -> None:
    d = validate_resource(review(with_prov(body)), registry(), NOW)
    assert not d.allowed and d.reason == "InvalidExpression" and d.message.startswith(path + ":")


def test_hand_set_provenance_fails_validation() -> None:
    body = with_prov(agent("bot"), who="mallory-says-alice")
    d = validate_resource(review(body, user="mallory"), registry(), NOW)
    assert not d.allowed and d.reason == "ProvenanceSetByHand"
    assert "agentidentity.io/created-by" in d.message


def test_a_parent_cannot_narrow_below_its_sub_agents() -> None:
    child_scope = scope(
        "child-scope",
        rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        tools={"allow": ["github.pulls.create"]},
    )
    child = agent("child", scopes=("child-scope",), parent="orchestrator")
    reg = registry(*REG_OBJECTS, child_scope, child)
    old = with_prov(agent("orchestrator", scopes=("parent-scope",)))
    # The orchestrator drops parent-scope for "reader" (configmaps only): its sub-agent
    # would keep deployments and github.pulls.create, which the parent no longer has.
    new = with_prov(agent("orchestrator", scopes=("reader",)))
    d = validate_resource(review(new, operation="UPDATE", old=old), reg, NOW)
    assert not d.allowed and d.reason == "WiderThanParent", d.message
    assert 'would leave its sub-agent "child" wider than it' in d.message
    assert "narrow or retire the sub-agent first" in d.message
    assert ("Agent", "payments", "child") in d.confirm
    # A token TTL below the child's is refused the same way.
    short = with_prov(agent("orchestrator", scopes=("parent-scope",), ttl=600))
    d = validate_resource(review(short, operation="UPDATE", old=old), reg, NOW)
    assert not d.allowed and "token TTL" in d.message, d.message
    # Once the child is retired, the parent may narrow.
    retired = agent("child", scopes=("child-scope",), parent="orchestrator", phase="Retired")
    retired["spec"]["lifecycle"]["state"] = "Retired"
    reg = registry(*REG_OBJECTS, child_scope, retired)
    d = validate_resource(review(new, operation="UPDATE", old=old), reg, NOW)
    assert d.allowed, d.message
