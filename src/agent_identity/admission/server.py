"""The admission process's shell: aiohttp handlers around the pure decisions.

Each handler parses the AdmissionReview, calls a pure decision function with
the watch-fed registry and the clock, and answers. The only API calls on the
hot path: a GET per referenced object to confirm a denial that rests on memory
(``Decision.confirm``), and the SubjectAccessReviews of the escalation guard
(``Decision.permissions``). Metrics and audit records are written here.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_identity import GROUP, VERSION
from agent_identity.admission import approvals, pods, provenance, resources
from agent_identity.admission.review import Decision, Permission, Ref, overlay, response
from agent_identity.admission.watch import PLURALS
from agent_identity.admission.webhookconfig import (
    PATH_MUTATE_APPROVAL_STATUS,
    PATH_MUTATE_PODS,
    PATH_MUTATE_PROVENANCE,
    PATH_VALIDATE_APPROVAL_REQUESTS,
    PATH_VALIDATE_PODS,
    PATH_VALIDATE_RESOURCES,
)
from agent_identity.audit import AuditLog
from agent_identity.metrics import (
    ADMISSION_LATENCY,
    ADMISSION_REQUESTS,
    APPROVALS_DECIDED,
    TOKEN_TTL_ISSUED,
)
from agent_identity.registry import Registry

log = logging.getLogger(__name__)

PROBE_PREFIX = "agentidentity-probe-"
Decide = Callable[[dict[str, Any], Registry, datetime], Decision]
# (name, port, factory(registry, api_client)) of extra apps served by the process
AppFactory = Callable[[Registry, client.ApiClient], web.Application]


def decision_app_factory(audit: AuditLog, cluster_name: str) -> AppFactory | None:
    """The decision API's app factory (issue 7), or None when that module is not there yet."""
    try:
        module = importlib.import_module("agent_identity.authz.service")
    except ModuleNotFoundError as exc:
        if exc.name in ("agent_identity.authz.service",):
            return None
        raise
    build = getattr(module, "build_decision_app", None)
    if build is None:
        return None

    def factory(registry: Registry, api_client: client.ApiClient) -> web.Application:
        app: web.Application = build(registry, api_client, audit=audit, cluster_name=cluster_name)
        return app

    return factory


@dataclass
class Admission:
    """The webhook handlers and their dependencies."""

    registry: Registry
    api_client: client.ApiClient | None
    audit: AuditLog
    decisions_url: str
    # The PEM CA bundle of the decision API's certificate now (None: plain HTTP, --dev).
    decisions_ca: Callable[[], str | None] = field(default=lambda: None)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # the SubjectAccessReview and GET functions; replaceable in tests and benchmarks
    sar: Callable[[dict[str, Any], Permission], bool] | None = None
    fetch: Callable[[Ref], dict[str, Any] | None] | None = None
    # identities allowed to write approval status as the system (the decision API's own)
    system_users: Callable[[], list[str]] = field(default=lambda: [])
    # names of probe pods this process was asked about (--dev: proof the API server calls us)
    probes_seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.api_client is not None:
            self.sar = self.sar or self._sar
            self.fetch = self.fetch or self._fetch

    # -- the API calls allowed on the hot path ----------------------------------------

    def _fetch(self, ref: Ref) -> dict[str, Any] | None:
        kind, namespace, name = ref
        api = client.CustomObjectsApi(self.api_client)
        try:
            body: Any = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    def _sar(self, request: dict[str, Any], perm: Permission) -> bool:
        info = request.get("userInfo") or {}
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=info.get("username"),
                groups=info.get("groups"),
                uid=info.get("uid"),
                extra=info.get("extra"),
                resource_attributes=client.V1ResourceAttributes(
                    namespace=perm.namespace,
                    verb=perm.verb,
                    group=perm.group,
                    resource=perm.resource,
                    subresource=perm.subresource or None,
                    name=perm.name or None,
                ),
            )
        )
        result = client.AuthorizationV1Api(self.api_client).create_subject_access_review(review)
        return bool(result.status and result.status.allowed)

    async def _confirm(
        self, request: dict[str, Any], decision: Decision, decide: Decide, now: datetime
    ) -> Decision:
        """Memory said no: GET what the decision rested on and decide once more."""
        assert self.fetch is not None
        refs = list(dict.fromkeys(decision.confirm))
        bodies = await asyncio.gather(*(asyncio.to_thread(self.fetch, ref) for ref in refs))
        fresh = dict(zip(refs, bodies, strict=True))
        return decide(request, overlay(self.registry, fresh), now)

    async def _guard(self, request: dict[str, Any], decision: Decision) -> Decision:
        """The escalation guard: the user must hold every permission granted."""
        assert self.sar is not None
        if decision.waiver is not None and await asyncio.to_thread(
            self.sar, request, decision.waiver
        ):
            return decision
        held = await asyncio.gather(
            *(asyncio.to_thread(self.sar, request, p) for p in decision.permissions)
        )
        for perm, ok in zip(decision.permissions, held, strict=True):
            if not ok:
                return resources.escalation_denial(request, decision, perm)
        return decision

    # -- handlers --------------------------------------------------------------------------

    async def review(self, web_request: web.Request, webhook: str, decide: Decide) -> web.Response:
        started = time.perf_counter()
        body = await web_request.json()
        request: dict[str, Any] = body.get("request") or {}
        uid = str(request.get("uid") or "")
        if str(request.get("name") or "").startswith(PROBE_PREFIX):
            self.probes_seen.add(str(request["name"]))
        now = self.clock()
        if not self.registry.is_synced():
            decision = Decision(
                False,
                "agent-identity admission is starting (its registry is not synced yet); retry "
                "in a few seconds",
                "NotSynced",
            )
        else:
            try:
                decision = decide(request, self.registry, now)
                if not decision.allowed and decision.confirm and self.fetch is not None:
                    decision = await self._confirm(request, decision, decide, now)
                if decision.allowed and decision.permissions and self.sar is not None:
                    decision = await self._guard(request, decision)
            except Exception:
                log.exception("%s: review %s failed", webhook, uid)
                decision = Decision(
                    False, "agent-identity admission failed to decide; see its log", "Error"
                )
        for rec in decision.audit:
            self.audit.write(rec)
            if rec.get("kind") == "approval" and rec.get("verdict"):
                APPROVALS_DECIDED.labels(rec["verdict"]).inc()
        if decision.token_ttl is not None and decision.patch:
            TOKEN_TTL_ISSUED.observe(decision.token_ttl)
        outcome = "allowed" if decision.allowed else "denied"
        if decision.allowed and decision.warnings:
            outcome = "warned"
        ADMISSION_REQUESTS.labels(webhook, outcome, decision.reason).inc()
        ADMISSION_LATENCY.labels(webhook).observe(time.perf_counter() - started)
        return web.json_response(response(uid, decision))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)

        def route(path: str, webhook: str, decide: Decide) -> None:
            async def handler(req: web.Request) -> web.Response:
                return await self.review(req, webhook, decide)

            app.router.add_post(path, handler)

        route(PATH_VALIDATE_PODS, "validate-pods", pods.validate_pod)
        for mode in pods.ENFORCE_MODES:

            def enforced(
                r: dict[str, Any], reg: Registry, now: datetime, mode: pods.EnforceMode = mode
            ) -> Decision:
                return pods.validate_pod(r, reg, now, mode)

            route(f"{PATH_VALIDATE_PODS}/{mode}", f"validate-pods-{mode}", enforced)

        def mutate_pods(r: dict[str, Any], reg: Registry, now: datetime) -> Decision:
            return pods.mutate_pod(r, reg, now, self.decisions_url, self.decisions_ca())

        route(PATH_MUTATE_PODS, "mutate-pods", mutate_pods)
        route(PATH_VALIDATE_RESOURCES, "validate-resources", resources.validate_resource)
        route(
            PATH_MUTATE_PROVENANCE,
            "mutate-provenance",
            lambda r, _reg, _now: provenance.mutate(r),
        )

        def approval_status(r: dict[str, Any], reg: Registry, now: datetime) -> Decision:
            return approvals.review_status(r, reg, now, system_users=self.system_users())

        route(PATH_MUTATE_APPROVAL_STATUS, "mutate-approval-status", approval_status)

        def approval_creation(r: dict[str, Any], _reg: Registry, _now: datetime) -> Decision:
            return approvals.review_creation(r, self.system_users())

        route(PATH_VALIDATE_APPROVAL_REQUESTS, "validate-approval-requests", approval_creation)
        add_health_routes(app, self.registry)
        return app


def add_health_routes(app: web.Application, registry: Registry) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if registry.is_synced():
            return web.Response(text="ok")
        missing = sorted(set(PLURALS) - registry.synced)
        return web.Response(status=503, text=f"registry not synced: {', '.join(missing)}")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
