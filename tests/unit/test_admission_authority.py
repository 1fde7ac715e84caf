from __future__ import annotations

import pytest

from agent_identity.admission.authority import (
    egress_rule_covers,
    expand_rule,
    overlaps,
    rule_covers,
)
from agent_identity.api import EgressRule, PolicyRule


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("github.**", "github.admin.users", True),
        ("github.admin.**", "github.*", True),
        ("github.pulls.*", "github.admin.**", False),
        ("**", "x", True),
        ("a.*.c", "a.b.*", True),
        ("a.b", "a.c", False),
        ("a.**.z", "a.b.c", False),
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected and overlaps(b, a) is expected


def test_rule_covers_wildcards_and_names() -> None:
    star = PolicyRule(api_groups=["*"], resources=["*"], verbs=["*"])
    assert rule_covers(star, ("apps", "deployments", "delete", ""))
    sub = PolicyRule(api_groups=[""], resources=["*/log"], verbs=["get"])
    assert rule_covers(sub, ("", "pods/log", "get", ""))
    assert not rule_covers(sub, ("", "pods", "get", ""))
    named = PolicyRule(
        api_groups=[""], resources=["configmaps"], verbs=["get"], resource_names=["a"]
    )
    assert rule_covers(named, ("", "configmaps", "get", "a"))
    assert not rule_covers(named, ("", "configmaps", "get", ""))  # unnamed means every name


def test_rule_groups_are_taken_as_written() -> None:
    # apiGroups is never empty (the model and the CRD require one): "" is the core group and
    # is never implied by another group.
    both = PolicyRule(api_groups=["", "apps"], resources=["deployments"], verbs=["get"])
    assert expand_rule(both) == [
        ("", "deployments", "get", ""),
        ("apps", "deployments", "get", ""),
    ]
    apps = PolicyRule(api_groups=["apps"], resources=["deployments"], verbs=["get"])
    assert expand_rule(apps) == [("apps", "deployments", "get", "")]
    assert not rule_covers(apps, ("", "deployments", "get", ""))
    assert rule_covers(both, ("", "deployments", "get", ""))


def test_egress_cover() -> None:
    parent = EgressRule.model_validate(
        {
            "to": [{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}],
            "ports": [{"port": 8000, "endPort": 9000}],
        }
    )
    ok = EgressRule.model_validate({"to": [{"cidr": "10.1.0.0/16"}], "ports": [{"port": 8443}]})
    assert egress_rule_covers(parent, ok)
    hole = EgressRule.model_validate({"to": [{"cidr": "10.9.1.0/24"}], "ports": [{"port": 8443}]})
    assert not egress_rule_covers(parent, hole)
    any_port = EgressRule.model_validate({"to": [{"cidr": "10.1.0.0/16"}]})
    assert not egress_rule_covers(parent, any_port)
    udp = EgressRule.model_validate(
        {"to": [{"cidr": "10.1.0.0/16"}], "ports": [{"port": 8443, "protocol": "UDP"}]}
    )
    assert not egress_rule_covers(parent, udp)
