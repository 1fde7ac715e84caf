"""Reconcile one Agent: read it and its scopes, apply children, write status, record transitions.

Called from every trigger (the Agent changed, a bound scope changed, a child
was deleted, a deadline passed) with only (namespace, name): it always reads
the current Agent, under a per-agent lock, so triggers may overlap safely.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agent_identity import GROUP, VERSION
from agent_identity.api import (
    Agent,
    AgentIdentity,
    AgentStatus,
    AuthorityScope,
    AuthorityScopeStatus,
    Phase,
)
from agent_identity.api.common import AGENT_LABEL, OPERATOR_ACTOR, ConditionStatus
from agent_identity.api.conditions import set_condition
from agent_identity.audit import AuditLog, record
from agent_identity.controller.children import ChildApplier, NamespaceTerminating
from agent_identity.identity.authority import effective_authority
from agent_identity.identity.names import service_account_name
from agent_identity.lifecycle import (
    KILL_GRACE_SECONDS,
    KILL_PHASES,
    RESUMED_ANNOTATION,
    WORKLOAD_KINDS,
    LifecycleResult,
    Observed,
    PodDeletion,
    desired_children,
    evaluate,
    invalid_conditions,
    is_overdue,
    parse_agent,
    pods_to_delete,
    resumed,
    workloads_to_nudge,
)
from agent_identity.metrics import (
    AGENTS,
    AGENTS_OVERDUE,
    AGENTS_WITHOUT_OWNER,
    RECONCILE_DURATION,
    RECONCILE_ERRORS,
    SCOPE_BINDINGS,
)

log = logging.getLogger(__name__)

COMPONENT = "agent-identity-operator"
# How many deleted pod uids are remembered, so a pod event racing a reconcile is not
# deleted (and audited) twice.
DELETED_PODS_MEMORY = 4096
JSON_PATCH = "application/json-patch+json"


class ReconcileError(RuntimeError):
    """Some children could not be applied; status says which; the trigger is retried."""


def identity_uri(cluster: str, namespace: str, name: str) -> str:
    return f"agent://{cluster}/{namespace}/{name}"


@dataclass
class Reconciler:
    api: Any  # kubernetes.client.ApiClient
    cluster_name: str = "local"
    audit: AuditLog = field(default_factory=AuditLog)
    applier: ChildApplier | None = None
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _phases: dict[tuple[str, str], Phase] = field(default_factory=dict)
    _bindings: dict[tuple[str, str], int] = field(default_factory=dict)
    _metric_keys: set[tuple[str, str]] = field(default_factory=set)
    # For the without-owner and overdue gauges: agents held for their owner, and each
    # agent's next expiresAt / sunsetAt as its last reconcile computed it.
    _owner_missing: set[tuple[str, str]] = field(default_factory=set)
    _lifetimes: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _deadlines: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # Agents whose pods are deleted on sight (Suspended, Retired): key -> (phase, uid).
    _killing: dict[tuple[str, str], tuple[Phase, str | None]] = field(default_factory=dict)
    _deleted_pods: dict[str, None] = field(default_factory=dict)  # insertion-ordered uids

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        if self.applier is None:
            self.applier = ChildApplier(self.api)
        self.instance = socket.gethostname()
        # Export the error series at 0 from the start: an alert on increase() cannot see
        # the first errors of a series that did not exist before them.
        for kind in ("Agent", "AuthorityScope"):
            RECONCILE_ERRORS.labels(kind)

    # --- helpers ------------------------------------------------------------------------

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
            return dict(obj)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def scopes_of(self, agent: Agent) -> tuple[list[AuthorityScope], list[str]]:
        namespace = agent.metadata.namespace or ""
        found: list[AuthorityScope] = []
        missing: list[str] = []
        for ref in agent.spec.scope_refs:
            body = self._get("authorityscopes", namespace, ref.name)
            if body is None:
                missing.append(ref.name)
                continue
            try:
                found.append(AuthorityScope.parse(body))
            except ValueError:
                missing.append(ref.name)  # cannot be granted; admission refuses such scopes
        return found, missing

    # --- the reconcile ------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> LifecycleResult | None:
        """Bring one Agent's children and status in line; None when it is gone or invalid."""
        with self._lock(namespace, name), RECONCILE_DURATION.labels("Agent").time():
            try:
                return self._reconcile(namespace, name)
            except Exception:
                RECONCILE_ERRORS.labels("Agent").inc()
                raise

    def _reconcile(self, namespace: str, name: str) -> LifecycleResult | None:
        body = self._get("agents", namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.forget(namespace, name)
            return None
        now = datetime.now(UTC)
        parsed = parse_agent(body)
        if parsed.agent is None:
            self._write_invalid(body, parsed.error or "invalid", now)
            return None
        agent = parsed.agent
        scopes, missing = self.scopes_of(agent)
        observed = Observed(missing_scopes=tuple(missing), owner_error=parsed.owner_error)
        desired = desired_children(agent, observed, now)
        assert self.applier is not None
        try:
            outcome = self.applier.apply(agent, scopes, desired)
        except NamespaceTerminating:
            self.forget(namespace, name)  # the namespace and everything in it is going away
            return None
        result = evaluate(
            agent,
            Observed(outcome.present, tuple(missing), parsed.owner_error),
            now,
        )
        status = AgentStatus(
            phase=result.phase,
            scopes=",".join(ref.name for ref in agent.spec.scope_refs) or None,
            conditions=result.conditions,
            identity=AgentIdentity(
                uri=identity_uri(self.cluster_name, namespace, name),
                service_account=service_account_name(name)
                if result.desired.service_account
                else None,
                uid=agent.metadata.uid or "",
            ),
            effective_authority=effective_authority(scopes),
            history=result.history,
            observed_generation=agent.metadata.generation,
        )
        self._write_status(body, status.to_wire())
        if result.entry is not None:
            self._record_transition(agent, result)
        self._observe(
            namespace,
            name,
            result.phase,
            len(agent.spec.scope_refs),
            owner_missing=parsed.owner_error is not None,
            lifetime=result.deadline,
        )
        pod_errors = self._enforce_on_reconcile(agent, result.phase)
        if resumed(result.entry):
            pod_errors += self._nudge_workloads(namespace, name, now)
        with self._locks_guard:
            if result.deadline is None:
                self._deadlines.pop((namespace, name), None)
            else:
                self._deadlines[(namespace, name)] = result.deadline
        errors = [*outcome.errors.values(), *pod_errors]
        if errors:
            raise ReconcileError("; ".join(errors))
        return result

    # --- the kill switch: running pods of a Suspended or Retired agent -----------------

    def _enforce_on_reconcile(self, agent: Agent, phase: Phase) -> list[str]:
        """Remember whether the agent's pods must go; delete those that exist now."""
        namespace, name = agent.metadata.namespace or "", agent.metadata.name
        with self._locks_guard:
            if phase in KILL_PHASES:
                self._killing[(namespace, name)] = (phase, agent.metadata.uid)
            else:
                self._killing.pop((namespace, name), None)
        if phase not in KILL_PHASES:
            return []
        try:
            pods: Any = self.core.list_namespaced_pod(
                namespace, label_selector=f"{AGENT_LABEL}={name}"
            )
        except ApiException as exc:
            return [f"could not list the pods of agent {namespace}/{name}: {exc.reason}"]
        wire = [self.api.sanitize_for_serialization(p) for p in pods.items]
        return self._delete_pods(namespace, name, agent.metadata.uid, phase, wire)

    def _nudge_workloads(self, namespace: str, name: str, now: datetime) -> list[str]:
        """After a resume, touch the agent's workloads so their controllers, backed off by
        the refused creates, recreate the pods now instead of minutes later."""
        stamp = now.isoformat().replace("+00:00", "Z")
        patch = {"metadata": {"annotations": {RESUMED_ANNOTATION: stamp}}}
        api: dict[str, tuple[Any, Any]] = {
            "ReplicaSet": (
                self.apps.list_namespaced_replica_set,
                self.apps.patch_namespaced_replica_set,
            ),
            "StatefulSet": (
                self.apps.list_namespaced_stateful_set,
                self.apps.patch_namespaced_stateful_set,
            ),
            "DaemonSet": (
                self.apps.list_namespaced_daemon_set,
                self.apps.patch_namespaced_daemon_set,
            ),
        }
        errors: list[str] = []
        for kind in WORKLOAD_KINDS:
            list_fn, patch_fn = api[kind]
            try:
                wire = [self.api.sanitize_for_serialization(w) for w in list_fn(namespace).items]
                for workload in workloads_to_nudge(name, wire):
                    patch_fn(workload, namespace, patch)
                    log.info("resume of %s/%s: nudged %s %s", namespace, name, kind, workload)
            except ApiException as exc:
                if exc.status != 404:  # a workload deleted meanwhile
                    errors.append(f"could not nudge {kind}s of {namespace}/{name}: {exc.reason}")
        return errors

    def enforce_pod(self, namespace: str, agent_name: str, pod: dict[str, Any]) -> list[str]:
        """A pod of ``agent_name`` appeared or changed: delete it if its agent no longer admits.

        Catches pods admitted in the moment before the webhook learned of a suspension.
        An agent not reconciled yet since start-up is left to its first reconcile.
        """
        with self._locks_guard:
            known = self._killing.get((namespace, agent_name))
        if known is None:
            return []
        phase, uid = known
        with self._lock(namespace, agent_name):
            return self._delete_pods(namespace, agent_name, uid, phase, [pod])

    def _delete_pods(
        self,
        namespace: str,
        agent_name: str,
        agent_uid: str | None,
        phase: Phase,
        pods: list[dict[str, Any]],
    ) -> list[str]:
        with self._locks_guard:
            seen = frozenset(self._deleted_pods)
        errors: list[str] = []
        for victim in pods_to_delete(agent_name, phase, pods, seen):
            try:
                self.core.delete_namespaced_pod(
                    victim.name,
                    namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=KILL_GRACE_SECONDS,
                        preconditions=client.V1Preconditions(uid=victim.uid),
                    ),
                )
            except ApiException as exc:
                if exc.status in (404, 409):
                    continue  # gone already, or a new pod of the same name (not this one)
                errors.append(f"could not delete pod {namespace}/{victim.name}: {exc.reason}")
                continue
            self._remember_deleted(victim.uid)
            self._record_pod_deleted(namespace, agent_name, agent_uid, phase, victim)
        return errors

    def _remember_deleted(self, uid: str) -> None:
        with self._locks_guard:
            self._deleted_pods[uid] = None
            while len(self._deleted_pods) > DELETED_PODS_MEMORY:
                del self._deleted_pods[next(iter(self._deleted_pods))]

    def _record_pod_deleted(
        self,
        namespace: str,
        agent_name: str,
        agent_uid: str | None,
        phase: Phase,
        victim: PodDeletion,
    ) -> None:
        log.info("kill switch: %s", victim.message)
        self.audit.write(
            record(
                "pod-deleted",
                agent_uri=identity_uri(self.cluster_name, namespace, agent_name),
                agent_uid=agent_uid,
                agent_name=agent_name,
                namespace=namespace,
                actor=OPERATOR_ACTOR,
                outcome="deleted",
                reason=f"Agent{phase.value}",
                pod=victim.name,
                podUid=victim.uid,
                phase=phase.value,
                message=victim.message,
            )
        )
        self._post_event(
            namespace, agent_name, agent_uid, "Warning", "PodDeleted", victim.message, None
        )

    def _write_status(self, body: dict[str, Any], new: dict[str, Any]) -> bool:
        """Replace status only when it differs from what is stored (no write otherwise)."""
        meta = body["metadata"]
        try:
            old = AgentStatus.model_validate(body.get("status") or {}).to_wire()
        except ValueError:
            old = None
        if old == new:
            return False
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                "agents",
                meta["name"],
                [{"op": "add", "path": "/status", "value": new}],
                _content_type=JSON_PATCH,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False  # deleted meanwhile (with its namespace, say): nothing to report on
            raise
        return True

    def _write_invalid(self, body: dict[str, Any], error: str, now: datetime) -> None:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        try:
            old = AgentStatus.model_validate(status)
        except ValueError:
            old = AgentStatus()
        conds = invalid_conditions(old.conditions, meta.get("generation"), error, now)
        new = old.model_copy(
            update={"conditions": conds, "observed_generation": meta.get("generation")}
        )
        if new.phase is None:
            new = new.model_copy(update={"phase": Phase.PENDING})
        log.warning("Agent %s/%s cannot be reconciled: %s", meta["namespace"], meta["name"], error)
        self._write_status(body, new.to_wire())

    def _record_transition(self, agent: Agent, result: LifecycleResult) -> None:
        entry, event = result.entry, result.event
        assert entry is not None and event is not None
        namespace = agent.metadata.namespace or ""
        uri = identity_uri(self.cluster_name, namespace, agent.metadata.name)
        self.audit.write(
            record(
                "lifecycle",
                agent_uri=uri,
                agent_uid=agent.metadata.uid,
                agent_name=agent.metadata.name,
                namespace=namespace,
                actor=entry.actor,
                outcome=entry.to,
                reason=entry.reason,
                at=entry.at.isoformat().replace("+00:00", "Z"),
                **{"from": entry.from_, "to": entry.to, "message": entry.message},
                generation=agent.metadata.generation,
            )
        )
        self._post_event(
            namespace,
            agent.metadata.name,
            agent.metadata.uid,
            event.type,
            event.reason,
            event.message,
            entry.at,
        )

    def _post_event(
        self,
        namespace: str,
        agent_name: str,
        agent_uid: str | None,
        type_: str,
        reason: str,
        message: str,
        at: datetime | None,
    ) -> None:
        """An Event on the Agent (best effort: status and the audit log already have it)."""
        stamp = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
        try:
            event_body: Any = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{agent_name}.", "namespace": namespace},
                "involvedObject": {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Agent",
                    "name": agent_name,
                    "namespace": namespace,
                    "uid": agent_uid,
                },
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.instance,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            self.core.create_namespaced_event(namespace, event_body)
        except ApiException as exc:
            log.warning(
                "could not post Event for %s/%s: %s %s",
                namespace,
                agent_name,
                exc.status,
                exc.reason,
            )

    # --- deadlines (expiresAt / sunsetAt) ----------------------------------------------

    def due(self, now: datetime) -> list[tuple[str, str]]:
        with self._locks_guard:
            return sorted(k for k, t in self._deadlines.items() if t <= now)

    def retry_later(self, namespace: str, name: str, seconds: float) -> None:
        with self._locks_guard:
            self._deadlines[(namespace, name)] = datetime.now(UTC) + timedelta(seconds=seconds)

    def seconds_to_next(self, now: datetime, cap: float) -> float:
        with self._locks_guard:
            upcoming = min(self._deadlines.values(), default=None)
        if upcoming is None:
            return cap
        return max(0.0, min(cap, (upcoming - now).total_seconds()))

    # --- metrics ------------------------------------------------------------------------

    def _observe(
        self,
        namespace: str,
        name: str,
        phase: Phase,
        bindings: int,
        owner_missing: bool = False,
        lifetime: datetime | None = None,
    ) -> None:
        key = (namespace, name)
        with self._locks_guard:
            self._phases[key] = phase
            self._bindings[key] = bindings
            if owner_missing:
                self._owner_missing.add(key)
            else:
                self._owner_missing.discard(key)
            if lifetime is None:
                self._lifetimes.pop(key, None)
            else:
                self._lifetimes[key] = lifetime
        self.publish_metrics()

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._locks_guard:
            self._deadlines.pop(key, None)
            self._killing.pop(key, None)
            self._phases.pop(key, None)
            self._bindings.pop(key, None)
            self._owner_missing.discard(key)
            self._lifetimes.pop(key, None)
        self.publish_metrics()

    def publish_metrics(self, now: datetime | None = None) -> None:
        """Set the registry gauges from what the last reconcile of each agent saw; the
        clock calls it every round too, so an agent becomes overdue without an event."""
        now = now or datetime.now(UTC)
        with self._locks_guard:
            counts = Counter((ns, ph.value) for (ns, _), ph in self._phases.items())
            for key in self._metric_keys - set(counts):
                AGENTS.labels(*key).set(0)
            for key, n in counts.items():
                AGENTS.labels(*key).set(n)
            self._metric_keys |= set(counts)
            per_ns: Counter[str] = Counter()
            for (ns, _), n in self._bindings.items():
                per_ns[ns] += n
            ownerless = Counter(ns for ns, _ in self._owner_missing)
            overdue = Counter(
                ns
                for (ns, name), t in self._lifetimes.items()
                if is_overdue(self._phases.get((ns, name)), t, now)
            )
            for ns in {ns for ns, _ in self._metric_keys}:
                SCOPE_BINDINGS.labels(ns).set(per_ns.get(ns, 0))
                AGENTS_WITHOUT_OWNER.labels(ns).set(ownerless.get(ns, 0))
                AGENTS_OVERDUE.labels(ns).set(overdue.get(ns, 0))

    # --- AuthorityScope status ----------------------------------------------------------

    def refresh_scope(self, namespace: str, name: str, bound_agents: list[str]) -> bool:
        body = self._get("authorityscopes", namespace, name)
        return False if body is None else self.update_scope_status(body, bound_agents)

    def update_scope_status(self, body: dict[str, Any], bound_agents: list[str]) -> bool:
        """Write boundAgents, Ready and observedGeneration of a scope when they changed."""
        start = time.monotonic()
        meta = body["metadata"]
        old = dict(body.get("status") or {})
        try:
            AuthorityScope.parse(body)
            ready: ConditionStatus = "True"
            reason = "Valid"
            message = f"bound to {len(bound_agents)} agent(s)"
        except ValueError as exc:
            ready = "False"
            reason = "InvalidSpec"
            message = f"the AuthorityScope cannot be granted: {exc}"[:4000]
        try:
            old_status = AuthorityScopeStatus.model_validate(old)
        except ValueError:
            old_status = AuthorityScopeStatus()
        now = datetime.now(UTC).replace(microsecond=0)
        conds = set_condition(
            old_status.conditions, "Ready", ready, reason, message, meta.get("generation"), now
        )
        new = AuthorityScopeStatus(
            bound_agents=sorted(set(bound_agents)),
            conditions=conds,
            observed_generation=meta.get("generation"),
        ).to_wire()
        changed = new != old_status.to_wire()
        if changed:
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    meta["namespace"],
                    "authorityscopes",
                    meta["name"],
                    [{"op": "add", "path": "/status", "value": new}],
                    _content_type=JSON_PATCH,
                )
            except ApiException as exc:
                if exc.status != 404:
                    RECONCILE_ERRORS.labels("AuthorityScope").inc()
                    raise
                changed = False  # deleted meanwhile
        RECONCILE_DURATION.labels("AuthorityScope").observe(time.monotonic() - start)
        return changed
