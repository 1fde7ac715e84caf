"""The Agent's NetworkPolicy: default-deny egress plus DNS, the decision API and the scopes' egress.

Retired agents (and agents refused for a missing owner or scope) get deny-all
egress: the policy selects the agent's pods and allows nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from agent_identity.api import Agent, AuthorityScope, EgressPeer, EgressRule, LabelSelector
from agent_identity.api.common import AGENT_LABEL
from agent_identity.identity.meta import child_metadata
from agent_identity.identity.names import network_policy_name

DECISION_API_NAMESPACE = "agent-identity-system"
DECISION_API_LABELS: Mapping[str, str] = {"app.kubernetes.io/name": "agent-identity-admission"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server
DNS_APPS = ("kube-dns", "coredns")


def dns_rule() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
                "podSelector": {
                    "matchExpressions": [
                        {"key": "k8s-app", "operator": "In", "values": list(DNS_APPS)}
                    ]
                },
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }


def decision_api_rule(namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """Agents must always be able to ask the decision API, whatever their scopes say."""
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
                "podSelector": {"matchLabels": dict(sorted(labels.items()))},
            }
        ]
    }


def _selector(sel: LabelSelector) -> dict[str, Any]:
    return sel.to_wire()


def _peer(peer: EgressPeer) -> dict[str, Any]:
    if peer.cidr is not None:
        block: dict[str, Any] = {"cidr": peer.cidr}
        if peer.except_:
            block["except"] = sorted(peer.except_)
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def _rule(rule: EgressRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.to:
        out["to"] = [_peer(p) for p in rule.to]
    if rule.ports:
        out["ports"] = [p.to_wire() for p in rule.ports]
    return out


def scope_egress(scopes: Iterable[AuthorityScope]) -> list[dict[str, Any]]:
    """The scopes' egress rules as NetworkPolicy rules, de-duplicated, in a stable order."""
    unique: dict[str, dict[str, Any]] = {}
    for scope in scopes:
        for rule in scope.spec.network.egress:
            wire = _rule(rule)
            unique[json.dumps(wire, sort_keys=True)] = wire
    return [unique[k] for k in sorted(unique)]


def network_policy(
    agent: Agent,
    scopes: Iterable[AuthorityScope],
    *,
    deny_all: bool = False,
    decision_namespace: str = DECISION_API_NAMESPACE,
    decision_labels: Mapping[str, str] = DECISION_API_LABELS,
) -> dict[str, Any]:
    """The desired NetworkPolicy of the agent's pods (``deny_all`` for Retired agents)."""
    egress: list[dict[str, Any]] = (
        []
        if deny_all
        else [
            dns_rule(),
            decision_api_rule(decision_namespace, decision_labels),
            *scope_egress(scopes),
        ]
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(agent, network_policy_name(agent.metadata.name)),
        "spec": {
            "podSelector": {"matchLabels": {AGENT_LABEL: agent.metadata.name}},
            # Egress only: ingress to agents is the application's business.
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
