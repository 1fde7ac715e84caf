"""Provenance, pure: who created and who last modified an object, from the authenticated request.

The mutating webhook writes ``agentidentity.io/created-by`` (on CREATE) and
``agentidentity.io/last-modified-by`` (on CREATE, and on an UPDATE that changes
spec or labels: the operator's finalizer and status bookkeeping are not
modifications of what the agent is). A value set by hand that differs from what
the webhook would record is refused; an annotation dropped by a ``replace`` is
restored. The validating webhook checks the final object again, so a webhook
running after ours cannot forge it either.
"""

from __future__ import annotations

from typing import Any

from agent_identity.admission.review import Decision, allow, deny, user_of
from agent_identity.api.common import (
    CREATED_BY_ANNOTATION,
    LAST_MODIFIED_BY_ANNOTATION,
    PROVENANCE_ANNOTATIONS,
)


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("metadata") or {})


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(_meta(obj).get("annotations") or {})


def modified(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether an UPDATE changes what the object says (spec or labels), not bookkeeping."""
    if old is None:
        return True
    return bool(
        old.get("spec") != new.get("spec")
        or (_meta(old).get("labels") or {}) != (_meta(new).get("labels") or {})
    )


def expected(request: dict[str, Any]) -> dict[str, str | None]:
    """The provenance annotations the object must carry after this request."""
    user, _ = user_of(request)
    new = request.get("object") or {}
    if request.get("operation") == "CREATE":
        return {CREATED_BY_ANNOTATION: user, LAST_MODIFIED_BY_ANNOTATION: user}
    old = request.get("oldObject") or {}
    old_ann = _annotations(old)
    return {
        CREATED_BY_ANNOTATION: old_ann.get(CREATED_BY_ANNOTATION),
        LAST_MODIFIED_BY_ANNOTATION: user
        if modified(old, new)
        else old_ann.get(LAST_MODIFIED_BY_ANNOTATION),
    }


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _hand_set(request: dict[str, Any]) -> str | None:
    """A message when the request itself sets a provenance annotation to a value we would not."""
    want = expected(request)
    given = _annotations(request.get("object"))
    old = _annotations(request.get("oldObject"))
    for key in PROVENANCE_ANNOTATIONS:
        value = given.get(key)
        if value is None or value == want[key]:
            continue
        if request.get("operation") == "UPDATE" and value == old.get(key):
            continue  # unchanged from what we stored: the webhook updates it
        kind = ((request.get("kind") or {}).get("kind")) or "object"
        return (
            f"metadata.annotations[{key!r}] of this {kind} is recorded by the admission webhook "
            f"from the authenticated request and cannot be set by hand (you sent {value!r}); "
            "remove it from your manifest"
        )
    return None


def mutate(request: dict[str, Any]) -> Decision:
    """Refuse hand-set provenance, else the JSONPatch that records it."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return allow()
    problem = _hand_set(request)
    if problem is not None:
        return deny(problem, "ProvenanceSetByHand")
    want = expected(request)
    current = _annotations(request.get("object"))
    if all(current.get(k) == want[k] for k in PROVENANCE_ANNOTATIONS):
        return allow()
    if "annotations" not in _meta(request.get("object")):
        value = {k: v for k, v in want.items() if v is not None}
        return allow(
            "ProvenanceRecorded",
            patch=[{"op": "add", "path": "/metadata/annotations", "value": value}],
        )
    patch: list[dict[str, Any]] = []
    for key in PROVENANCE_ANNOTATIONS:
        path = "/metadata/annotations/" + _escape(key)
        if want[key] is None:
            if key in current:
                patch.append({"op": "remove", "path": path})
        elif current.get(key) != want[key]:
            patch.append({"op": "add", "path": path, "value": want[key]})
    return allow("ProvenanceRecorded", patch=patch)


def violation(request: dict[str, Any]) -> str | None:
    """For the validating webhook: the final object must carry exactly what we record."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return None
    want = expected(request)
    given = _annotations(request.get("object"))
    for key in PROVENANCE_ANNOTATIONS:
        if given.get(key) != want[key]:
            if given.get(key) is None:
                return (
                    f"metadata.annotations[{key!r}] is missing; it records {want[key]!r} from the "
                    "authenticated request (is the agent-identity mutating webhook installed?)"
                )
            return (
                f"metadata.annotations[{key!r}] must be {want[key]!r} (recorded from the "
                f"authenticated request), not {given.get(key)!r}; provenance cannot be set "
                "by hand: remove it from your manifest"
            )
    return None
