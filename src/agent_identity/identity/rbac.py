"""The Agent's Role (union of its scopes' rules) and the RoleBinding to its ServiceAccount."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agent_identity.api import Agent, AuthorityScope, PolicyRule
from agent_identity.identity.meta import child_metadata
from agent_identity.identity.names import role_binding_name, role_name, service_account_name

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"


def _normalise(rule: PolicyRule) -> dict[str, Any]:
    """A rule with sorted, de-duplicated lists: equal grants get equal dicts."""
    out: dict[str, Any] = {
        "apiGroups": sorted(set(rule.api_groups)),
        "resources": sorted(set(rule.resources)),
        "verbs": sorted(set(rule.verbs)),
    }
    if rule.resource_names:
        out["resourceNames"] = sorted(set(rule.resource_names))
    return out


def union_rules(scopes: Iterable[AuthorityScope]) -> list[dict[str, Any]]:
    """The scopes' rules, normalised, de-duplicated and in a deterministic order."""
    unique: dict[str, dict[str, Any]] = {}
    for scope in scopes:
        for rule in scope.spec.rules:
            norm = _normalise(rule)
            unique[json.dumps(norm, sort_keys=True)] = norm
    return [unique[k] for k in sorted(unique)]


def role(agent: Agent, scopes: Iterable[AuthorityScope]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": child_metadata(agent, role_name(agent.metadata.name)),
        "rules": union_rules(scopes),
    }


def role_binding(agent: Agent) -> dict[str, Any]:
    name = agent.metadata.name
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": child_metadata(agent, role_binding_name(name)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_name(name),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account_name(name),
                "namespace": agent.metadata.namespace,
            }
        ],
    }
