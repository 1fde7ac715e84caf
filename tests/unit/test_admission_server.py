"""The aiohttp shell: confirm-before-deny, the escalation guard, readiness, metrics (no cluster)."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from agent_identity.admission.review import Permission
from agent_identity.admission.server import Admission
from agent_identity.admission.tls import make_serving_cert
from agent_identity.audit import AuditLog
from agent_identity.registry import Registry
from tests.unit.test_admission_helpers import NOW, agent, pod, registry, review, scope


def _owned(body: dict[str, Any], user: str) -> dict[str, Any]:
    body["metadata"]["annotations"] = {
        "agentidentity.io/created-by": user,
        "agentidentity.io/last-modified-by": user,
    }
    return body


def _admission(reg: Registry, **kw: Any) -> Admission:
    return Admission(reg, None, AuditLog(stream=None), "http://d", clock=lambda: NOW, **kw)


async def _post(adm: Admission, path: str, req: dict[str, Any]) -> dict[str, Any]:
    async with TestClient(TestServer(adm.app())) as client:
        resp = await client.post(
            path,
            json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req},
        )
        assert resp.status == 200
        body: dict[str, Any] = (await resp.json())["response"]
        return body


async def test_denial_is_confirmed_with_a_get() -> None:
    fetched: list[Any] = []

    def fetch(ref: Any) -> dict[str, Any] | None:
        fetched.append(ref)
        return agent("fresh-bot")  # the watch has not delivered it yet

    adm = _admission(registry(), fetch=fetch)
    out = await _post(adm, "/validate/pods", review(pod(label="fresh-bot")))
    assert out["allowed"] and fetched == [("Agent", "payments", "fresh-bot")]

    adm = _admission(registry(), fetch=lambda ref: None)
    out = await _post(adm, "/validate/pods", review(pod(label="ghost")))
    assert not out["allowed"] and 'no Agent "ghost"' in out["status"]["message"]
    assert out["status"]["details"]["causes"][0]["reason"] == "AgentNotFound"


async def test_mutation_response_is_a_json_patch() -> None:
    adm = _admission(registry(agent("bot")))
    out = await _post(adm, "/mutate/pods", review(pod(label="bot")))
    assert out["allowed"] and out["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(out["patch"]))
    assert {"op": "add", "path": "/spec/serviceAccountName", "value": "agent-bot"} in ops


async def test_escalation_guard_names_first_missing_permission() -> None:
    held = {Permission("payments", "get", "", "configmaps")}
    asked: list[Permission] = []

    def sar(req: dict[str, Any], perm: Permission) -> bool:
        asked.append(perm)
        return perm in held

    body = _owned(
        scope(
            "s",
            rules=[{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]}],
        ),
        "eve",
    )
    out = await _post(
        _admission(registry(), sar=sar), "/validate/resources", review(body, user="eve")
    )
    assert not out["allowed"]
    msg = out["status"]["message"]
    assert "creating AuthorityScope 's' would grant permissions 'eve' does not hold" in msg
    assert "cannot get secrets (apiGroup 'core') in namespace payments" in msg
    assert asked[0].verb == "escalate"

    held.add(Permission("payments", "get", "", "secrets"))
    out = await _post(
        _admission(registry(), sar=sar), "/validate/resources", review(body, user="eve")
    )
    assert out["allowed"]


async def test_waiver_skips_per_rule_checks() -> None:
    body = _owned(
        scope("s", rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]), "alice"
    )
    adm = _admission(registry(), sar=lambda req, perm: perm.verb == "escalate")
    assert (await _post(adm, "/validate/resources", review(body)))["allowed"]


async def test_not_synced_refuses_and_readyz_says_so() -> None:
    adm = _admission(Registry())
    out = await _post(adm, "/validate/pods", review(pod()))
    assert not out["allowed"] and "not synced" in out["status"]["message"]
    async with TestClient(TestServer(adm.app())) as client:
        assert (await client.get("/readyz")).status == 503
        metrics = await (await client.get("/metrics")).text()
        assert (
            'agent_identity_admission_requests_total{outcome="denied",reason="NotSynced",webhook="validate-pods"}'
            in metrics
        )


async def test_audit_mode_writes_a_record(tmp_path: Any) -> None:
    log = AuditLog(stream=None, path=tmp_path / "audit.jsonl")
    adm = Admission(registry(), None, log, "u", clock=lambda: NOW)
    out = await _post(adm, "/validate/pods/audit", review(pod("lonely")))
    assert out["allowed"] and "warnings" not in out
    rec = json.loads((tmp_path / "audit.jsonl").read_text())
    assert rec["kind"] == "admission" and rec["pod"] == "lonely"


async def test_serving_certificate_works_for_tls(tmp_path: Any) -> None:
    cert = make_serving_cert(tmp_path, ["127.0.0.1"])
    server = TestServer(_admission(registry()).app(), host="127.0.0.1")
    await server.start_server(ssl=cert.ssl_context())
    try:
        ctx = ssl.create_default_context(cadata=cert.ca_pem.decode())
        async with ClientSession() as session:
            resp = await session.get(f"https://127.0.0.1:{server.port}/healthz", ssl=ctx)
            assert await resp.text() == "ok"
    finally:
        await server.close()
