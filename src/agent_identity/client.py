"""A small client for code running inside an agent pod: who am I, may I, wait for a person.

Standard library only (urllib), so an agent image needs nothing more than this package.

The admission webhook gives every admitted agent pod what the client needs:

* the projected, audience-bound token at ``TOKEN_FILE_PATH``
  (``/var/run/secrets/agentidentity.io/token/token``); the kubelet rotates it, so
  the client re-reads the file on every call and never caches the token;
* the decision API's URL in ``$AGENT_IDENTITY_DECISIONS_URL``;
* in a cluster, where the decision API speaks HTTPS, the CA bundle (PEM) of its
  serving certificate in ``$AGENT_IDENTITY_DECISIONS_CA``.

The certificate is verified against, in this order: ``ca_file`` (or the file named by
``$AGENT_IDENTITY_DECISIONS_CA_FILE``), the PEM in ``$AGENT_IDENTITY_DECISIONS_CA``,
else the system trust store. ``agent-identity admission --dev`` serves plain HTTP.

Typical use::

    client = AgentClient()
    decision = client.check("deploy.production", "service", "payments-api")
    if decision.outcome == "escalate":
        decision = client.wait_for_approval(decision, timeout=600)
    if not decision.allowed:
        raise PermissionError(decision.reason)
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agent_identity.api.common import DECISIONS_CA_ENV, DECISIONS_URL_ENV
from agent_identity.identity.token import TOKEN_FILE_PATH

CA_FILE_ENV = "AGENT_IDENTITY_DECISIONS_CA_FILE"
DEFAULT_TIMEOUT = 10.0
DEFAULT_POLL_INTERVAL = 1.0
# The resource of a check that names none (the same default as `kubectl agent can-i`).
ANY_RESOURCE = ("any", "*")

Outcome = Literal["allow", "deny", "escalate"]
OUTCOMES: tuple[Outcome, ...] = ("allow", "deny", "escalate")
_OUTCOME_BY_NAME: dict[str, Outcome] = {o: o for o in OUTCOMES}


class ClientError(Exception):
    """No answer from the decision API (not a refusal: a refusal is a ``Decision``)."""


class NotAnAgentPod(ClientError):
    """The agent token is not where the admission webhook mounts it."""


class ConfigurationError(ClientError):
    """The decision API's URL or CA is not configured."""


class DecisionAPIError(ClientError):
    """The decision API answered with an error status (401, 403, 404, 5xx) or was unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WhoAmI:
    """Who the decision API says the token belongs to (``GET /v1/whoami``)."""

    username: str
    groups: tuple[str, ...]
    agent: str | None  # "<namespace>/<name>" when the token is a registered agent's
    identity: str | None  # agent://<cluster>/<namespace>/<name>
    uid: str | None
    phase: str | None

    @property
    def namespace(self) -> str | None:
        return self.agent.split("/", 1)[0] if self.agent else None

    @property
    def name(self) -> str | None:
        return self.agent.split("/", 1)[1] if self.agent else None

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> WhoAmI:
        agent = body.get("agent")
        return cls(
            username=str(body.get("username") or ""),
            groups=tuple(str(g) for g in body.get("groups") or ()),
            agent=str(agent) if agent else None,
            identity=_opt_str(body.get("identity")),
            uid=_opt_str(body.get("uid")),
            phase=_opt_str(body.get("phase")),
        )


@dataclass(frozen=True)
class Evaluation:
    """What was asked: kept with the answer so an approved escalation can be asked again."""

    action: str
    resource_type: str = ANY_RESOURCE[0]
    resource_id: str = ANY_RESOURCE[1]
    context: Mapping[str, Any] = field(default_factory=dict)
    action_properties: Mapping[str, Any] = field(default_factory=dict)
    resource_properties: Mapping[str, Any] = field(default_factory=dict)

    def body(self, subject_id: str) -> dict[str, Any]:
        """The AuthZEN evaluation request body for subject ``<namespace>/<name>``."""
        action: dict[str, Any] = {"name": self.action}
        if self.action_properties:
            action["properties"] = dict(self.action_properties)
        resource: dict[str, Any] = {"type": self.resource_type, "id": self.resource_id}
        if self.resource_properties:
            resource["properties"] = dict(self.resource_properties)
        return {
            "subject": {"type": "agent", "id": subject_id},
            "action": action,
            "resource": resource,
            "context": dict(self.context),
        }


@dataclass(frozen=True)
class Decision:
    """The decision API's answer: ``allowed`` and the outcome allow / deny / escalate."""

    allowed: bool
    outcome: Outcome
    reason: str
    rule: str | None = None
    agent: str | None = None  # the identity URI
    approval_request: str | None = None  # "<namespace>/<name>" when escalated
    approvers: Mapping[str, Any] = field(default_factory=dict)
    request: Evaluation | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], request: Evaluation | None = None) -> Decision:
        if not isinstance(body.get("decision"), bool):
            raise DecisionAPIError(f"not an AuthZEN evaluation response: {_short(body)}")
        ctx = body.get("context") if isinstance(body.get("context"), Mapping) else {}
        assert isinstance(ctx, Mapping)
        allowed = bool(body["decision"])
        fallback: Outcome = "allow" if allowed else "deny"
        outcome = _OUTCOME_BY_NAME.get(str(ctx.get("outcome")), fallback)
        return cls(
            allowed=allowed,
            outcome=outcome,
            reason=str(ctx.get("reason") or ""),
            rule=_opt_str(ctx.get("rule")),
            agent=_opt_str(ctx.get("agent")),
            approval_request=_opt_str(ctx.get("approvalRequest")),
            approvers=dict(ctx.get("approvers") or {}),
            request=request,
            raw=dict(body),
        )


@dataclass(frozen=True)
class ApprovalStatus:
    """An ApprovalRequest as the decision API shows it to the agent that opened it."""

    name: str
    state: str  # Pending, Approved, Denied, Expired
    grant_active: bool
    action: str | None
    resource: Mapping[str, Any]
    expires_at: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> ApprovalStatus:
        resource = body.get("resource")
        return cls(
            name=str(body.get("name") or ""),
            state=str(body.get("state") or ""),
            grant_active=bool(body.get("grantActive")),
            action=_opt_str(body.get("action")),
            resource=dict(resource) if isinstance(resource, Mapping) else {},
            expires_at=_opt_str(body.get("expiresAt")),
            raw=dict(body),
        )


class AgentClient:
    """Asks the decision API on behalf of the agent whose token this pod carries."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token_path: str | os.PathLike[str] | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        agent: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``url`` defaults to ``$AGENT_IDENTITY_DECISIONS_URL``; ``token_path`` to the mount.

        ``token`` (a fixed token) is for callers outside a pod; in a pod leave it unset so
        the rotated file is read on every call. ``agent`` ("<namespace>/<name>") skips the
        ``whoami`` call that otherwise learns the subject id once.
        """
        resolved = url if url is not None else os.environ.get(DECISIONS_URL_ENV, "")
        if not resolved:
            raise ConfigurationError(
                f"no decision API URL: ${DECISIONS_URL_ENV} is not set. The admission webhook "
                "sets it in admitted agent pods; outside one, pass url= (or --url)."
            )
        parsed = urllib.parse.urlsplit(resolved)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(
                f"decision API URL {resolved!r} is not an http(s) URL, "
                "e.g. https://agent-identity.agent-identity-system.svc:8444"
            )
        self.url = resolved.rstrip("/")
        self.token_path = Path(token_path) if token_path is not None else Path(TOKEN_FILE_PATH)
        self._token = token
        self.timeout = timeout
        self._agent = agent
        self._sleep = sleep
        self._clock = clock
        ca = ca_file if ca_file is not None else os.environ.get(CA_FILE_ENV) or None
        self._ssl: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            if ca is not None and not Path(ca).is_file():
                raise ConfigurationError(
                    f"CA file {os.fspath(ca)!r} does not exist (--ca-file / ${CA_FILE_ENV})"
                )
            pem = None if ca is not None else os.environ.get(DECISIONS_CA_ENV) or None
            try:
                self._ssl = ssl.create_default_context(
                    cafile=os.fspath(ca) if ca else None, cadata=pem
                )
            except ssl.SSLError as exc:
                raise ConfigurationError(
                    f"${DECISIONS_CA_ENV} is not a PEM CA bundle ({exc}); the admission "
                    "webhook sets it in agent pods: recreate the pod"
                ) from exc

    # --- the token --------------------------------------------------------------------

    def token(self) -> str:
        """The agent's current token (read from the file each time: the kubelet rotates it)."""
        if self._token is not None:
            return self._token
        try:
            text = self.token_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise NotAnAgentPod(
                f"no agent token at {self.token_path}: this must run in an admitted agent pod "
                "(a pod labelled agentidentity.io/agent=<name> of a registered, Active Agent; "
                "the admission webhook mounts the token there). Outside one, pass a token file "
                "(--token-file) or token=."
            ) from None
        except OSError as exc:
            raise NotAnAgentPod(f"cannot read the agent token {self.token_path}: {exc}") from exc
        if not text:
            raise NotAnAgentPod(f"the agent token file {self.token_path} is empty")
        return text

    # --- HTTP -------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token()}",
            "Accept": "application/json",
            "X-Request-ID": uuid.uuid4().hex,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise DecisionAPIError(_http_error_text(exc, method, path), exc.code) from None
        except urllib.error.URLError as exc:
            raise DecisionAPIError(
                f"cannot reach the decision API at {self.url}: {exc.reason}"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise DecisionAPIError(f"cannot reach the decision API at {self.url}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise DecisionAPIError(
                f"{method} {path}: the decision API answered something that is not JSON: "
                f"{raw[:200]!r}"
            ) from None

    # --- the API ----------------------------------------------------------------------

    def whoami(self) -> WhoAmI:
        """The identity the decision API resolves from this pod's token."""
        body = self._call("GET", "/v1/whoami")
        if not isinstance(body, Mapping):
            raise DecisionAPIError(f"GET /v1/whoami: unexpected answer {_short(body)}")
        me = WhoAmI.from_wire(body)
        if me.agent:
            self._agent = me.agent
        return me

    def agent(self) -> str:
        """``<namespace>/<name>`` of this pod's agent (asked once, then remembered)."""
        if self._agent is None:
            me = self.whoami()
            if me.agent is None:
                raise DecisionAPIError(
                    f"the token authenticates as {me.username}, which is not a registered "
                    "agent's ServiceAccount: is the Agent deleted, or is this not an agent pod?"
                )
        assert self._agent is not None
        return self._agent

    def evaluate(self, request: Evaluation) -> Decision:
        body = self._call("POST", "/access/v1/evaluation", request.body(self.agent()))
        if not isinstance(body, Mapping):
            raise DecisionAPIError(f"POST /access/v1/evaluation: unexpected {_short(body)}")
        return Decision.from_wire(body, request)

    def check(
        self,
        action: str,
        resource_type: str | None = None,
        resource_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        action_properties: Mapping[str, Any] | None = None,
        resource_properties: Mapping[str, Any] | None = None,
    ) -> Decision:
        """May this agent take ``action`` on the resource? A refusal is a Decision, not an error.

        Without a resource the request is about ``any/*``; a type without an id means ``*``.
        """
        if not action:
            raise ValueError("action must not be empty, e.g. 'github.pulls.read'")
        return self.evaluate(
            Evaluation(
                action=action,
                resource_type=resource_type or ANY_RESOURCE[0],
                resource_id=resource_id or ANY_RESOURCE[1],
                context=dict(context or {}),
                action_properties=dict(action_properties or {}),
                resource_properties=dict(resource_properties or {}),
            )
        )

    def approval(self, name: str) -> ApprovalStatus:
        """``GET /v1/approvals/{namespace}/{name}`` (``name`` is ``<namespace>/<name>``)."""
        namespace, sep, short = name.partition("/")
        if not sep or not namespace or not short or "/" in short:
            raise ValueError(f"approval request {name!r}: expected '<namespace>/<name>'")
        path = f"/v1/approvals/{urllib.parse.quote(namespace)}/{urllib.parse.quote(short)}"
        body = self._call("GET", path)
        if not isinstance(body, Mapping):
            raise DecisionAPIError(f"GET {path}: unexpected answer {_short(body)}")
        return ApprovalStatus.from_wire(body)

    def wait_for_approval(
        self,
        approval_request: Decision | str,
        timeout: float,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Poll an escalation's ApprovalRequest until a person decides or ``timeout`` passes.

        Approved: the request is evaluated again (the grant now allows it) and that answer
        returned. Denied or Expired: a deny. Still pending at the timeout: an ``escalate``
        decision (not allowed). Given a name instead of the escalated Decision, the action
        and resource come from the ApprovalRequest and ``context`` from the caller.
        """
        if isinstance(approval_request, Decision):
            escalated: Decision | None = approval_request
            name = approval_request.approval_request
            if name is None:
                return approval_request  # nothing to wait for: not an escalation
        else:
            escalated, name = None, approval_request
        deadline = self._clock() + max(0.0, timeout)
        while True:
            status = self.approval(name)
            if status.state == "Approved":
                return self.evaluate(_request_of(escalated, status, context))
            if status.state in ("Denied", "Expired"):
                return Decision(
                    allowed=False,
                    outcome="deny",
                    reason=f"approval request {name} was {status.state.lower()}",
                    rule=f"approval/{status.state.lower()}",
                    agent=escalated.agent if escalated else None,
                    approval_request=name,
                    request=escalated.request if escalated else None,
                    raw=status.raw,
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                reason = f"approval request {name} is still {status.state or 'Pending'} after "
                reason += f"{timeout:g}s"
                if escalated is not None:
                    return replace(escalated, reason=reason)
                return Decision(
                    allowed=False,
                    outcome="escalate",
                    reason=reason,
                    approval_request=name,
                    raw=status.raw,
                )
            self._sleep(min(poll_interval, remaining))


def _request_of(
    escalated: Decision | None, status: ApprovalStatus, context: Mapping[str, Any] | None
) -> Evaluation:
    if escalated is not None and escalated.request is not None:
        return escalated.request
    return Evaluation(
        action=status.action or "",
        resource_type=str(status.resource.get("type") or ANY_RESOURCE[0]),
        resource_id=str(status.resource.get("id") or ANY_RESOURCE[1]),
        context=dict(context or {}),
    )


def _http_error_text(exc: urllib.error.HTTPError, method: str, path: str) -> str:
    message = ""
    try:
        body = json.loads(exc.read() or b"{}")
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            message = str(body["error"].get("message") or "")
    except (ValueError, OSError):
        pass
    hint = {
        401: " (the token was not accepted: expired, revoked by retiring the agent, or not "
        "an agent token)",
        403: " (this agent may not ask that)",
    }.get(exc.code, "")
    return f"{method} {path}: HTTP {exc.code}: {message or exc.reason}{hint}"


def _opt_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."
