from __future__ import annotations

import copy

from agent_identity.admission import provenance
from tests.unit.test_admission_helpers import agent, review

C, M = "agentidentity.io/created-by", "agentidentity.io/last-modified-by"


def _apply(obj: dict, patch: list[dict]) -> dict:
    out = copy.deepcopy(obj)
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
        target = out
        for part in parts[:-1]:
            target = target[part]
        if op["op"] == "remove":
            del target[parts[-1]]
        else:
            target[parts[-1]] = op["value"]
    return out


def test_create_records_creator_and_modifier() -> None:
    req = review(agent("bot"), user="alice")
    d = provenance.mutate(req)
    assert d.allowed
    out = _apply(req["object"], d.patch or [])
    assert out["metadata"]["annotations"] == {C: "alice", M: "alice"}
    assert provenance.violation({**req, "object": out}) is None


def test_update_of_spec_records_modifier_and_keeps_creator() -> None:
    old = agent("bot", annotations={C: "alice", M: "alice", "keep": "me"})
    new = copy.deepcopy(old)
    new["spec"]["owner"] = "team-x"
    req = review(new, operation="UPDATE", old=old, user="bob")
    out = _apply(new, provenance.mutate(req).patch or [])
    assert out["metadata"]["annotations"] == {C: "alice", M: "bob", "keep": "me"}


def test_metadata_bookkeeping_does_not_change_modifier() -> None:
    old = agent("bot", annotations={C: "alice", M: "alice"})
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["x"]
    d = provenance.mutate(review(new, operation="UPDATE", old=old, user="system:op"))
    assert d.allowed and not d.patch


def test_replace_without_annotations_restores_them() -> None:
    old = agent("bot", annotations={C: "alice", M: "alice"})
    new = agent("bot")
    new["spec"]["owner"] = "team-x"
    out = _apply(
        new, provenance.mutate(review(new, operation="UPDATE", old=old, user="bob")).patch or []
    )
    assert out["metadata"]["annotations"] == {C: "alice", M: "bob"}


def test_hand_set_values_are_refused() -> None:
    d = provenance.mutate(review(agent("bot", annotations={C: "ceo"}), user="mallory"))
    assert not d.allowed and d.reason == "ProvenanceSetByHand"
    assert "cannot be set by hand (you sent 'ceo')" in d.message
    old = agent("bot", annotations={C: "alice", M: "alice"})
    new = agent("bot", annotations={C: "mallory", M: "alice"})
    d = provenance.mutate(review(new, operation="UPDATE", old=old, user="mallory"))
    assert not d.allowed and C in d.message


def test_setting_own_name_is_accepted() -> None:
    assert provenance.mutate(review(agent("bot", annotations={C: "alice", M: "alice"}))).allowed
