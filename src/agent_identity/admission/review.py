"""AdmissionReview v1 plumbing shared by every webhook: the decision type and the response.

Pure: a ``Decision`` is what a pure decision function returns; ``response``
turns it into the AdmissionReview the API server expects.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_identity.registry import Registry

Ref = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class Permission:
    """One thing the escalation guard asks a SubjectAccessReview about."""

    namespace: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""

    def describe(self) -> str:
        res = self.resource + (f"/{self.subresource}" if self.subresource else "")
        group = self.group or "core"
        named = f" named {self.name!r}" if self.name else ""
        return f"{self.verb} {res}{named} (apiGroup {group!r}) in namespace {self.namespace}"


@dataclass
class Decision:
    """The answer of one pure decision function."""

    allowed: bool
    message: str = ""
    # CamelCase reason: the metric label and the AdmissionResponse status reason.
    reason: str = "Allowed"
    warnings: list[str] = field(default_factory=list)
    patch: list[dict[str, Any]] | None = None
    # audit records the shell writes (audit-mode pods)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # registry objects the decision depended on: GET them and decide again before denying
    confirm: list[Ref] = field(default_factory=list)
    # escalation guard: permissions the requesting user must hold (SubjectAccessReview)
    permissions: list[Permission] = field(default_factory=list)
    # a SubjectAccessReview that, when allowed, waives ``permissions`` (RBAC's escalate/bind)
    waiver: Permission | None = None
    # what the escalation guard is about, for the denial message
    guarded: str = ""
    token_ttl: int | None = None


def allow(reason: str = "Allowed", **kw: Any) -> Decision:
    return Decision(True, reason=reason, **kw)


def deny(message: str, reason: str, **kw: Any) -> Decision:
    return Decision(False, message=message, reason=reason, **kw)


def response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview v1 response for ``decision``."""
    resp: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        resp["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message,
            "details": {"causes": [{"reason": decision.reason, "message": decision.message}]},
        }
    if decision.warnings:
        resp["warnings"] = list(decision.warnings)
    if decision.allowed and decision.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}


def user_of(request: dict[str, Any]) -> tuple[str, list[str]]:
    info = request.get("userInfo") or {}
    return str(info.get("username") or ""), [str(g) for g in info.get("groups") or []]


def format_time(value: datetime | None) -> str:
    if value is None:
        return "an unknown time"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def overlay(registry: Registry, fetched: dict[Ref, dict[str, Any] | None]) -> Registry:
    """A copy of ``registry`` with freshly fetched objects (None: confirmed absent).

    Used only on the denial path (a GET confirmed what memory said), so the copy
    cost does not touch the allow path; the watch-fed registry itself is left to
    the watch, which is the only writer that knows the order of events.
    """
    out = Registry(
        agents=dict(registry.agents),
        scopes=dict(registry.scopes),
        policies=dict(registry.policies),
        approvals=dict(registry.approvals),
        invalid=dict(registry.invalid),
        synced=set(registry.synced),
    )
    out._bound = {k: set(v) for k, v in registry._bound.items()}
    for (kind, namespace, name), body in fetched.items():
        if body is None:
            out.delete(kind, namespace, name)
        else:
            out.upsert({**copy.deepcopy(body), "kind": kind})
    return out
