"""Builders of raw objects and AdmissionReview requests for the admission unit tests (no tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent_identity.registry import KINDS, Registry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NS = "payments"


def agent(
    name: str,
    *,
    phase: str | None = "Active",
    state: str = "Active",
    scopes: tuple[str, ...] = (),
    parent: str | None = None,
    ttl: int | None = None,
    sunset: str | None = None,
    expires: str | None = None,
    owner: str = "team-payments",
    history_at: str = "2026-11-02T08:00:00Z",
    ns: str = NS,
    annotations: dict[str, str] | None = None,
    platform: dict[str, Any] | None = None,
) -> dict[str, Any]:
    lifecycle: dict[str, Any] = {"state": state}
    if sunset:
        lifecycle["sunsetAt"] = sunset
    if expires:
        lifecycle["expiresAt"] = expires
    spec: dict[str, Any] = {
        "owner": owner,
        "scopeRefs": [{"name": s} for s in scopes],
        "lifecycle": lifecycle,
    }
    if parent:
        spec["parentRef"] = {"name": parent}
    if ttl is not None:
        spec["token"] = {"ttlSeconds": ttl}
    if platform:
        spec["platform"] = platform
    status: dict[str, Any] = {}
    if phase:
        status = {
            "phase": phase,
            "history": [
                {"from": "Active", "to": phase, "actor": "alice", "at": history_at, "reason": "X"}
            ],
        }
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}"}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "Agent",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def scope(name: str, ns: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "AuthorityScope",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def registry(*objects: dict[str, Any]) -> Registry:
    reg = Registry()
    for kind in KINDS:
        reg.replace_all(kind, [o for o in objects if o["kind"] == kind])
    return reg


def pod(
    name: str = "p",
    *,
    label: str | None = None,
    sa: str | None = "default",
    init: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": dict(labels or {})}
    if label is not None:
        meta["labels"]["agentidentity.io/agent"] = label
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "volumeMounts": [
                    {
                        "name": "kube-api-access-abcde",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
            }
        ],
        "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": []}}],
    }
    if init:
        spec["initContainers"] = [{"name": "init", "image": "busybox"}]
    if sa is not None:
        spec["serviceAccountName"] = sa
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    user: str = "alice",
    groups: tuple[str, ...] = ("system:authenticated",),
    kind: str | None = None,
) -> dict[str, Any]:
    return {
        "uid": "req-1",
        "kind": {"group": "", "version": "v1", "kind": kind or obj.get("kind", "Pod")},
        "namespace": NS,
        "name": obj["metadata"].get("name"),
        "operation": operation,
        "userInfo": {"username": user, "groups": list(groups)},
        "object": obj,
        "oldObject": old,
    }
