"""Deterministic, collision-free names of an Agent's children.

Agent names are DNS-1123 labels of at most 63 characters (a CRD rule), so a
fixed prefix keeps every child name a valid DNS-1123 subdomain (<= 253) and
maps distinct agents to distinct names; the prefix also keeps agents away
from ServiceAccounts people create themselves (``default`` and the like).
"""

from __future__ import annotations

PREFIX = "agent-"


def service_account_name(agent_name: str) -> str:
    return PREFIX + agent_name


def role_name(agent_name: str) -> str:
    return PREFIX + agent_name


def role_binding_name(agent_name: str) -> str:
    return PREFIX + agent_name


def network_policy_name(agent_name: str) -> str:
    return PREFIX + agent_name


def agent_name_from_service_account(sa_name: str) -> str | None:
    """The agent a ServiceAccount name would belong to (ownership is checked elsewhere)."""
    return (
        sa_name[len(PREFIX) :]
        if sa_name.startswith(PREFIX) and len(sa_name) > len(PREFIX)
        else None
    )
