"""The pure builders of an Agent's children."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_identity.api import Agent, AuthorityScope
from agent_identity.api.common import AGENT_LABEL, TOKEN_MOUNT_PATH
from agent_identity.identity import (
    effective_authority,
    network_policy,
    role,
    role_binding,
    service_account,
    token_ttl,
    token_volume,
)
from agent_identity.identity.meta import MANAGED_BY, MANAGED_BY_LABEL
from tests.fixtures.crds import agent_bodies, scope_bodies

UID = "0b9c2f7e-1111-4222-8333-444455556666"


def agent(name: str = "release-bot", **spec: Any) -> Agent:
    body = {
        "metadata": {"name": name, "namespace": "payments", "uid": UID, "generation": 1},
        "spec": {"owner": "team-payments", **spec},
    }
    return Agent.parse(body)


def scope(name: str, **spec: Any) -> AuthorityScope:
    return AuthorityScope.parse({"metadata": {"name": name, "namespace": "payments"}, "spec": spec})


DEPLOYER = scope(
    "deployer",
    rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch", "get", "get"]}],
    tools={"allow": ["github.pulls.*"], "deny": ["github.admin.**"]},
    sensitive=["deploy.production"],
    network={"egress": [{"to": [{"cidr": "10.20.0.0/16"}], "ports": [{"port": 443}]}]},
    maxTokenTTLSeconds=1200,
)
READER = scope(
    "reader",
    rules=[
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ],
    tools={"allow": ["ci.runs.read", "github.pulls.*"]},
)


def check_child(obj: dict[str, Any], a: Agent, kind: str) -> None:
    meta = obj["metadata"]
    assert obj["kind"] == kind
    assert meta["name"] == "agent-" + a.metadata.name
    assert meta["namespace"] == "payments"
    assert meta["labels"] == {AGENT_LABEL: a.metadata.name, MANAGED_BY_LABEL: MANAGED_BY}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "agentidentity.io/v1alpha1",
            "kind": "Agent",
            "name": a.metadata.name,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_service_account_disables_automount() -> None:
    a = agent()
    sa = service_account(a)
    check_child(sa, a, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_role_is_deduplicated_sorted_union() -> None:
    a = agent()
    r = role(a, [DEPLOYER, READER])
    check_child(r, a, "Role")
    assert r["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
    ]
    assert role(a, [READER, DEPLOYER]) == r  # order of scopes does not matter
    assert role(a, [])["rules"] == []


def test_role_binding_binds_the_agents_service_account() -> None:
    a = agent()
    rb = role_binding(a)
    check_child(rb, a, "RoleBinding")
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "agent-release-bot",
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "agent-release-bot", "namespace": "payments"}
    ]


def test_network_policy_allows_dns_decision_api_and_scope_egress() -> None:
    a = agent()
    np = network_policy(a, [DEPLOYER, READER])
    check_child(np, a, "NetworkPolicy")
    spec = np["spec"]
    assert spec["policyTypes"] == ["Egress"]
    assert spec["podSelector"] == {"matchLabels": {AGENT_LABEL: "release-bot"}}
    dns, decisions, *scoped = spec["egress"]
    assert {"port": 53, "protocol": "UDP"} in dns["ports"]
    assert {"port": 53, "protocol": "TCP"} in dns["ports"]
    assert dns["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    assert decisions["to"] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "agent-identity-system"}
            },
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "agent-identity-admission"}},
        }
    ]
    assert scoped == [
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    ]


def test_network_policy_parameters_and_deny_all() -> None:
    a = agent()
    np = network_policy(a, [DEPLOYER], decision_namespace="ops", decision_labels={"app": "x"})
    assert np["spec"]["egress"][1]["to"][0]["podSelector"] == {"matchLabels": {"app": "x"}}
    denied = network_policy(a, [DEPLOYER], deny_all=True)
    assert denied["spec"]["egress"] == []
    assert denied["spec"]["policyTypes"] == ["Egress"]


def test_token_volume_ttl_is_capped_by_scopes_and_mounted_read_only() -> None:
    a = agent(token={"ttlSeconds": 3000, "audience": "agentidentity.io"})
    volume, mount = token_volume(a, [DEPLOYER, READER])
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert source == {"audience": "agentidentity.io", "expirationSeconds": 1200, "path": "token"}
    assert mount == {"name": volume["name"], "mountPath": TOKEN_MOUNT_PATH, "readOnly": True}
    assert token_ttl(agent(token={"ttlSeconds": 700}), [DEPLOYER]) == 700
    assert token_ttl(agent(), []) == 900


def test_deprecated_agents_get_the_shortest_ttl() -> None:
    a = agent(
        lifecycle={"state": "Deprecated", "sunsetAt": "2030-01-01T00:00:00Z"},
        token={"ttlSeconds": 3000},
    )
    volume, _ = token_volume(a, [READER])
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 600


def test_effective_authority_digest_is_order_independent_and_changes_with_authority() -> None:
    one = effective_authority([DEPLOYER, READER])
    assert one == effective_authority([READER, DEPLOYER])
    assert one.digest.startswith("sha256:") and len(one.digest) == len("sha256:") + 64
    assert one.scopes == ["deployer", "reader"]
    assert one.max_token_ttl_seconds == 1200
    assert one.summary == (
        "2 rules, 2 allowed, 1 denied, 1 sensitive, 0 constraints, 1 egress rule from 2 scopes"
    )
    assert effective_authority([READER]).digest != one.digest
    assert effective_authority([]).summary.startswith("0 rules")


@settings(max_examples=60, deadline=None)
@given(agent_bodies(), st.lists(scope_bodies(), max_size=3))
def test_builders_hold_for_any_valid_agent_and_scopes(
    body: dict[str, Any], scope_list: list[dict[str, Any]]
) -> None:
    body["metadata"] |= {"namespace": "ns", "uid": UID}
    a = Agent.parse(body)
    scopes = [AuthorityScope.parse(s) for s in scope_list]
    r = role(a, scopes)
    keys = [json.dumps(x, sort_keys=True) for x in r["rules"]]
    assert keys == sorted(keys)  # deterministic order
    assert len({repr(x) for x in r["rules"]}) == len(r["rules"])  # no duplicates
    assert role(a, list(reversed(scopes))) == r
    np = network_policy(a, scopes)
    assert np["spec"]["egress"][:1] and np == network_policy(a, list(reversed(scopes)))
    volume, _ = token_volume(a, scopes)
    ttl = volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
    assert 600 <= ttl <= a.spec.token.ttl_seconds
    assert all(ttl <= s.spec.max_token_ttl_seconds for s in scopes)
    assert effective_authority(scopes) == effective_authority(list(reversed(scopes)))
