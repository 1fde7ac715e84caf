"""The Agent's ServiceAccount: its Kubernetes identity (deleting it revokes every token)."""

from __future__ import annotations

from typing import Any

from agent_identity.api import Agent
from agent_identity.identity.meta import child_metadata
from agent_identity.identity.names import service_account_name


def service_account(agent: Agent) -> dict[str, Any]:
    """The desired ServiceAccount; tokens reach pods only through our projected volume."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(agent, service_account_name(agent.metadata.name)),
        # The legacy automount would give every container a token with the API server as
        # audience; agents get an audience-bound, short-lived one instead (token.py).
        "automountServiceAccountToken": False,
    }
