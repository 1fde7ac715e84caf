"""The decision API: AuthZEN Authorization API 1.0 over the watch-fed Registry.

Thin HTTP shell: parse (``protocol``), authenticate and authorize the caller (``tokens``),
read the agent, its scopes, policies and approval requests from the Registry (never an API
call per request), decide (``engine``), open or reuse an ApprovalRequest on escalate, audit.

Who may ask (see DESIGN.md): the caller sends ``Authorization: Bearer <Kubernetes token>``
with audience agentidentity.io (401 without a valid one). An agent's ServiceAccount
(``system:serviceaccount:<ns>:agent-<name>`` of a registered Agent) may ask about itself only
(403 otherwise). Any other caller needs the RBAC verb ``evaluate`` on that Agent
(``agents.agentidentity.io``, SubjectAccessReview) and, for evaluations, must forward the
agent's own token in ``subject.properties.token`` (401 if it does not authenticate, 403 if
it is another agent's). Searches are questions about authority and have no effect, so a
caller with ``evaluate`` needs no forwarded token for them. The lifecycle is read from the
Registry on every call, so a retired or suspended agent is refused as soon as the watch
delivers the change, although token reviews are cached.

Endpoints: POST /access/v1/evaluation, /access/v1/evaluations, /access/v1/search/action,
/access/v1/search/subject, /access/v1/search/resource (always empty: resources are not
enumerable), GET /.well-known/authzen-configuration, GET /v1/approvals/{ns}/{name} (a waiting
agent polls), GET /v1/whoami.

Expiry: a background task (every ``EXPIRY_INTERVAL`` seconds) marks Pending requests past
``spec.expiresAt`` Expired through the status subresource (the approvals webhook lets the
process's own identity, from SelfSubjectReview, recompute status), and keeps the
APPROVALS_PENDING gauge and the APPROVAL_WAIT histogram current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web

from agent_identity import API_VERSION, GROUP, VERSION
from agent_identity.api import Agent, ApprovalRequest, ApprovalState
from agent_identity.api.common import AGENT_LABEL
from agent_identity.audit import AuditLog, record
from agent_identity.authz import engine, protocol
from agent_identity.authz.approvals import register_system_user
from agent_identity.authz.engine import Decision, Outcome
from agent_identity.authz.tokens import AuthError, Caller, TokenReviewer, bearer_token
from agent_identity.metrics import (
    APPROVAL_WAIT,
    APPROVALS_PENDING,
    DECISION_LATENCY,
    DECISIONS,
)
from agent_identity.registry import Registry

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 5.0
_DECISION_COUNTERS = {outcome: DECISIONS.labels(outcome.value) for outcome in Outcome}
REQUEST_ID = "X-Request-ID"
MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class Resolved:
    """The agent an evaluation is about, once the caller may ask about it."""

    agent: Agent
    actor: str  # the authenticated caller
    jti: str | None  # the agent's token credential id


class DecisionService:
    def __init__(
        self,
        registry: Registry,
        api_client: Any,
        *,
        audit: AuditLog,
        cluster_name: str,
        reviewer: TokenReviewer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry = registry
        self.api_client = api_client
        self.audit = audit
        self.cluster_name = cluster_name
        self.reviewer = reviewer or TokenReviewer(api_client)
        self.clock = clock
        self.system_username: str | None = None
        self._final_seen: set[tuple[str, str]] = set()

    # identity --------------------------------------------------------------------------

    def agent_uri(self, agent: Agent) -> str:
        if agent.status.identity is not None:
            return agent.status.identity.uri
        return f"agent://{self.cluster_name}/{agent.metadata.namespace}/{agent.metadata.name}"

    async def authenticate(self, request: web.Request) -> Caller:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise AuthError(
                401,
                "no credentials: send 'Authorization: Bearer <Kubernetes token>' with "
                f"audience {self.reviewer.audience}",
            )
        return await self.reviewer.review(token)

    def agent_of(self, caller: Caller) -> Agent | None:
        """The registered agent whose ServiceAccount the caller is, if any."""
        key = caller.agent_key()
        return self.registry.agent(*key) if key is not None else None

    async def resolve(
        self, caller: Caller, namespace: str, name: str, token: str | None, *, need_token: bool
    ) -> Resolved:
        """May ``caller`` ask about agent namespace/name? Returns it or raises AuthError."""
        own = self.agent_of(caller)
        if own is not None:
            if (own.metadata.namespace, own.metadata.name) != (namespace, name):
                raise AuthError(
                    403,
                    f"agent {own.metadata.namespace}/{own.metadata.name} may only evaluate "
                    f"for itself, not for {namespace}/{name}",
                )
            return Resolved(own, caller.username, caller.jti)
        allowed, _ = await self.reviewer.may(caller, "evaluate", "agents", namespace, name)
        if not allowed:
            raise AuthError(
                403,
                f"{caller.username} may not evaluate for agent {namespace}/{name}: it needs the "
                f"RBAC verb 'evaluate' on agents.{GROUP} (bind the ClusterRole "
                "agentidentity-evaluator in that namespace)",
            )
        agent = self.registry.agent(namespace, name)
        if agent is None:
            raise AuthError(404, f"agent {namespace}/{name} is not registered")
        if not need_token:
            return Resolved(agent, caller.username, None)
        if token is None:
            raise AuthError(
                401,
                f"{caller.username} is not agent {namespace}/{name}: forward the agent's own "
                "token in subject.properties.token",
            )
        forwarded = await self.reviewer.review(token)
        if forwarded.agent_key() != (namespace, name):
            raise AuthError(
                403,
                f"the token in subject.properties.token belongs to {forwarded.username}, not "
                f"to agent {namespace}/{name}",
            )
        return Resolved(agent, caller.username, forwarded.jti)

    # evaluation ------------------------------------------------------------------------

    async def evaluate(
        self, caller: Caller, item: protocol.Evaluation, request_id: str
    ) -> dict[str, Any]:
        """One evaluation -> an AuthZEN result object; raises AuthError or ProtocolError."""
        subject = item.subject
        if subject.type != protocol.SUBJECT_TYPE:
            return {
                "decision": False,
                "context": {
                    "outcome": "deny",
                    "reason": f"subject.type {subject.type!r} is not known here; subjects are "
                    f"of type {protocol.SUBJECT_TYPE!r} with id '<namespace>/<agent>'",
                    "rule": "default/unknown-subject-type",
                },
            }
        namespace, name = subject.agent_key()
        resolved = await self.resolve(caller, namespace, name, subject.token, need_token=True)
        started = time.perf_counter()
        agent = resolved.agent
        now = self.clock()
        req = engine.Request(
            action=item.action.name,
            resource_type=item.resource.type,
            resource_id=item.resource.id,
            action_properties=item.action.properties,
            resource_properties=item.resource.properties,
            context=item.context,
            caller=caller.username,
        )
        scopes, missing = self.registry.scopes_of(agent)
        decision = engine.decide(
            agent,
            scopes,
            self.registry.policies_in(namespace),
            self.registry.approvals_of(namespace, name),
            req,
            now,
        )
        context: dict[str, Any] = {
            "outcome": decision.outcome.value,
            "reason": decision.reason,
            "rule": decision.rule,
            "agent": self.agent_uri(agent),
        }
        if missing:
            context["missingScopes"] = missing
        if decision.outcome == Outcome.ESCALATE:
            context["approvalRequest"] = await self.open_approval(
                agent, req, decision, caller.username, now
            )
            context["approvers"] = {
                "users": list(decision.approver_users),
                "groups": list(decision.approver_groups),
                "minApprovals": decision.min_approvals,
            }
        elif decision.approval_request:
            context["approvalRequest"] = decision.approval_request
        _DECISION_COUNTERS[decision.outcome].inc()
        DECISION_LATENCY.observe(time.perf_counter() - started)
        self.audit.write(
            record(
                "decision",
                agent_uri=context["agent"],
                agent_uid=agent.metadata.uid,
                agent_name=name,
                namespace=namespace,
                actor=resolved.actor,
                outcome=decision.outcome.value,
                reason=decision.reason,
                rule=decision.rule,
                request_id=request_id,
                jti=resolved.jti,
                action=req.action,
                resource=f"{req.resource_type}/{req.resource_id}",
                scopeGenerations={s.metadata.name: s.metadata.generation for s in scopes},
                approvalRequest=context.get("approvalRequest"),
            )
        )
        return {"decision": decision.allowed, "context": context}

    async def open_approval(
        self, agent: Agent, req: engine.Request, decision: Decision, caller: str, now: datetime
    ) -> str:
        """Create or reuse the ApprovalRequest for this agent, action and resource."""
        namespace = agent.metadata.namespace or ""
        base = engine.approval_request_name(
            agent.metadata.uid or "", req.action, req.resource_type, req.resource_id
        )
        attempt = 0
        for existing in self.registry.approvals_of(namespace, agent.metadata.name):
            n = engine.approval_attempt(existing.metadata.name, base)
            if n is None or n < attempt:
                continue
            attempt = n if engine.effective_state(existing, now) == ApprovalState.PENDING else n + 1
        for _ in range(8):
            name = engine.approval_request_name(
                agent.metadata.uid or "", req.action, req.resource_type, req.resource_id, attempt
            )
            seen = self.registry.approval(namespace, name)
            if seen is not None:
                if engine.effective_state(seen, now) == ApprovalState.PENDING:
                    return f"{namespace}/{name}"
                attempt += 1
                continue
            body = self._approval_body(agent, req, decision, caller, now, name)
            created, current = await asyncio.to_thread(self._create_or_get, namespace, body)
            if created:
                self.audit.write(
                    record(
                        "approval",
                        agent_uri=self.agent_uri(agent),
                        agent_uid=agent.metadata.uid,
                        agent_name=agent.metadata.name,
                        namespace=namespace,
                        actor=caller,
                        outcome="opened",
                        reason=decision.reason,
                        rule=decision.rule,
                        approvalRequest=f"{namespace}/{name}",
                        action=req.action,
                    )
                )
                return f"{namespace}/{name}"
            if current is not None and engine.effective_state(current, now) == (
                ApprovalState.PENDING
            ):
                return f"{namespace}/{name}"
            attempt += 1
        raise AuthError(503, "could not open an ApprovalRequest; try again")

    def _approval_body(
        self,
        agent: Agent,
        req: engine.Request,
        decision: Decision,
        caller: str,
        now: datetime,
        name: str,
    ) -> dict[str, Any]:
        spec = {
            "agent": {"name": agent.metadata.name},
            "agentUid": agent.metadata.uid or "",
            "action": req.action,
            "resource": {"type": req.resource_type, "id": req.resource_id},
            "context": dict(req.context),
            "requestedAt": _rfc3339(now),
            "requestedBy": caller,
            "policies": list(decision.policies),
            "approvers": {
                "users": list(decision.approver_users),
                "groups": list(decision.approver_groups),
            },
            "minApprovals": decision.min_approvals,
            "expiresAt": _rfc3339(engine.expires_at(now, decision.timeout_seconds)),
            "grantSeconds": decision.grant_seconds,
        }
        return {
            "apiVersion": API_VERSION,
            "kind": "ApprovalRequest",
            "metadata": {
                "name": name,
                "namespace": agent.metadata.namespace,
                "labels": {AGENT_LABEL: agent.metadata.name},
            },
            "spec": spec,
        }

    def _create_or_get(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[bool, ApprovalRequest | None]:
        from kubernetes import client

        api = client.CustomObjectsApi(self.api_client)
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, "approvalrequests", body)
            return True, None
        except client.ApiException as exc:
            if exc.status != 409:
                raise AuthError(
                    503, f"could not open ApprovalRequest {body['metadata']['name']}: {exc.reason}"
                ) from exc
        try:
            raw = cast(
                dict[str, Any],
                api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "approvalrequests", body["metadata"]["name"]
                ),
            )
        except client.ApiException:
            return False, None
        try:
            return False, ApprovalRequest.parse(raw)
        except ValueError:
            return False, None

    # searches --------------------------------------------------------------------------

    async def search_action(self, caller: Caller, search: protocol.ActionSearch) -> list[Any]:
        if search.subject.type != protocol.SUBJECT_TYPE:
            return []
        namespace, name = search.subject.agent_key()
        try:
            resolved = await self.resolve(caller, namespace, name, None, need_token=False)
        except AuthError as exc:
            if exc.status == 404:
                return []  # unknown entity: empty results, as the scenario requires
            raise
        agent = resolved.agent
        scopes, _ = self.registry.scopes_of(agent)
        req = engine.Request(
            action="",
            resource_type=search.resource.type,
            resource_id=search.resource.id,
            resource_properties=search.resource.properties,
            context=search.context,
            caller=caller.username,
        )
        found = engine.search_actions(
            agent,
            scopes,
            self.registry.policies_in(namespace),
            self.registry.approvals_of(namespace, name),
            req,
            self.clock(),
        )
        return [{"name": action, "properties": {"rule": d.rule}} for action, d in found]

    async def search_subject(self, caller: Caller, search: protocol.SubjectSearch) -> list[Any]:
        if search.subject_type != protocol.SUBJECT_TYPE:
            return []
        own = self.agent_of(caller)
        agents = [own] if own is not None else self.registry.all_agents()
        if search.namespace is not None:
            agents = [a for a in agents if a.metadata.namespace == search.namespace]
        allowed_ns: dict[str, bool] = {}
        candidates: list[engine.Candidate] = []
        for agent in agents:
            namespace = agent.metadata.namespace or ""
            if own is None:
                if namespace not in allowed_ns:
                    ok, _ = await self.reviewer.may(caller, "evaluate", "agents", namespace)
                    allowed_ns[namespace] = ok
                if not allowed_ns[namespace]:
                    continue
            scopes, _ = self.registry.scopes_of(agent)
            candidates.append(
                engine.Candidate(
                    agent,
                    scopes,
                    self.registry.policies_in(namespace),
                    self.registry.approvals_of(namespace, agent.metadata.name),
                )
            )
        req = engine.Request(
            action=search.action.name,
            resource_type=search.resource.type,
            resource_id=search.resource.id,
            action_properties=search.action.properties,
            resource_properties=search.resource.properties,
            context=search.context,
            caller=caller.username,
        )
        found = engine.search_subjects(candidates, req, self.clock())
        return [
            {
                "type": protocol.SUBJECT_TYPE,
                "id": engine.agent_ref(agent),
                "properties": {"rule": d.rule, "agent": self.agent_uri(agent)},
            }
            for agent, d in found
        ]

    # approvals -------------------------------------------------------------------------

    async def approval_view(self, caller: Caller, namespace: str, name: str) -> dict[str, Any]:
        req = self.registry.approval(namespace, name)
        if req is None:
            raw = await asyncio.to_thread(self._get_approval, namespace, name)
            req = ApprovalRequest.parse(raw) if raw is not None else None
        if req is None:
            raise AuthError(404, f"ApprovalRequest {namespace}/{name} not found")
        await self.resolve(caller, namespace, req.spec.agent.name, None, need_token=False)
        now = self.clock()
        state = engine.effective_state(req, now)
        grant = req.status.grant
        live = (
            state == ApprovalState.APPROVED
            and grant is not None
            and engine._aware(grant.expires_at) > now
        )
        return {
            "name": f"{namespace}/{name}",
            "agent": f"{namespace}/{req.spec.agent.name}",
            "action": req.spec.action,
            "resource": req.spec.resource.to_wire(),
            "state": state.value,
            "grantActive": live,
            "grant": grant.to_wire() if grant is not None else None,
            "expiresAt": _rfc3339(req.spec.expires_at),
            "approvers": req.spec.approvers.to_wire(),
            "minApprovals": req.spec.min_approvals,
            "decisions": [d.to_wire() for d in req.status.decisions],
        }

    def _get_approval(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes import client

        try:
            raw = cast(
                dict[str, Any],
                client.CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "approvalrequests", name
                ),
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise AuthError(503, f"could not read ApprovalRequest: {exc.reason}") from exc
        return raw

    async def expire_once(self) -> int:
        """Mark expired requests Expired; update the pending gauge. Returns how many expired."""
        now = self.clock()
        pending = 0
        expired: list[ApprovalRequest] = []
        for (namespace, name), req in list(self.registry.approvals.items()):
            state = engine.effective_state(req, now)
            if state == ApprovalState.PENDING:
                pending += 1
                continue
            if req.status.state == ApprovalState.PENDING and state == ApprovalState.EXPIRED:
                expired.append(req)
            key = (namespace, name)
            if key not in self._final_seen:
                self._final_seen.add(key)
                end = max((d.at for d in req.status.decisions), default=req.spec.expires_at)
                waited = engine._aware(end) - engine._aware(req.spec.requested_at)
                APPROVAL_WAIT.observe(max(0.0, waited.total_seconds()))
        APPROVALS_PENDING.set(pending)
        for req in expired:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._mark_expired, req)
        return len(expired)

    def _mark_expired(self, req: ApprovalRequest) -> None:
        from kubernetes import client

        client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            req.metadata.namespace or "",
            "approvalrequests",
            req.metadata.name,
            {"status": {"state": ApprovalState.EXPIRED.value}},
        )

    async def expiry_loop(self, interval: float = EXPIRY_INTERVAL) -> None:
        while True:
            try:
                await self.expire_once()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("approval expiry round failed")
            await asyncio.sleep(interval)


def _rfc3339(value: datetime) -> str:
    return engine._ts(value)


SERVICE_KEY = web.AppKey("decision_service", DecisionService)


def _request_id(request: web.Request) -> str:
    rid = request.headers.get(REQUEST_ID, "")
    if not rid or len(rid) > MAX_REQUEST_ID or not rid.isprintable():
        rid = uuid.uuid4().hex
    return rid


def _json(data: Any, status: int, rid: str) -> web.Response:
    return web.json_response(data, status=status, headers={REQUEST_ID: rid})


def _error(status: int, message: str, rid: str) -> web.Response:
    return _json(protocol.error_body(message, status), status, rid)


Handler = Callable[[web.Request, DecisionService, str], Awaitable[web.Response]]


def _endpoint(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Request id, error mapping (400/401/403/404/503) and never a 5xx for bad input."""

    async def handler(request: web.Request) -> web.Response:
        rid = _request_id(request)
        service = request.app[SERVICE_KEY]
        try:
            return await fn(request, service, rid)
        except protocol.ProtocolError as exc:
            return _error(400, exc.message, rid)
        except AuthError as exc:
            return _error(exc.status, exc.message, rid)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("decision API request %s failed", rid)
            return _error(500, f"internal error (request id {rid})", rid)

    return handler


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    return protocol.parse_json_body(request.headers.get("Content-Type"), raw)


async def _evaluation(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    item = protocol.parse_evaluation(await _body(request))
    return _json(await service.evaluate(caller, item, rid), 200, rid)


async def _evaluations(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    batch = protocol.parse_batch(await _body(request))
    if batch.single:
        item = batch.items[0]
        assert isinstance(item, protocol.Evaluation)
        return _json(await service.evaluate(caller, item, rid), 200, rid)
    results: list[dict[str, Any]] = []
    for i, item in enumerate(batch.items):
        if isinstance(item, protocol.ProtocolError):
            result: dict[str, Any] = {
                "decision": False,
                "context": {"error": {"status": 400, "message": item.message}},
            }
        else:
            try:
                result = await service.evaluate(caller, item, f"{rid}/{i}")
            except protocol.ProtocolError as exc:
                result = {
                    "decision": False,
                    "context": {"error": {"status": 400, "message": exc.message}},
                }
            except AuthError as exc:
                result = {
                    "decision": False,
                    "context": {"error": {"status": exc.status, "message": exc.message}},
                }
        results.append(result)
        if batch.semantic == "deny_on_first_deny" and not result["decision"]:
            break
        if batch.semantic == "permit_on_first_permit" and result["decision"]:
            break
    return _json({"evaluations": results}, 200, rid)


async def _search_action(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    search = protocol.parse_action_search(await _body(request))
    results = await service.search_action(caller, search)
    return _json({"results": results, "page": {"next_token": ""}}, 200, rid)


async def _search_subject(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    search = protocol.parse_subject_search(await _body(request))
    results = await service.search_subject(caller, search)
    return _json({"results": results, "page": {"next_token": ""}}, 200, rid)


async def _search_resource(
    request: web.Request, service: DecisionService, rid: str
) -> web.Response:
    await service.authenticate(request)
    protocol.parse_resource_search(await _body(request))
    # Resources (services, repositories...) live outside the cluster: not enumerable here.
    return _json({"results": [], "page": {"next_token": ""}}, 200, rid)


async def _configuration(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    base = str(request.url.origin())
    return _json(
        {
            "policy_decision_point": base,
            "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
            "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
            "search_subject_endpoint": f"{base}/access/v1/search/subject",
            "search_resource_endpoint": f"{base}/access/v1/search/resource",
            "search_action_endpoint": f"{base}/access/v1/search/action",
            "capabilities": [],
        },
        200,
        rid,
    )


async def _approval(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    view = await service.approval_view(
        caller, request.match_info["namespace"], request.match_info["name"]
    )
    return _json(view, 200, rid)


async def _whoami(request: web.Request, service: DecisionService, rid: str) -> web.Response:
    caller = await service.authenticate(request)
    agent = service.agent_of(caller)
    body: dict[str, Any] = {"username": caller.username, "groups": list(caller.groups)}
    if agent is not None:
        phase, _why = engine.effective_phase(agent, service.clock())
        body.update(
            agent=engine.agent_ref(agent),
            identity=service.agent_uri(agent),
            uid=agent.metadata.uid,
            phase=phase.value,
        )
    else:
        body["agent"] = None
    return _json(body, 200, rid)


def build_decision_app(
    registry: Registry,
    api_client: Any,
    *,
    audit: AuditLog,
    cluster_name: str,
    reviewer: TokenReviewer | None = None,
    expiry_interval: float | None = EXPIRY_INTERVAL,
) -> web.Application:
    """The decision API as an aiohttp application (the admission process serves it).

    ``expiry_interval`` None disables the background expiry task (benchmarks).
    ``app[SERVICE_KEY].system_username`` is the process's own identity once started: pass it
    to ``approvals.review_status_update(system_users=...)``.
    """
    service = DecisionService(
        registry, api_client, audit=audit, cluster_name=cluster_name, reviewer=reviewer
    )
    app = web.Application(client_max_size=protocol.MAX_BODY)
    app[SERVICE_KEY] = service
    app.router.add_post("/access/v1/evaluation", _endpoint(_evaluation))
    app.router.add_post("/access/v1/evaluations", _endpoint(_evaluations))
    app.router.add_post("/access/v1/search/action", _endpoint(_search_action))
    app.router.add_post("/access/v1/search/subject", _endpoint(_search_subject))
    app.router.add_post("/access/v1/search/resource", _endpoint(_search_resource))
    app.router.add_get("/.well-known/authzen-configuration", _endpoint(_configuration))
    app.router.add_get("/v1/approvals/{namespace}/{name}", _endpoint(_approval))
    app.router.add_get("/v1/whoami", _endpoint(_whoami))

    if expiry_interval is not None:
        interval = expiry_interval

        async def background(app: web.Application) -> Any:
            try:
                service.system_username = await asyncio.to_thread(_self_username, api_client)
                register_system_user(service.system_username)
            except Exception:
                log.warning("could not learn this process's identity (SelfSubjectReview)")
            task = asyncio.create_task(service.expiry_loop(interval))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(background)
    return app


def _self_username(api_client: Any) -> str:
    from agent_identity.authz.tokens import self_username

    return self_username(api_client)
