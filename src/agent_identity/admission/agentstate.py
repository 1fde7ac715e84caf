"""What admission needs to know about an Agent's lifecycle, read from the operator's status.

The operator owns the state machine (``lifecycle.py``); admission reads its
verdict (``status.phase``) and adds only the clock checks that must hold even
before the operator has caught up (an ``expiresAt`` or ``sunsetAt`` just passed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from agent_identity.api import Agent, Phase
from agent_identity.api.common import LifecycleState


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AgentState:
    phase: Phase | None  # None: the operator has not written status yet
    since: datetime | None
    why: str  # "" or a short explanation (expired at ..., sunset at ...)


def effective_state(agent: Agent, now: datetime) -> AgentState:
    """The phase that admission acts on, with the clock applied on top of status."""
    life = agent.spec.lifecycle
    phase = agent.status.phase
    if life.expires_at is not None and _utc(life.expires_at) <= now and phase != Phase.RETIRED:
        return AgentState(Phase.RETIRED, life.expires_at, "expired")
    if (
        life.state == LifecycleState.DEPRECATED
        and life.sunset_at is not None
        and _utc(life.sunset_at) <= now
        and phase != Phase.RETIRED
    ):
        return AgentState(Phase.RETIRED, life.sunset_at, "sunset")
    return AgentState(phase, _since(agent, phase), "")


def _since(agent: Agent, phase: Phase | None) -> datetime | None:
    if phase is None:
        return None
    for entry in reversed(agent.status.history):
        if entry.to == phase.value:
            return entry.at
    for cond in agent.status.conditions:
        if cond.type == "Ready":
            return cond.last_transition_time
    return agent.metadata.creation_timestamp
