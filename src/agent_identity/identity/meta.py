"""Metadata every child of an Agent carries: its name, our labels, the Agent as controller owner."""

from __future__ import annotations

from typing import Any

from agent_identity.api import Agent
from agent_identity.api.common import AGENT_LABEL

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "agent-identity"


def child_labels(agent: Agent) -> dict[str, str]:
    """Labels of every child: which agent it belongs to, and who manages it."""
    return {AGENT_LABEL: agent.metadata.name, MANAGED_BY_LABEL: MANAGED_BY}


def owner_reference(agent: Agent) -> dict[str, Any]:
    """The Agent as controlling owner: the garbage collector deletes the child with the Agent.

    ``blockOwnerDeletion`` makes a foreground deletion of the Agent wait for its children.
    """
    if not agent.metadata.uid:
        raise ValueError(f"Agent {agent.metadata.name!r} has no metadata.uid (not stored yet?)")
    return {
        "apiVersion": agent.api_version,
        "kind": agent.kind,
        "name": agent.metadata.name,
        "uid": agent.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(agent: Agent, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": agent.metadata.namespace,
        "labels": child_labels(agent),
        "ownerReferences": [owner_reference(agent)],
    }
