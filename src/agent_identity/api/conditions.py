"""Conditions helper: set a condition the way the Kubernetes API conventions say.

``lastTransitionTime`` moves only when ``status`` flips; ``observedGeneration``
is set on every condition; the list keeps a stable order so that an unchanged
status serialises to the same bytes (and we can skip the write).
"""

from __future__ import annotations

from datetime import datetime

from agent_identity.api.common import Condition, ConditionStatus


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with ``type_`` set; the input is not modified."""
    previous = find(conditions, type_)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    if previous is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def remove_condition(conditions: list[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]
