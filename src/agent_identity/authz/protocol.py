"""AuthZEN Authorization API 1.0 request parsing and response shapes (pure).

Every problem is a ``ProtocolError`` whose message names the field and what to send instead;
the HTTP layer turns it into 400 (or, for one item of a batch, into ``decision: false`` with
the error in that item's context). Unknown fields are ignored, as the specification requires.

Our entities: ``subject`` is ``{"type": "agent", "id": "<namespace>/<agent>", "properties":
{"token": "<the agent's token, when a gateway forwards it>"}}``; ``action`` is ``{"name":
...}``; ``resource`` is ``{"type", "id", "properties"}``; ``context`` is free-form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SUBJECT_TYPE = "agent"
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
MAX_BODY = 1 << 20
MAX_EVALUATIONS = 256


class ProtocolError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Subject:
    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        token = self.properties.get("token")
        return token if isinstance(token, str) and token else None

    def agent_key(self) -> tuple[str, str]:
        """(namespace, name) of ``id``; raises ProtocolError when it is not ``ns/name``."""
        return parse_agent_id(self.id, "subject.id")


@dataclass(frozen=True)
class Action:
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    subject: Subject
    action: Action
    resource: Resource
    context: Mapping[str, Any] = field(default_factory=dict)


def parse_agent_id(value: str, where: str) -> tuple[str, str]:
    parts = value.split("/")
    if len(parts) != 2 or not all(parts):
        raise ProtocolError(
            f"{where} must be '<namespace>/<agent name>' (for example 'payments/release-bot'), "
            f"got {value!r}"
        )
    return parts[0], parts[1]


def parse_json_body(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ProtocolError (content type, empty, malformed)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/json":
        raise ProtocolError(
            f"Content-Type must be application/json, got {content_type or 'none'!r}"
        )
    if not body or not body.strip():
        raise ProtocolError("the request body is empty; send a JSON object")
    if len(body) > MAX_BODY:
        raise ProtocolError(f"the request body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"the request body must be a JSON object, got {_json_type(data)}")
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _object(data: Mapping[str, Any], key: str, where: str, *, required: bool) -> dict[str, Any]:
    if key not in data or data[key] is None:
        if required:
            raise ProtocolError(f"{where}{key} is missing; it is required")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}{key} must be an object, got {_json_type(value)}")
    return value


def _string(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    if key not in data or data[key] is None:
        if required:
            raise ProtocolError(f"{where}{key} is missing; it is required")
        return ""
    value = data[key]
    if not isinstance(value, str):
        raise ProtocolError(f"{where}{key} must be a string, got {_json_type(value)}")
    if required and not value:
        raise ProtocolError(f"{where}{key} must not be empty")
    return value


def _properties(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    return _object(data, "properties", where + ".", required=False)


def parse_subject(data: Mapping[str, Any], *, need_id: bool = True) -> Subject:
    obj = _object(data, "subject", "", required=True)
    return Subject(
        type=_string(obj, "type", "subject."),
        id=_string(obj, "id", "subject.", required=need_id),
        properties=_properties(obj, "subject"),
    )


def parse_action(data: Mapping[str, Any]) -> Action:
    obj = _object(data, "action", "", required=True)
    return Action(name=_string(obj, "name", "action."), properties=_properties(obj, "action"))


def parse_resource(data: Mapping[str, Any], *, need_id: bool = True) -> Resource:
    obj = _object(data, "resource", "", required=True)
    return Resource(
        type=_string(obj, "type", "resource."),
        id=_string(obj, "id", "resource.", required=need_id),
        properties=_properties(obj, "resource"),
    )


def parse_context(data: Mapping[str, Any]) -> dict[str, Any]:
    return _object(data, "context", "", required=False)


def parse_evaluation(data: Mapping[str, Any]) -> Evaluation:
    return Evaluation(
        subject=parse_subject(data),
        action=parse_action(data),
        resource=parse_resource(data),
        context=parse_context(data),
    )


@dataclass(frozen=True)
class Batch:
    """A parsed ``/access/v1/evaluations`` body: items already merged with the defaults.

    Each item is an Evaluation, or a ProtocolError for an invalid item (answered with
    ``decision: false``). ``single`` is set when ``evaluations`` is absent or empty: then the
    endpoint answers like ``/access/v1/evaluation``.
    """

    semantic: Semantic
    items: list[Evaluation | ProtocolError]
    single: bool = False


def _merge_entity(default: Any, item: Any, key: str, required: tuple[str, ...]) -> Any:
    """An item's entity replaces the default whole; required sub-fields it lacks (``type``,
    ``id``) fall back to the default's (certification scenario, batch default merging)."""
    if item is None:
        return default
    if isinstance(item, dict) and isinstance(default, dict):
        merged = dict(item)
        for sub in required:
            if sub not in merged and sub in default:
                merged[sub] = default[sub]
        return merged
    return item


def parse_batch(data: Mapping[str, Any]) -> Batch:
    options = _object(data, "options", "", required=False)
    semantic: Semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise ProtocolError(
            f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}, got {semantic!r}"
        )
    raw_items = data.get("evaluations")
    if raw_items is not None and not isinstance(raw_items, list):
        raise ProtocolError(f"evaluations must be an array, got {_json_type(raw_items)}")
    if not raw_items:
        return Batch(semantic, [parse_evaluation(data)], single=True)
    if len(raw_items) > MAX_EVALUATIONS:
        raise ProtocolError(
            f"evaluations has {len(raw_items)} items; at most {MAX_EVALUATIONS} per request"
        )
    items: list[Evaluation | ProtocolError] = []
    required = {"subject": ("type", "id"), "action": ("name",), "resource": ("type", "id")}
    for i, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            items.append(
                ProtocolError(f"evaluations[{i}] must be an object, got {_json_type(raw)}")
            )
            continue
        merged: dict[str, Any] = {}
        for key in ("subject", "action", "resource", "context"):
            value = _merge_entity(data.get(key), raw.get(key), key, required.get(key, ()))
            if value is not None:
                merged[key] = value
        try:
            items.append(parse_evaluation(merged))
        except ProtocolError as exc:
            items.append(ProtocolError(f"evaluations[{i}]: {exc.message}"))
    return Batch(semantic, items)


@dataclass(frozen=True)
class ActionSearch:
    subject: Subject
    resource: Resource
    context: Mapping[str, Any]


@dataclass(frozen=True)
class SubjectSearch:
    subject_type: str
    namespace: str | None  # subject.properties.namespace narrows the search
    action: Action
    resource: Resource
    context: Mapping[str, Any]


@dataclass(frozen=True)
class ResourceSearch:
    subject: Subject
    action: Action
    resource_type: str


def _page(data: Mapping[str, Any]) -> None:
    _object(data, "page", "", required=False)  # accepted, not used: results fit one page


def parse_action_search(data: Mapping[str, Any]) -> ActionSearch:
    _page(data)
    return ActionSearch(parse_subject(data), parse_resource(data), parse_context(data))


def parse_subject_search(data: Mapping[str, Any]) -> SubjectSearch:
    _page(data)
    subject = parse_subject(data, need_id=False)
    namespace = subject.properties.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ProtocolError("subject.properties.namespace must be a string")
    return SubjectSearch(
        subject.type,
        namespace or None,
        parse_action(data),
        parse_resource(data),
        parse_context(data),
    )


def parse_resource_search(data: Mapping[str, Any]) -> ResourceSearch:
    _page(data)
    subject = parse_subject(data)
    action = parse_action(data)
    resource = parse_resource(data, need_id=False)
    return ResourceSearch(subject, action, resource.type)


def error_body(message: str, status: int) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}
