"""The kopf handlers: thin triggers that call ``Reconciler`` (held in ``memo.reconciler``).

Triggers of an Agent's reconcile: the Agent itself (create/update/resume), a bound
scope (create/update/delete, found through the ``agents_by_scope`` index so that
exactly the bound agents run), a deleted child (so it is recreated), and a
single clock task that wakes at ``expiresAt`` / ``sunsetAt``. A watch on agent pods
(label ``agentidentity.io/agent``) deletes pods of Suspended and Retired agents. No handler needs a
finalizer (see settings.py), so kopf adds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from agent_identity import GROUP, VERSION
from agent_identity.api.common import AGENT_LABEL
from agent_identity.audit import record
from agent_identity.controller.reconciler import Reconciler, identity_uri
from agent_identity.identity.meta import MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger(__name__)

registry = kopf.OperatorRegistry()

AGENTS = (GROUP, VERSION, "agents")
SCOPES = (GROUP, VERSION, "authorityscopes")
CHILD_RESOURCES = (
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
CHILD_LABELS: dict[str, Any] = {AGENT_LABEL: kopf.PRESENT, MANAGED_BY_LABEL: MANAGED_BY}
# A failed reconcile (e.g. a conflict, the API server busy) is retried soon, not after
# kopf's default minute.
RETRY_BACKOFF = 3.0
CLOCK_MAX_SLEEP = 1.0  # an in-memory check; also bounds how late a deadline is noticed


def _reconciler(memo: Any) -> Reconciler:
    rec: Reconciler = memo.reconciler
    return rec


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kube.use_kubeconfig() has put the chosen kubeconfig into $KUBECONFIG.
    import os

    if os.environ.get("KUBECONFIG"):
        info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
        return info
    info = kopf.login_with_service_account(**kwargs)
    return info


# --- Agents ------------------------------------------------------------------------------


@kopf.index(*AGENTS, registry=registry)
def agents_by_scope(namespace: Any, name: Any, spec: Any, **_: Any) -> dict[Any, str]:
    """(namespace, scope name) -> names of the agents that reference it (found or not)."""
    refs = spec.get("scopeRefs") or []
    return {
        (namespace, ref["name"]): name for ref in refs if isinstance(ref, dict) and "name" in ref
    }


@kopf.on.resume(*AGENTS, registry=registry, backoff=RETRY_BACKOFF)
@kopf.on.create(*AGENTS, registry=registry, backoff=RETRY_BACKOFF)
@kopf.on.update(*AGENTS, registry=registry, backoff=RETRY_BACKOFF)
def agent_changed(namespace: Any, name: Any, memo: Any, **kwargs: Any) -> None:
    rec = _reconciler(memo)
    rec.reconcile(namespace, name)
    # Scopes gained or lost this agent: refresh their boundAgents.
    refs = {*_scope_names(kwargs.get("old")), *_scope_names(kwargs.get("new"))}
    for scope in sorted(refs):
        rec.refresh_scope(namespace, scope, _bound(kwargs["agents_by_scope"], namespace, scope))


def _scope_names(essence: Any) -> list[str]:
    spec = (essence or {}).get("spec") or {}
    return [r["name"] for r in spec.get("scopeRefs") or [] if isinstance(r, dict) and "name" in r]


@kopf.on.event(*AGENTS, registry=registry)
def agent_event(event: Any, namespace: Any, name: Any, body: Any, memo: Any, **kwargs: Any) -> None:
    """A deleted Agent: one audit record (the children go with the garbage collector)."""
    if event.get("type") != "DELETED":
        return
    rec = _reconciler(memo)
    rec.forget(namespace, name)
    for scope in sorted(set(_scope_names(body))):
        bound = [a for a in _bound(kwargs["agents_by_scope"], namespace, scope) if a != name]
        rec.refresh_scope(namespace, scope, bound)
    rec.audit.write(
        record(
            "lifecycle",
            agent_uri=identity_uri(rec.cluster_name, namespace, name),
            agent_uid=body.get("metadata", {}).get("uid"),
            agent_name=name,
            namespace=namespace,
            actor=body.get("metadata", {})
            .get("annotations", {})
            .get(f"{GROUP}/last-modified-by", "unknown"),
            outcome="Deleted",
            reason="Deleted",
            **{"from": body.get("status", {}).get("phase"), "to": "Deleted"},
        )
    )


@kopf.on.startup(registry=registry)
async def start_clock(memo: Any, **_: Any) -> None:
    """One task for every agent's expiresAt / sunsetAt (see ``run_clock``).

    Not a kopf daemon or timer per object: kopf gives those a finalizer, which would
    block deleting Agents (and namespaces) whenever the operator is down.
    """
    log.info("agent-identity operator started (cluster name %s)", _reconciler(memo).cluster_name)
    memo.clock_stop = asyncio.Event()
    memo.clock = asyncio.create_task(run_clock(_reconciler(memo), memo.clock_stop))


@kopf.on.cleanup(registry=registry)
async def stop_clock(memo: Any, **_: Any) -> None:
    memo.clock_stop.set()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(memo.clock, timeout=5)


async def run_clock(rec: Reconciler, stop: asyncio.Event) -> None:
    """Reconciles each agent whose deadline has passed (it becomes Retired).

    Deadlines are what the last reconcile of each agent computed; every agent is
    reconciled at start-up (resume) and on every change, so the table is complete.
    """
    while not stop.is_set():
        for namespace, name in rec.due(datetime.now(UTC)):
            try:
                await asyncio.to_thread(rec.reconcile, namespace, name)
            except Exception as exc:  # retried a little later
                log.warning("deadline reconcile of %s/%s failed: %s", namespace, name, exc)
                rec.retry_later(namespace, name, RETRY_BACKOFF)
        rec.publish_metrics()  # an agent past its deadline that still admits is overdue
        wait = rec.seconds_to_next(datetime.now(UTC), cap=CLOCK_MAX_SLEEP)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


# --- children ----------------------------------------------------------------------------


def _on_child_event(event: Any, namespace: Any, labels: Any, memo: Any, **_: Any) -> None:
    """A deleted child is recreated by reconciling its Agent (a no-op if it should be gone)."""
    if event.get("type") != "DELETED":
        return
    agent = labels.get(AGENT_LABEL)
    if agent:
        _reconcile_or_retry(_reconciler(memo), namespace, agent)


def _reconcile_or_retry(rec: Reconciler, namespace: str, name: str) -> None:
    """For watch-event triggers, which kopf does not retry: the clock retries instead."""
    try:
        rec.reconcile(namespace, name)
    except Exception as exc:
        log.warning("reconcile of %s/%s failed, retrying: %s", namespace, name, exc)
        rec.retry_later(namespace, name, RETRY_BACKOFF)


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(
        _group, _version, _plural, registry=registry, labels=CHILD_LABELS, id=f"child-{_plural}"
    )(_on_child_event)


# --- agent pods (the kill switch) -------------------------------------------------------


@kopf.on.event("", "v1", "pods", registry=registry, labels={AGENT_LABEL: kopf.PRESENT})
def agent_pod_event(
    event: Any, namespace: Any, labels: Any, body: Any, memo: Any, **_: Any
) -> None:
    """A pod of a Suspended or Retired agent appeared (admitted just before the webhook
    learned of the change, or the operator was down): delete it. Reconciles delete the
    pods that exist at a transition; this catches those created in between."""
    if event.get("type") == "DELETED":
        return
    agent = labels.get(AGENT_LABEL)
    if not agent:
        return
    rec = _reconciler(memo)
    errors = rec.enforce_pod(namespace, agent, dict(body))
    if errors:
        log.warning("kill switch for %s/%s: %s; retrying", namespace, agent, "; ".join(errors))
        rec.retry_later(namespace, agent, RETRY_BACKOFF)


# --- AuthorityScopes ---------------------------------------------------------------------


def _bound(index: Any, namespace: str, name: str) -> list[str]:
    return sorted(set(index.get((namespace, name), [])))


@kopf.on.create(*SCOPES, registry=registry, backoff=RETRY_BACKOFF)
@kopf.on.update(*SCOPES, registry=registry, backoff=RETRY_BACKOFF)
def scope_changed(namespace: Any, name: Any, body: Any, memo: Any, **kwargs: Any) -> None:
    """A new or edited scope re-reconciles exactly the agents bound to it."""
    rec = _reconciler(memo)
    bound = _bound(kwargs["agents_by_scope"], namespace, name)
    for agent in bound:
        rec.reconcile(namespace, agent)
    rec.update_scope_status(dict(body), bound)


@kopf.on.resume(*SCOPES, registry=registry, backoff=RETRY_BACKOFF)
def scope_resumed(namespace: Any, name: Any, body: Any, memo: Any, **kwargs: Any) -> None:
    # The agents resume on their own; only the scope's status is refreshed.
    _reconciler(memo).update_scope_status(
        dict(body), _bound(kwargs["agents_by_scope"], namespace, name)
    )


@kopf.on.event(*SCOPES, registry=registry)
def scope_event(event: Any, namespace: Any, name: Any, memo: Any, **kwargs: Any) -> None:
    """A deleted scope: its agents lose that authority (Pending, ScopeNotFound)."""
    if event.get("type") != "DELETED":
        return
    rec = _reconciler(memo)
    for agent in _bound(kwargs["agents_by_scope"], namespace, name):
        _reconcile_or_retry(rec, namespace, agent)
