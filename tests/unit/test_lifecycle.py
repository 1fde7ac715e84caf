"""The lifecycle state machine: every requested state x phase x deadline; random sequences."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_identity.api import LifecycleState, Phase
from agent_identity.api.agent import HISTORY_LIMIT
from agent_identity.api.common import LAST_MODIFIED_BY_ANNOTATION, OPERATOR_ACTOR
from agent_identity.lifecycle import (
    Child,
    Desired,
    LifecycleResult,
    Observed,
    desired_children,
    evaluate,
    parse_agent,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PAST = NOW - timedelta(hours=1)
FUTURE = NOW + timedelta(hours=1)


def body(
    state: str = "Active",
    *,
    phase: str | None = None,
    expires: datetime | None = None,
    sunset: datetime | None = None,
    owner: str | None = "team-payments",
    actor: str | None = "alice@example.com",
    history: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    lifecycle: dict[str, Any] = {"state": state}
    if expires:
        lifecycle["expiresAt"] = expires.isoformat()
    if sunset:
        lifecycle["sunsetAt"] = sunset.isoformat()
    spec: dict[str, Any] = {"lifecycle": lifecycle, "scopeRefs": [{"name": "deployer"}]}
    if owner is not None:
        spec["owner"] = owner
    meta: dict[str, Any] = {"name": "bot", "namespace": "ns", "uid": "u-1", "generation": 3}
    if actor:
        meta["annotations"] = {LAST_MODIFIED_BY_ANNOTATION: actor}
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if history:
        status["history"] = history
    if conditions:
        status["conditions"] = conditions
    return {"metadata": meta, "spec": spec, "status": status}


def run(b: dict[str, Any], now: datetime = NOW, **observed: Any) -> LifecycleResult:
    """One reconcile: the shell applies exactly the desired children, then evaluates."""
    parsed = parse_agent(b)
    assert parsed.agent is not None
    obs = Observed(owner_error=parsed.owner_error, **observed)
    desired = desired_children(parsed.agent, obs, now)
    return evaluate(
        parsed.agent, Observed(desired.present(), obs.missing_scopes, obs.owner_error), now
    )


def cond(result: LifecycleResult, type_: str) -> Any:
    return next((c for c in result.conditions if c.type == type_), None)


def deadline_case(state: str, deadline: str) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if deadline == "expired":
        kw["expires"] = PAST
    elif deadline == "expires-later":
        kw["expires"] = FUTURE
    if state == "Deprecated":
        kw["sunset"] = PAST if deadline == "sunset" else FUTURE
    elif state == "Retired" and deadline == "sunset":
        kw["sunset"] = PAST
    return kw


STATES = [s.value for s in LifecycleState]
PHASES = [None, *(p.value for p in Phase)]
DEADLINES = ["none", "expired", "expires-later", "sunset"]


# sunsetAt is only valid with Deprecated or Retired (a schema rule), so no other "sunset" case.
CASES = [
    c
    for c in itertools.product(STATES, PHASES, DEADLINES)
    if c[2] != "sunset" or c[0] in ("Deprecated", "Retired")
]


@pytest.mark.parametrize(("state", "prev", "deadline"), CASES)
def test_every_state_phase_and_deadline(state: str, prev: str | None, deadline: str) -> None:
    b = body(state, phase=prev, **deadline_case(state, deadline))
    result = run(b)
    by_time = deadline == "expired" or (deadline == "sunset" and state == "Deprecated")
    expected = Phase.RETIRED if prev == "Retired" or by_time else Phase(state)
    assert result.phase == expected

    ready = cond(result, "Ready")
    assert (ready.status == "True") == (expected in (Phase.ACTIVE, Phase.DEPRECATED))
    assert all(c.observed_generation == 3 for c in result.conditions)
    assert result.converged

    d = result.desired
    if expected == Phase.RETIRED:
        assert d == Desired(False, False, False, "deny-all")
        assert ready.reason in ("Retired", "Expired", "Sunset")
        assert cond(result, "IdentityProvisioned").status == "False"
        assert cond(result, "NetworkIsolated").reason == "DenyAll"
        assert result.deadline is None and result.requeue_after is None
    elif expected == Phase.SUSPENDED:
        assert d == Desired(True, True, False, "restricted")
        assert cond(result, "AuthorityBound").status == "False"
    else:
        assert d == Desired(True, True, True, "restricted")
        assert cond(result, "AuthorityBound").status == "True"
    assert (cond(result, "Deprecated") is not None) == (expected == Phase.DEPRECATED)
    if prev != "Retired":
        assert (cond(result, "Expired") is not None) == by_time

    if expected.value != prev:
        assert result.entry is not None and result.event is not None
        assert result.entry.to == expected.value and result.entry.from_ == prev
        assert result.history[-1] == result.entry
        timed = expected == Phase.RETIRED and result.entry.reason in ("Expired", "Sunset")
        assert result.entry.actor == (OPERATOR_ACTOR if timed else "alice@example.com")
    else:
        assert result.entry is None and result.event is None and result.history == []

    if expected != Phase.RETIRED and (deadline == "expires-later" or state == "Deprecated"):
        assert result.deadline == FUTURE
        assert result.requeue_after == timedelta(hours=1)


def test_retired_by_expiry_cannot_be_revived_by_editing_expires_at() -> None:
    first = run(body("Active", phase="Active", expires=PAST))
    assert first.phase == Phase.RETIRED and first.entry is not None
    assert first.entry.reason == "Expired" and first.entry.actor == OPERATOR_ACTOR
    later = body("Active", phase="Retired", expires=FUTURE)
    later["status"]["conditions"] = [c.to_wire() for c in first.conditions]
    again = run(later, NOW + timedelta(minutes=5))
    assert again.phase == Phase.RETIRED and again.entry is None
    assert cond(again, "Expired").reason == "Expired"  # the tombstone keeps why


def test_no_owner_is_never_active() -> None:
    for owner in (None, "", "not valid!"):
        result = run(body("Active", owner=owner))
        assert result.phase == Phase.PENDING
        ready = cond(result, "Ready")
        assert ready.status == "False" and ready.reason == "OwnerMissing"
        assert "spec.owner" in ready.message
        assert cond(result, "Stalled").status == "True"
        assert result.desired == Desired(False, False, False, "deny-all")


def test_missing_scope_is_pending_and_named() -> None:
    result = run(body("Active"), missing_scopes=("deployer",))
    assert result.phase == Phase.PENDING
    ready = cond(result, "Ready")
    assert ready.reason == "ScopeNotFound" and "deployer" in ready.message
    assert result.desired == Desired(True, False, False, "deny-all")
    # Waiting for another object (kstatus Reconciling), not a spec error (Stalled).
    reconciling = cond(result, "Reconciling")
    assert reconciling.status == "True" and reconciling.reason == "ScopeNotFound"
    assert cond(result, "Stalled") is None
    assert result.event is not None and result.event.type == "Warning"


def test_not_yet_provisioned_is_pending_and_reconciling() -> None:
    parsed = parse_agent(body("Active"))
    assert parsed.agent is not None
    result = evaluate(parsed.agent, Observed(frozenset({Child.SERVICE_ACCOUNT})), NOW)
    assert result.phase == Phase.PENDING and not result.converged
    assert cond(result, "Reconciling").status == "True"
    assert cond(result, "Ready").reason == "Provisioning"


def test_last_transition_time_moves_only_on_flips() -> None:
    first = run(body("Active"))
    b = body("Active", phase="Active")
    b["status"]["conditions"] = [c.to_wire() for c in first.conditions]
    second = run(b, NOW + timedelta(minutes=10))
    assert [c.to_wire() for c in second.conditions] == [c.to_wire() for c in first.conditions]
    b2 = body("Suspended", phase="Active")
    b2["status"]["conditions"] = [c.to_wire() for c in first.conditions]
    third = run(b2, NOW + timedelta(minutes=20))
    assert cond(third, "Ready").last_transition_time == NOW + timedelta(minutes=20)
    assert cond(third, "IdentityProvisioned").last_transition_time == NOW


def test_unknown_actor_without_provenance() -> None:
    result = run(body("Suspended", phase="Active", actor=None))
    assert result.entry is not None and result.entry.actor == "unknown"


def test_invalid_spec_is_reported_not_parsed() -> None:
    b = body("Active")
    b["spec"]["token"] = {"ttlSeconds": 5}
    parsed = parse_agent(b)
    assert parsed.agent is None and parsed.error and "ttlSeconds" in parsed.error


# --- random sequences -------------------------------------------------------------------

steps = st.tuples(
    st.sampled_from(STATES),
    st.sampled_from(["none", "expired", "expires-later", "sunset"]),
    st.integers(0, 3600),  # seconds that pass
    st.booleans(),  # a scope missing
)


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=1, max_size=40))
def test_random_sequences(seq: list[tuple[str, str, int, bool]]) -> None:
    status: dict[str, Any] = {}
    now = NOW
    retired = False
    for state, deadline, elapsed, missing in seq:
        now += timedelta(seconds=elapsed)
        if deadline == "sunset" and state not in ("Deprecated", "Retired"):
            deadline = "none"
        kw = deadline_case(state, deadline)
        kw = {k: v - NOW + now for k, v in kw.items()}  # relative to the current time
        b = body(state, **kw)
        b["status"] = status
        result = run(b, now, missing_scopes=("deployer",) if missing else ())
        if retired:
            assert result.phase == Phase.RETIRED  # Retired is never left
        retired = result.phase == Phase.RETIRED
        # history ordered, bounded, and its last entry is the current phase
        assert len(result.history) <= HISTORY_LIMIT
        times = [h.at for h in result.history]
        assert times == sorted(times)
        if result.history:
            assert result.history[-1].to == result.phase.value
        for a, b_ in itertools.pairwise(result.history):
            assert a.to == b_.from_
        # conditions consistent with phase
        ready = cond(result, "Ready")
        assert (ready.status == "True") == (result.phase in (Phase.ACTIVE, Phase.DEPRECATED))
        assert (cond(result, "Deprecated") is not None) == (result.phase == Phase.DEPRECATED)
        stalled = cond(result, "Stalled")
        assert (stalled is not None) == (
            result.phase == Phase.PENDING and ready.reason != "ScopeNotFound"
        )
        if result.phase == Phase.PENDING and ready.reason == "ScopeNotFound":
            assert cond(result, "Reconciling").reason == "ScopeNotFound"
        types = [c.type for c in result.conditions]
        assert len(types) == len(set(types))
        status = {
            "phase": result.phase.value,
            "conditions": [c.to_wire() for c in result.conditions],
            "history": [h.to_wire() for h in result.history],
        }


def test_overdue_means_still_admitting_a_grace_after_the_deadline() -> None:
    from agent_identity.lifecycle import OVERDUE_GRACE, is_overdue

    deadline = NOW
    late = NOW + OVERDUE_GRACE
    assert is_overdue(Phase.ACTIVE, deadline, late)
    assert is_overdue(Phase.DEPRECATED, deadline, late)
    assert not is_overdue(Phase.ACTIVE, deadline, late - timedelta(seconds=1))  # within grace
    assert not is_overdue(Phase.ACTIVE, None, late)  # no deadline at all
    for phase in (Phase.RETIRED, Phase.SUSPENDED, Phase.PENDING, None):
        assert not is_overdue(phase, deadline, late), phase
