"""AuthZEN request parsing: every 400 case of the certification scenario, and batch merging."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_identity.authz import protocol
from agent_identity.authz.protocol import ProtocolError

S = {"type": "agent", "id": "ns/bot"}
A = {"name": "github.pulls.create"}
R = {"type": "service", "id": "api"}


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"action": A, "resource": R}, "subject is missing"),
        ({"subject": S, "resource": R}, "action is missing"),
        ({"subject": S, "action": A}, "resource is missing"),
        ({"subject": {"id": "ns/bot"}, "action": A, "resource": R}, "subject.type is missing"),
        ({"subject": {"type": "agent"}, "action": A, "resource": R}, "subject.id is missing"),
        ({"subject": S, "action": {}, "resource": R}, "action.name is missing"),
        ({"subject": S, "action": A, "resource": {"id": "api"}}, "resource.type is missing"),
        ({"subject": S, "action": A, "resource": {"type": "service"}}, "resource.id is missing"),
        ({"subject": "bot", "action": A, "resource": R}, "subject must be an object, got a string"),
        (
            {"subject": S, "action": {"name": 123}, "resource": R},
            "action.name must be a string, got a number",
        ),
        (
            {"subject": S, "action": A, "resource": R, "context": []},
            "context must be an object, got an array",
        ),
        (
            {"subject": {**S, "properties": "x"}, "action": A, "resource": R},
            "subject.properties must be an object",
        ),
        ({"subject": S, "action": {"name": ""}, "resource": R}, "action.name must not be empty"),
    ],
)
def test_evaluation_400_cases(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_evaluation(protocol.parse_json_body("application/json", body(data)))
    assert fragment in err.value.message


@pytest.mark.parametrize(
    ("content_type", "raw", "fragment"),
    [
        ("text/plain", body({"subject": S}), "Content-Type must be application/json"),
        (None, body({"subject": S}), "Content-Type must be application/json"),
        ("application/json", b"", "empty"),
        ("application/json", b"   ", "empty"),
        ("application/json", b"{not json", "not valid JSON"),
        ("application/json", b"[1, 2]", "must be a JSON object, got an array"),
        ("application/json", b"\xff\xfe", "not valid JSON"),
    ],
)
def test_body_400_cases(content_type: str | None, raw: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_json_body(content_type, raw)
    assert fragment in err.value.message


def test_charset_accepted_and_unknown_fields_ignored() -> None:
    data = protocol.parse_json_body(
        "application/json; charset=utf-8",
        body({"subject": S, "action": A, "resource": R, "foo": "bar", "futureField": {"x": 1}}),
    )
    ev = protocol.parse_evaluation(data)
    assert ev.subject.agent_key() == ("ns", "bot")
    assert ev.context == {}


def test_token_property() -> None:
    ev = protocol.parse_evaluation(
        {"subject": {**S, "properties": {"token": "abc"}}, "action": A, "resource": R}
    )
    assert ev.subject.token == "abc"


@pytest.mark.parametrize("bad", ["bot", "ns/", "/bot", "a/b/c"])
def test_agent_id_format(bad: str) -> None:
    with pytest.raises(ProtocolError, match="'<namespace>/<agent name>'"):
        protocol.parse_agent_id(bad, "subject.id")


def test_batch_defaults_replaced_whole_with_required_fallback() -> None:
    batch = protocol.parse_batch(
        {
            "subject": S,
            "action": {"name": "deploy.x", "properties": {"a": 1}},
            "resource": {"type": "service", "properties": {"env": "dev"}},
            "context": {"change_window": True},
            "evaluations": [
                {"resource": {"id": "r1", "properties": {"env": "production"}}},
                {"resource": {"type": "repo", "id": "r2"}, "context": {"x": 1}},
                {"action": {"name": "other"}},
                {},
                "nope",
            ],
        }
    )
    assert batch.semantic == "execute_all" and not batch.single
    first, second, third, fourth, fifth = batch.items
    assert isinstance(first, protocol.Evaluation)
    assert first.resource.type == "service" and first.resource.id == "r1"
    assert first.resource.properties == {"env": "production"}
    assert first.context == {"change_window": True}
    assert isinstance(second, protocol.Evaluation)
    assert second.resource.type == "repo" and second.context == {"x": 1}
    assert second.action.properties == {"a": 1}
    assert isinstance(third, ProtocolError) and "resource.id is missing" in third.message
    assert isinstance(fourth, ProtocolError) and fourth.message.startswith("evaluations[3]")
    assert isinstance(fifth, ProtocolError) and "must be an object" in fifth.message


@pytest.mark.parametrize("evaluations", [None, []])
def test_batch_without_items_is_single(evaluations: Any) -> None:
    data: dict[str, Any] = {"subject": S, "action": A, "resource": R}
    if evaluations is not None:
        data["evaluations"] = evaluations
    batch = protocol.parse_batch(data)
    assert batch.single and len(batch.items) == 1
    with pytest.raises(ProtocolError):
        protocol.parse_batch({"evaluations": []})


def test_batch_semantics() -> None:
    for semantic in protocol.SEMANTICS:
        batch = protocol.parse_batch(
            {
                "subject": S,
                "action": A,
                "resource": R,
                "options": {"evaluations_semantic": semantic},
                "evaluations": [{}],
            }
        )
        assert batch.semantic == semantic
    with pytest.raises(ProtocolError, match="evaluations_semantic"):
        protocol.parse_batch({"options": {"evaluations_semantic": "any"}, "evaluations": [{}]})
    with pytest.raises(ProtocolError, match="evaluations must be an array"):
        protocol.parse_batch({"evaluations": {}})


def test_searches() -> None:
    s = protocol.parse_subject_search(
        {"subject": {"type": "agent"}, "action": A, "resource": R, "page": {"limit": 1}}
    )
    assert s.subject_type == "agent" and s.namespace is None
    with pytest.raises(ProtocolError, match="action is missing"):
        protocol.parse_subject_search({"subject": {"type": "agent"}, "resource": R})
    with pytest.raises(ProtocolError, match=r"resource\.id is missing"):
        protocol.parse_subject_search(
            {"subject": {"type": "agent"}, "action": A, "resource": {"type": "service"}}
        )
    a = protocol.parse_action_search({"subject": S, "resource": R, "context": {"k": 1}})
    assert a.context == {"k": 1}
    with pytest.raises(ProtocolError, match="resource is missing"):
        protocol.parse_action_search({"subject": S})
    r = protocol.parse_resource_search({"subject": S, "action": A, "resource": {"type": "service"}})
    assert r.resource_type == "service"
    with pytest.raises(ProtocolError, match="subject is missing"):
        protocol.parse_resource_search({"action": A, "resource": {"type": "service"}})
    with pytest.raises(ProtocolError, match=r"subject\.id is missing"):
        protocol.parse_resource_search(
            {"subject": {"type": "agent"}, "action": A, "resource": {"type": "service"}}
        )
    with pytest.raises(ProtocolError, match="page must be an object"):
        protocol.parse_action_search({"subject": S, "resource": R, "page": 3})
