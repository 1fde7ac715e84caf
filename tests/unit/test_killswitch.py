"""The kill switch's pure part: which pods of an agent the operator deletes (lifecycle.py)."""

from __future__ import annotations

from typing import Any

import pytest

from agent_identity.api import HistoryEntry, Phase
from agent_identity.lifecycle import (
    KILL_GRACE_SECONDS,
    KILL_PHASES,
    pods_to_delete,
    resumed,
    workloads_to_nudge,
)


def pod(
    name: str,
    agent: str | None = "bot",
    *,
    uid: str | None = None,
    phase: str = "Running",
    terminating: bool = False,
    grace: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or f"uid-{name}", "labels": {}}
    if agent is not None:
        meta["labels"]["agentidentity.io/agent"] = agent
    if terminating:
        meta["deletionTimestamp"] = "2026-03-02T10:00:00Z"
        meta["deletionGracePeriodSeconds"] = grace
    return {"metadata": meta, "status": {"phase": phase}}


PODS = [pod("bot-b"), pod("bot-a", phase="Pending"), pod("other-1", agent="other"), pod("x", None)]


def test_only_suspended_and_retired_lose_their_pods() -> None:
    assert {Phase.SUSPENDED, Phase.RETIRED} == KILL_PHASES
    for phase in (Phase.ACTIVE, Phase.DEPRECATED, Phase.PENDING, None):
        assert pods_to_delete("bot", phase, PODS) == []


@pytest.mark.parametrize("phase", [Phase.SUSPENDED, Phase.RETIRED])
def test_the_agents_running_and_pending_pods_sorted(phase: Phase) -> None:
    out = pods_to_delete("bot", phase, PODS)
    assert [(d.name, d.uid) for d in out] == [("bot-a", "uid-bot-a"), ("bot-b", "uid-bot-b")]
    assert all("of agent bot" in d.message and phase.value in d.message for d in out)


def test_messages_say_what_happens_next() -> None:
    (suspended,) = pods_to_delete("bot", Phase.SUSPENDED, [pod("p")])
    (retired,) = pods_to_delete("bot", Phase.RETIRED, [pod("p")])
    assert "until it is resumed" in suspended.message
    assert "for good" in retired.message


def test_pods_of_other_agents_and_unlabelled_pods_are_left_alone() -> None:
    assert pods_to_delete("other", Phase.SUSPENDED, PODS)[0].name == "other-1"
    assert pods_to_delete("nobody", Phase.SUSPENDED, PODS) == []


def test_finished_pods_are_left_alone() -> None:
    pods = [pod("done", phase="Succeeded"), pod("crashed", phase="Failed"), pod("run")]
    assert [d.name for d in pods_to_delete("bot", Phase.RETIRED, pods)] == ["run"]


def test_terminating_pods_are_deleted_again_only_to_shorten_a_long_grace() -> None:
    pods = [
        pod("quick", terminating=True, grace=KILL_GRACE_SECONDS),
        pod("now", terminating=True, grace=0),
        pod("unknown", terminating=True, grace=None),
        pod("slow", terminating=True, grace=30),
    ]
    assert [d.name for d in pods_to_delete("bot", Phase.SUSPENDED, pods)] == ["slow"]


def test_already_deleted_uids_are_skipped() -> None:
    out = pods_to_delete("bot", Phase.SUSPENDED, PODS, frozenset({"uid-bot-a"}))
    assert [d.name for d in out] == ["bot-b"]


def test_pods_without_a_name_are_ignored() -> None:
    nameless = {"metadata": {"labels": {"agentidentity.io/agent": "bot"}}}
    assert pods_to_delete("bot", Phase.SUSPENDED, [nameless]) == []


# --- resume: the workloads the operator nudges -------------------------------------------


def _entry(from_: str | None, to: str) -> HistoryEntry:
    return HistoryEntry.model_validate(
        {"from": from_, "to": to, "actor": "alice", "at": "2026-03-02T10:00:00Z", "reason": "X"}
    )


@pytest.mark.parametrize(
    ("from_", "to", "expected"),
    [
        ("Suspended", "Active", True),
        ("Suspended", "Deprecated", True),
        ("Active", "Suspended", False),
        ("Active", "Deprecated", False),
        ("Pending", "Active", False),  # never had pods taken away
        (None, "Active", False),
        ("Suspended", "Retired", False),
        ("Deprecated", "Active", False),
    ],
)
def test_resumed_only_when_pods_may_come_back(from_: str | None, to: str, expected: bool) -> None:
    assert resumed(_entry(from_, to)) is expected
    assert resumed(None) is False


def workload(name: str, agent: str | None, replicas: int | None = 1) -> dict[str, Any]:
    labels = {"agentidentity.io/agent": agent} if agent else {"app": "web"}
    spec: dict[str, Any] = {"template": {"metadata": {"labels": labels}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name}, "spec": spec}


def test_workloads_to_nudge_are_those_whose_template_is_the_agents() -> None:
    found = [
        workload("bot-7c9", "bot"),
        workload("bot-old", "bot", replicas=0),  # an old Deployment revision: nothing to bring back
        workload("bot-ds", "bot", replicas=None),  # a DaemonSet has no replicas field
        workload("other-1", "other"),
        workload("web", None),
        {"metadata": {"name": "bare"}},
    ]
    assert workloads_to_nudge("bot", found) == ["bot-7c9", "bot-ds"]
    assert workloads_to_nudge("nobody", found) == []
