"""The agent client (``agent_identity.client``) against the real decision API app, in process.

A unit test of the client: the server is the project's own aiohttp decision app
(``authz.service.build_decision_app``) fed from an in-memory Registry; the only stand-in
is the token reviewer (no API server here: tokens map to callers from a table). The real
path (TokenReview, a pod's projected token) is covered by tests/e2e/test_agent_pods.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent_identity.admission.tls import make_serving_cert
from agent_identity.audit import AuditLog
from agent_identity.authz import engine
from agent_identity.authz.service import build_decision_app
from agent_identity.authz.tokens import AuthError, Caller, TokenReviewer
from agent_identity.client import (
    AgentClient,
    ConfigurationError,
    Decision,
    DecisionAPIError,
    NotAnAgentPod,
)
from agent_identity.identity.token import TOKEN_FILE_PATH
from agent_identity.registry import Registry

NS = "payments"
UID = "0b9c6f1e-1111-4a4a-9c9c-000000000001"
OTHER_UID = "0b9c6f1e-1111-4a4a-9c9c-000000000002"


class TableReviewer(TokenReviewer):
    """Tokens -> callers from a dict; nobody but an agent may evaluate (no SAR here)."""

    def __init__(self, table: dict[str, Caller]) -> None:
        super().__init__(None)
        self.table = table
        self.seen: list[str] = []

    async def review(self, token: str) -> Caller:
        self.seen.append(token)
        caller = self.table.get(token)
        if caller is None:
            raise AuthError(401, "the token is not valid (TokenReview: authenticated false)")
        return caller

    async def may(
        self, caller: Caller, verb: str, resource: str, namespace: str, name: str = ""
    ) -> tuple[bool, str]:
        return False, "no"


def sa(agent: str) -> Caller:
    return Caller(
        username=f"system:serviceaccount:{NS}:agent-{agent}",
        groups=("system:serviceaccounts", f"system:serviceaccounts:{NS}"),
        jti=f"jti-{agent}",
    )


def agent_body(name: str, uid: str, state: str = "Active", phase: str = "Active") -> dict[str, Any]:
    return {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "generation": 1},
        "spec": {
            "owner": "team-payments",
            "scopeRefs": [{"name": "deployer"}],
            "lifecycle": {"state": state},
        },
        "status": {
            "phase": phase,
            "identity": {"uri": f"agent://test/{NS}/{name}", "uid": uid},
        },
    }


def approval_body(state: str, action: str = "deploy.production") -> dict[str, Any]:
    now = datetime.now(UTC)
    name = engine.approval_request_name(UID, action, "service", "api", 0)
    status: dict[str, Any] = {"state": state, "decisions": []}
    if state == "Approved":
        status["decisions"] = [
            {
                "approver": "sre-lead@example.com",
                "verdict": "Approve",
                "reason": "ok",
                "at": now.isoformat(),
            }
        ]
        status["grant"] = {"expiresAt": (now + timedelta(minutes=15)).isoformat()}
    if state == "Denied":
        status["decisions"] = [
            {
                "approver": "sre-lead@example.com",
                "verdict": "Deny",
                "reason": "no",
                "at": now.isoformat(),
            }
        ]
    return {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": NS, "labels": {"agentidentity.io/agent": "bot"}},
        "spec": {
            "agent": {"name": "bot"},
            "agentUid": UID,
            "action": action,
            "resource": {"type": "service", "id": "api"},
            "requestedAt": now.isoformat(),
            "requestedBy": sa("bot").username,
            "policies": ["prod-deploys"],
            "approvers": {"users": ["sre-lead@example.com"]},
            "minApprovals": 1,
            "expiresAt": (now + timedelta(hours=1)).isoformat(),
            "grantSeconds": 900,
        },
        "status": status,
    }


class Server:
    """The decision app on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, registry: Registry, reviewer: TokenReviewer, tls: ssl.SSLContext | None):
        self.registry = registry
        self.loop = asyncio.new_event_loop()
        app = build_decision_app(
            registry,
            None,
            audit=AuditLog(stream=None),
            cluster_name="test",
            reviewer=reviewer,
            expiry_interval=None,
        )
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls)
        self.loop.run_until_complete(site.start())
        server: Any = site._server
        port = server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Any, *args: Any) -> None:
        """Change the registry on the server's loop (as its watch would)."""
        done = threading.Event()

        def run() -> None:
            fn(*args)
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_registry() -> Registry:
    reg = Registry()
    reg.upsert(agent_body("bot", UID))
    reg.upsert(agent_body("other", OTHER_UID))
    reg.upsert(
        {
            "apiVersion": "agentidentity.io/v1alpha1",
            "kind": "AuthorityScope",
            "metadata": {"name": "deployer", "namespace": NS, "generation": 3},
            "spec": {
                "tools": {
                    "allow": ["github.pulls.*", "deploy.staging"],
                    "deny": ["github.admin.**"],
                },
                "sensitive": ["deploy.production"],
                "constraints": [
                    {
                        "tools": ["deploy.staging"],
                        "when": 'resource.properties.env == "staging" && action.properties.dry',
                        "message": "staging only, dry runs only",
                    }
                ],
            },
        }
    )
    reg.upsert(
        {
            "apiVersion": "agentidentity.io/v1alpha1",
            "kind": "ApprovalPolicy",
            "metadata": {"name": "prod-deploys", "namespace": NS},
            "spec": {
                "match": {"actions": ["deploy.production"]},
                "approvers": {"users": ["sre-lead@example.com"]},
            },
        }
    )
    reg.upsert(approval_body("Pending"))  # reused by the escalation: no API call to open one
    return reg


def make_reviewer() -> TableReviewer:
    return TableReviewer(
        {
            "tok-bot": sa("bot"),
            "tok-bot-2": sa("bot"),
            "tok-other": sa("other"),
            "tok-person": Caller(username="alice", groups=("devs",)),
        }
    )


@pytest.fixture
def reviewer() -> TableReviewer:
    return make_reviewer()


@pytest.fixture
def server(reviewer: TableReviewer) -> Iterator[Server]:
    srv = Server(make_registry(), reviewer, None)
    yield srv
    srv.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("tok-bot\n")
    return path


def client(server: Server, token_file: Path, **kw: Any) -> AgentClient:
    return AgentClient(server.url, token_path=token_file, **kw)


# --- whoami and the token ---------------------------------------------------------------------


def test_whoami_resolves_the_agent_from_the_token(server: Server, token_file: Path) -> None:
    me = client(server, token_file).whoami()
    assert me.agent == f"{NS}/bot"
    assert (me.namespace, me.name) == (NS, "bot")
    assert me.identity == f"agent://test/{NS}/bot"
    assert me.uid == UID
    assert me.phase == "Active"
    assert me.username == f"system:serviceaccount:{NS}:agent-bot"


def test_whoami_of_a_token_that_is_no_agent(server: Server, token_file: Path) -> None:
    token_file.write_text("tok-person")
    me = client(server, token_file).whoami()
    assert me.agent is None and me.identity is None and me.username == "alice"


def test_the_token_file_is_read_again_on_every_call(
    server: Server, token_file: Path, reviewer: TableReviewer
) -> None:
    c = client(server, token_file)
    c.whoami()
    token_file.write_text("tok-bot-2")  # the kubelet rotated it
    c.check("github.pulls.read")
    assert reviewer.seen[-2:] == ["tok-bot", "tok-bot-2"]


def test_default_token_path_is_the_webhook_mount() -> None:
    c = AgentClient("http://127.0.0.1:1")
    assert str(c.token_path) == TOKEN_FILE_PATH == "/var/run/secrets/agentidentity.io/token/token"


def test_missing_token_says_where_it_looked_and_why(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "token"
    with pytest.raises(NotAnAgentPod) as err:
        AgentClient("http://127.0.0.1:1", token_path=missing).whoami()
    text = str(err.value)
    assert str(missing) in text and "admitted agent pod" in text


def test_empty_token_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  \n")
    with pytest.raises(NotAnAgentPod, match="empty"):
        AgentClient("http://127.0.0.1:1", token_path=path).token()


def test_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_IDENTITY_DECISIONS_URL", "http://10.0.0.1:8444/")
    assert AgentClient().url == "http://10.0.0.1:8444"
    assert AgentClient("http://override:1").url == "http://override:1"


def test_no_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_IDENTITY_DECISIONS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="AGENT_IDENTITY_DECISIONS_URL"):
        AgentClient()
    with pytest.raises(ConfigurationError, match="not an http"):
        AgentClient("ftp://x")


def test_an_unknown_token_gets_401_with_a_hint(server: Server, token_file: Path) -> None:
    token_file.write_text("tok-revoked")
    with pytest.raises(DecisionAPIError) as err:
        client(server, token_file).whoami()
    assert err.value.status == 401
    assert "not valid" in str(err.value) and "retiring" in str(err.value)


def test_unreachable_api_is_a_client_error(token_file: Path) -> None:
    with pytest.raises(DecisionAPIError, match="cannot reach the decision API"):
        AgentClient("http://127.0.0.1:9", token_path=token_file, timeout=2).whoami()


# --- check --------------------------------------------------------------------------------------


def test_check_allow_deny_unknown(server: Server, token_file: Path) -> None:
    c = client(server, token_file)
    allowed = c.check("github.pulls.create", "repo", "org/app", {"ticket": 1})
    assert allowed.allowed and allowed.outcome == "allow"
    assert allowed.agent == f"agent://test/{NS}/bot"
    assert allowed.request is not None and allowed.request.resource_id == "org/app"
    denied = c.check("github.admin.delete")
    assert not denied.allowed and denied.outcome == "deny" and denied.rule
    assert "deny" in (denied.rule or "")
    unknown = c.check("mail.send")
    assert unknown.outcome == "deny"


def test_check_asks_about_itself_as_whoami_resolves_it(server: Server, token_file: Path) -> None:
    c = client(server, token_file)
    c.check("github.pulls.read")
    assert c.agent() == f"{NS}/bot"
    # A subject that is another agent is refused (403): the id must come from whoami.
    wrong = client(server, token_file, agent=f"{NS}/other")
    with pytest.raises(DecisionAPIError) as err:
        wrong.check("github.pulls.read")
    assert err.value.status == 403


def test_suspension_turns_allow_into_deny(server: Server, token_file: Path) -> None:
    c = client(server, token_file)
    assert c.check("github.pulls.read").allowed
    server.call(server.registry.upsert, agent_body("bot", UID, state="Suspended"))
    after = c.check("github.pulls.read")
    assert not after.allowed and after.rule == "lifecycle/Suspended"


def test_check_rejects_empty_action(server: Server, token_file: Path) -> None:
    with pytest.raises(ValueError, match="action"):
        client(server, token_file).check("")


# --- escalation and waiting ---------------------------------------------------------------------


def test_escalate_names_the_request_and_approvers(server: Server, token_file: Path) -> None:
    d = client(server, token_file).check("deploy.production", "service", "api")
    assert d.outcome == "escalate" and not d.allowed
    assert d.approval_request == f"{NS}/" + engine.approval_request_name(
        UID, "deploy.production", "service", "api", 0
    )
    assert d.approvers["users"] == ["sre-lead@example.com"]


def test_wait_for_approval_then_allow(server: Server, token_file: Path) -> None:
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # a person approves while the agent waits
        polls.append(seconds)
        if len(polls) == 2:
            server.call(server.registry.upsert, approval_body("Approved"))

    c = client(server, token_file, sleep=sleep)
    escalated = c.check("deploy.production", "service", "api")
    final = c.wait_for_approval(escalated, timeout=60, poll_interval=0.5)
    assert final.allowed and final.outcome == "allow"
    assert len(polls) == 2 and all(p == 0.5 for p in polls)


def test_wait_for_a_denied_request_is_deny(server: Server, token_file: Path) -> None:
    c = client(
        server,
        token_file,
        sleep=lambda s: server.call(server.registry.upsert, approval_body("Denied")),
    )
    escalated = c.check("deploy.production", "service", "api")
    final = c.wait_for_approval(escalated, timeout=60)
    assert final.outcome == "deny" and "denied" in final.reason


def test_wait_times_out_as_escalate(server: Server, token_file: Path) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    c = client(server, token_file, sleep=sleep, clock=lambda: now[0])
    escalated = c.check("deploy.production", "service", "api")
    final = c.wait_for_approval(escalated, timeout=3, poll_interval=1)
    assert final.outcome == "escalate" and not final.allowed
    assert final.approval_request == escalated.approval_request
    assert "still Pending after 3s" in final.reason
    assert now[0] == 3


def test_wait_by_name_re_evaluates_the_requests_action(server: Server, token_file: Path) -> None:
    server.call(server.registry.upsert, approval_body("Approved"))
    name = f"{NS}/" + engine.approval_request_name(UID, "deploy.production", "service", "api", 0)
    final = client(server, token_file).wait_for_approval(name, timeout=5)
    assert final.allowed
    assert final.request is not None and final.request.action == "deploy.production"


def test_wait_on_a_non_escalation_returns_it(server: Server, token_file: Path) -> None:
    c = client(server, token_file)
    allowed = c.check("github.pulls.read")
    assert c.wait_for_approval(allowed, timeout=5) is allowed


def test_another_agents_approval_request_is_refused(server: Server, token_file: Path) -> None:
    token_file.write_text("tok-other")
    name = f"{NS}/" + engine.approval_request_name(UID, "deploy.production", "service", "api", 0)
    with pytest.raises(DecisionAPIError) as err:
        client(server, token_file).approval(name)
    assert err.value.status == 403


# --- HTTPS --------------------------------------------------------------------------------------


def test_https_verifies_against_the_given_ca(
    tmp_path: Path, reviewer: TableReviewer, token_file: Path
) -> None:
    cert = make_serving_cert(tmp_path / "tls", ["127.0.0.1"])
    srv = Server(make_registry(), reviewer, cert.ssl_context())
    try:
        ok = AgentClient(srv.url, token_path=token_file, ca_file=tmp_path / "tls" / "ca.crt")
        assert ok.whoami().agent == f"{NS}/bot"
        with pytest.raises(DecisionAPIError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            AgentClient(srv.url, token_path=token_file).whoami()
    finally:
        srv.close()


def test_https_verifies_against_the_injected_ca(
    tmp_path: Path, reviewer: TableReviewer, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the mutating webhook sets in agent pods: the CA's PEM in the environment.
    cert = make_serving_cert(tmp_path / "tls", ["127.0.0.1"])
    other = make_serving_cert(tmp_path / "other", ["127.0.0.1"])
    srv = Server(make_registry(), reviewer, cert.ssl_context())
    try:
        monkeypatch.setenv("AGENT_IDENTITY_DECISIONS_CA", cert.ca_pem.decode())
        assert AgentClient(srv.url, token_path=token_file).whoami().agent == f"{NS}/bot"
        monkeypatch.setenv("AGENT_IDENTITY_DECISIONS_CA", other.ca_pem.decode())
        with pytest.raises(DecisionAPIError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            AgentClient(srv.url, token_path=token_file).whoami()
        # An explicit CA file wins over the variable.
        ok = AgentClient(srv.url, token_path=token_file, ca_file=tmp_path / "tls" / "ca.crt")
        assert ok.whoami().agent == f"{NS}/bot"
        monkeypatch.setenv("AGENT_IDENTITY_DECISIONS_CA", "not a certificate")
        with pytest.raises(ConfigurationError, match="AGENT_IDENTITY_DECISIONS_CA"):
            AgentClient(srv.url, token_path=token_file)
    finally:
        srv.close()


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        AgentClient("https://x:1", ca_file=tmp_path / "ca.crt")


def test_decision_parses_the_authzen_shape() -> None:
    d = Decision.from_wire(
        {
            "decision": False,
            "context": {
                "outcome": "escalate",
                "reason": "r",
                "rule": "x",
                "approvalRequest": "ns/ar",
            },
        }
    )
    assert (d.outcome, d.approval_request, d.allowed) == ("escalate", "ns/ar", False)
    assert Decision.from_wire({"decision": True}).outcome == "allow"
    with pytest.raises(DecisionAPIError):
        Decision.from_wire(json.loads('{"error": {"status": 500}}'))
