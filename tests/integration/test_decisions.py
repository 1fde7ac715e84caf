"""The decision API on the real control plane: AuthZEN conformance, callers, lifecycle, context.

Real parts: the operator gives Agents their ServiceAccounts, `agent-identity admission --dev`
serves the decision API, tokens are TokenRequest tokens (audience agentidentity.io) checked
with TokenReview, gateways are authorized with SubjectAccessReview.

The certification scenario's fixture becomes ours: alice -> agent ``release-bot``, bob ->
agent ``other-bot``; read -> ``ci.runs.read``, write -> ``github.pulls.create``; property
rules: a resource with ``env: production`` blocks ``deploy.service`` (rule 5), a change window
in the context lifts it (rule 6: our subjects' attributes come from the registry, never from
the caller, so the caller-supplied attribute is the context), ``payments.refund`` with a small
amount is allowed and with a large one needs approval (rules 7 and 8).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import figure

AUD = "agentidentity.io"

SCOPE = """
apiVersion: agentidentity.io/v1alpha1
kind: AuthorityScope
metadata: {name: deployer}
spec:
  tools:
    allow: ["github.pulls.*", "github.pulls.create", "ci.runs.read", "deploy.service",
            "payments.refund", "data.scan"]
    deny: ["github.admin.**"]
  sensitive: ["deploy.production"]
  constraints:
    - tools: ["deploy.service"]
      when: >-
        !has(resource.properties.env) || resource.properties.env != "production"
        || (has(context.change_window) && context.change_window == true)
      message: production deploys only in a change window
    - tools: ["data.scan"]
      when: "!has(context.items) || context.items.all(x, x.size() < 100)"
      message: items must be short
    - tools: ["payments.refund"]
      when: "!has(context.refunds_frozen) || context.refunds_frozen != true"
      message: refunds are frozen
---
apiVersion: agentidentity.io/v1alpha1
kind: AuthorityScope
metadata: {name: reader}
spec:
  tools:
    allow: ["ci.runs.read"]
---
apiVersion: agentidentity.io/v1alpha1
kind: ApprovalPolicy
metadata: {name: prod-deploys}
spec:
  match: {actions: ["deploy.production"]}
  approvers: {users: ["approver-a", "approver-b"]}
  minApprovals: 1
  timeoutSeconds: 600
  grantSeconds: GRANT_SECONDS
---
apiVersion: agentidentity.io/v1alpha1
kind: ApprovalPolicy
metadata: {name: refunds}
spec:
  match: {actions: ["payments.refund"], when: "action.properties.amount > 1000"}
  approvers: {users: ["approver-a", "approver-b"]}
  minApprovals: 2
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: release-bot}
spec:
  owner: team-payments
  scopeRefs: [{name: deployer}]
---
apiVersion: agentidentity.io/v1alpha1
kind: Agent
metadata: {name: other-bot}
spec:
  owner: team-payments
  scopeRefs: [{name: reader}]
"""
GRANT_SECONDS = 6


@dataclass
class Env:
    """One namespace with two agents, their tokens, a gateway and the API URL."""

    cluster: Any
    namespace: str
    url: str
    release_token: str
    other_token: str
    gateway_token: str  # a non-agent ServiceAccount bound to agentidentity-evaluator
    stranger_token: str  # a non-agent ServiceAccount without it

    def post(
        self,
        path: str,
        body: Any,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> requests.Response:
        h = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(self.url + path, data=data, headers=h, timeout=30)

    def evaluate(self, action: str, token: str | None = None, **kw: Any) -> requests.Response:
        body = {
            "subject": {"type": "agent", "id": f"{self.namespace}/release-bot"},
            "action": {"name": action, **({"properties": kw["aprops"]} if "aprops" in kw else {})},
            "resource": {
                "type": "service",
                "id": kw.get("rid", "payments-api"),
                **({"properties": kw["rprops"]} if "rprops" in kw else {}),
            },
            "context": kw.get("context", {}),
        }
        return self.post("/access/v1/evaluation", body, token or self.release_token)

    def agent(self, name: str) -> dict[str, Any]:
        return {
            "type": "agent",
            "id": f"{self.namespace}/{name}",
            "properties": {
                "token": self.release_token if name == "release-bot" else self.other_token
            },
        }


def create_token(cluster: Any, namespace: str, sa: str, audience: str = AUD) -> str:
    out = cluster.kubectl(
        "create", "token", sa, "-n", namespace, "--audience", audience, "--duration", "30m"
    )
    return out.stdout.strip()


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def agent_phase(cluster: Any, namespace: str, name: str) -> str:
    out = cluster.kubectl(
        "get", "agent", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    return out.stdout.strip()


def setup_env(cluster: Any, namespace: str, url: str) -> Env:
    # The shipped ClusterRoles (manifests/rbac/) come with the `admission` fixture.
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=SCOPE.replace("GRANT_SECONDS", str(GRANT_SECONDS)),
    )
    for name in ("release-bot", "other-bot"):
        wait_for(
            lambda n=name: agent_phase(cluster, namespace, n) == "Active", what=f"{name} Active"
        )
    cluster.kubectl("create", "serviceaccount", "gateway", "-n", namespace)
    cluster.kubectl("create", "serviceaccount", "stranger", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "gateway-evaluates",
        "-n",
        namespace,
        "--clusterrole=agentidentity-evaluator",
        f"--serviceaccount={namespace}:gateway",
    )
    env = Env(
        cluster,
        namespace,
        url,
        release_token=create_token(cluster, namespace, "agent-release-bot"),
        other_token=create_token(cluster, namespace, "agent-other-bot"),
        gateway_token=create_token(cluster, namespace, "gateway"),
        stranger_token=create_token(cluster, namespace, "stranger"),
    )
    # The registry of the decision API is fed by watches: wait until it knows the agents.
    wait_for(lambda: env.evaluate("ci.runs.read").json().get("decision") is True, what="registry")
    return env


@pytest.fixture
def env(cluster: Any, namespace: str, operator: Any, admission: Any) -> Env:
    if admission.decisions_url is None:
        pytest.fail("the admission process did not start the decision API")
    return setup_env(cluster, namespace, admission.decisions_url)


def decisions(resp: requests.Response) -> list[bool]:
    assert resp.status_code == 200, resp.text
    return [e["decision"] for e in resp.json()["evaluations"]]


# --------------------------------------------------------------------- certification scenario


def test_authzen_certification_scenario(env: Env) -> None:
    ns = env.namespace
    alice, bob = env.agent("release-bot"), env.agent("other-bot")
    rec1 = {"type": "service", "id": "record-1"}
    rec2_prod = {"type": "service", "id": "record-2", "properties": {"env": "production"}}
    read, write, delete = (
        {"name": "ci.runs.read"},
        {"name": "github.pulls.create"},
        {"name": "payments.refund"},
    )
    deploy = {"name": "deploy.service"}
    gw = env.gateway_token
    # (id, path, body, expected status, check on the JSON answer)
    cases: list[tuple[str, str, Any, int, Any]] = [
        # Basic core
        (
            "2.2.1 permit",
            "evaluation",
            {"subject": alice, "action": read, "resource": rec1},
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "2.2.2 deny",
            "evaluation",
            {"subject": bob, "action": write, "resource": rec1},
            200,
            lambda b: b["decision"] is False and b["context"]["outcome"] == "deny",
        ),
        (
            "2.2.3 context",
            "evaluation",
            {
                "subject": alice,
                "action": read,
                "resource": rec1,
                "context": {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"},
            },
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "rule 3",
            "evaluation",
            {"subject": bob, "action": read, "resource": rec1},
            200,
            lambda b: b["decision"] is True,
        ),
        # Basic properties
        (
            "2.2.4 deny by resource properties",
            "evaluation",
            {"subject": alice, "action": deploy, "resource": rec2_prod},
            200,
            lambda b: b["decision"] is False and "change window" in b["context"]["reason"],
        ),
        (
            "2.2.5 permit by caller attributes",
            "evaluation",
            {
                "subject": alice,
                "action": deploy,
                "resource": rec2_prod,
                "context": {"change_window": True},
            },
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "2.2.6 permit by action properties",
            "evaluation",
            {
                "subject": alice,
                "action": {**delete, "properties": {"amount": 50}},
                "resource": rec1,
            },
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "2.2.7 deny by action properties",
            "evaluation",
            {
                "subject": alice,
                "action": {**delete, "properties": {"amount": 5000}},
                "resource": rec1,
            },
            200,
            lambda b: b["decision"] is False and b["context"]["outcome"] == "escalate",
        ),
        (
            "2.2.8 extra properties",
            "evaluation",
            {
                "subject": {**alice, "properties": {**alice["properties"], "department": "Sales"}},
                "action": {**read, "properties": {"method": "GET"}},
                "resource": {**rec1, "properties": {"status": "active"}},
            },
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "2.2.9 unknown fields",
            "evaluation",
            {
                "subject": alice,
                "action": read,
                "resource": rec1,
                "foo": "bar",
                "futureField": {"nested": True},
            },
            200,
            lambda b: b["decision"] is True,
        ),
        # Basic errors
        (
            "2.4.1 no subject",
            "evaluation",
            {"action": read, "resource": rec1},
            400,
            lambda b: "subject is missing" in b["error"]["message"],
        ),
        (
            "2.4.1 no action",
            "evaluation",
            {"subject": alice, "resource": rec1},
            400,
            lambda b: "action is missing" in b["error"]["message"],
        ),
        (
            "2.4.1 no resource",
            "evaluation",
            {"subject": alice, "action": read},
            400,
            lambda b: "resource is missing" in b["error"]["message"],
        ),
        (
            "2.4.2 subject type",
            "evaluation",
            {"subject": {"id": f"{ns}/release-bot"}, "action": read, "resource": rec1},
            400,
            lambda b: "subject.type" in b["error"]["message"],
        ),
        (
            "2.4.2 subject id",
            "evaluation",
            {"subject": {"type": "agent"}, "action": read, "resource": rec1},
            400,
            lambda b: "subject.id" in b["error"]["message"],
        ),
        (
            "2.4.2 action name",
            "evaluation",
            {"subject": alice, "action": {}, "resource": rec1},
            400,
            lambda b: "action.name" in b["error"]["message"],
        ),
        (
            "2.4.2 resource type",
            "evaluation",
            {"subject": alice, "action": read, "resource": {"id": "x"}},
            400,
            lambda b: "resource.type" in b["error"]["message"],
        ),
        (
            "2.4.2 resource id",
            "evaluation",
            {"subject": alice, "action": read, "resource": {"type": "service"}},
            400,
            lambda b: "resource.id" in b["error"]["message"],
        ),
        (
            "2.4.6 subject string",
            "evaluation",
            {"subject": "alice", "action": read, "resource": rec1},
            400,
            lambda b: "subject must be an object" in b["error"]["message"],
        ),
        (
            "2.4.6 name number",
            "evaluation",
            {"subject": alice, "action": {"name": 123}, "resource": rec1},
            400,
            lambda b: "action.name must be a string" in b["error"]["message"],
        ),
        (
            "subject id format",
            "evaluation",
            {"subject": {"type": "agent", "id": "release-bot"}, "action": read, "resource": rec1},
            400,
            lambda b: "<namespace>/<agent name>" in b["error"]["message"],
        ),
        # Batch core
        (
            "3.2.1 batch",
            "evaluations",
            {
                "subject": alice,
                "action": read,
                "evaluations": [
                    {"resource": rec1},
                    {"resource": {"type": "service", "id": "record-2"}},
                ],
            },
            200,
            lambda b: (
                len(b["evaluations"]) == 2
                and all("decision" in e for e in b["evaluations"])
                and "decision" not in b
            ),
        ),
        (
            "3.2.2 batch fixture",
            "evaluations",
            {
                "subject": bob,
                "resource": rec1,
                "evaluations": [{"action": read}, {"action": write}],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [True, False],
        ),
        (
            "3.2.5 no defaults",
            "evaluations",
            {
                "evaluations": [
                    {"subject": alice, "action": read, "resource": rec1},
                    {"subject": bob, "action": write, "resource": rec1},
                ]
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [True, False],
        ),
        (
            "3.2.6 context inheritance",
            "evaluations",
            {
                "subject": alice,
                "action": read,
                "context": {"time": "2025-06-27T18:03-07:00"},
                "evaluations": [
                    {"resource": rec1},
                    {"resource": rec1, "context": {"source": "batch-override"}},
                ],
            },
            200,
            lambda b: len(b["evaluations"]) == 2,
        ),
        # Batch properties
        (
            "3.2.3 batch resource properties",
            "evaluations",
            {
                "subject": alice,
                "action": deploy,
                "evaluations": [
                    {"resource": {**rec1, "properties": {"env": "staging"}}},
                    {"resource": rec2_prod},
                ],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [True, False],
        ),
        (
            "3.2.4 batch per-item caller attributes",
            "evaluations",
            {
                "subject": alice,
                "action": deploy,
                "resource": rec2_prod,
                "evaluations": [{"context": {}}, {"context": {"change_window": True}}],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [False, True],
        ),
        (
            "3.2.7 default merging",
            "evaluations",
            {
                "subject": alice,
                "action": deploy,
                "resource": {"type": "service"},
                "evaluations": [
                    {"resource": {"id": "record-1", "properties": {"env": "staging"}}},
                    {"resource": rec2_prod},
                ],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [True, False],
        ),
        (
            "3.4.1 item error",
            "evaluations",
            {"subject": alice, "action": read, "evaluations": [{"resource": rec1}, {}]},
            200,
            lambda b: (
                [e["decision"] for e in b["evaluations"]] == [True, False]
                and "resource is missing" in b["evaluations"][1]["context"]["error"]["message"]
            ),
        ),
        (
            "3.4.2 no evaluations",
            "evaluations",
            {"subject": alice, "action": read, "resource": rec1},
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "3.4.3 empty evaluations",
            "evaluations",
            {"subject": alice, "action": read, "resource": rec1, "evaluations": []},
            200,
            lambda b: b["decision"] is True,
        ),
        (
            "deny_on_first_deny",
            "evaluations",
            {
                "subject": alice,
                "resource": rec1,
                "options": {"evaluations_semantic": "deny_on_first_deny"},
                "evaluations": [
                    {"action": read},
                    {"action": {"name": "github.admin.users"}},
                    {"action": read},
                ],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [True, False],
        ),
        (
            "permit_on_first_permit",
            "evaluations",
            {
                "subject": alice,
                "resource": rec1,
                "options": {"evaluations_semantic": "permit_on_first_permit"},
                "evaluations": [
                    {"action": {"name": "github.admin.users"}},
                    {"action": read},
                    {"action": read},
                ],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [False, True],
        ),
        (
            "execute_all",
            "evaluations",
            {
                "subject": alice,
                "resource": rec1,
                "options": {"evaluations_semantic": "execute_all"},
                "evaluations": [
                    {"action": {"name": "github.admin.users"}},
                    {"action": read},
                    {"action": read},
                ],
            },
            200,
            lambda b: [e["decision"] for e in b["evaluations"]] == [False, True, True],
        ),
        # Search core
        (
            "4.2.1 subject search",
            "search/subject",
            {
                "subject": {"type": "agent", "properties": {"namespace": ns}},
                "action": read,
                "resource": rec1,
            },
            200,
            lambda b: (
                {r["id"] for r in b["results"]} == {f"{ns}/release-bot", f"{ns}/other-bot"}
                and all(r["type"] == "agent" for r in b["results"])
            ),
        ),
        (
            "4.2.2 subject search context",
            "search/subject",
            {
                "subject": {"type": "agent", "properties": {"namespace": ns}},
                "action": write,
                "resource": rec1,
                "context": {"k": 1},
            },
            200,
            lambda b: [r["id"] for r in b["results"]] == [f"{ns}/release-bot"],
        ),
        (
            "4.2.4 subject search properties",
            "search/subject",
            {
                "subject": {"type": "agent", "properties": {"namespace": ns}},
                "action": deploy,
                "resource": rec2_prod,
                "context": {"change_window": True},
            },
            200,
            lambda b: [r["id"] for r in b["results"]] == [f"{ns}/release-bot"],
        ),
        (
            "4.3.1 resource search",
            "search/resource",
            {"subject": alice, "action": read, "resource": {"type": "service"}},
            200,
            lambda b: b["results"] == [],
        ),
        (
            "4.4.1 action search",
            "search/action",
            {"subject": alice, "resource": rec1},
            200,
            lambda b: (
                {"ci.runs.read", "github.pulls.create"} <= {r["name"] for r in b["results"]}
                and "deploy.production" not in {r["name"] for r in b["results"]}
            ),
        ),
        (
            "4.4.2 action search context",
            "search/action",
            {"subject": alice, "resource": rec2_prod, "context": {"change_window": False}},
            200,
            lambda b: "deploy.service" not in {r["name"] for r in b["results"]},
        ),
        (
            "4.4.3 action search properties",
            "search/action",
            {"subject": alice, "resource": rec2_prod, "context": {"change_window": True}},
            200,
            lambda b: "deploy.service" in {r["name"] for r in b["results"]},
        ),
        (
            "4.5.1 page limit",
            "search/subject",
            {"subject": {"type": "agent"}, "action": read, "resource": rec1, "page": {"limit": 1}},
            200,
            lambda b: isinstance(b["results"], list) and b["page"]["next_token"] == "",
        ),
        (
            "4.6.1 unknown id",
            "search/action",
            {"subject": {"type": "agent", "id": f"{ns}/nonexistent"}, "resource": rec1},
            200,
            lambda b: b["results"] == [],
        ),
        (
            "4.6.2 unknown type",
            "search/subject",
            {"subject": {"type": "spaceship"}, "action": read, "resource": rec1},
            200,
            lambda b: b["results"] == [],
        ),
        (
            "4.7.1 subject search no action",
            "search/subject",
            {"subject": {"type": "agent"}, "resource": rec1},
            400,
            lambda b: "action is missing" in b["error"]["message"],
        ),
        (
            "4.7.1 resource search no subject",
            "search/resource",
            {"action": read, "resource": {"type": "service"}},
            400,
            lambda b: "subject" in b["error"]["message"],
        ),
        (
            "4.7.1 action search no resource",
            "search/action",
            {"subject": alice},
            400,
            lambda b: "resource is missing" in b["error"]["message"],
        ),
        (
            "4.7.2 subject search resource id",
            "search/subject",
            {"subject": {"type": "agent"}, "action": read, "resource": {"type": "service"}},
            400,
            lambda b: "resource.id" in b["error"]["message"],
        ),
        (
            "4.7.2 resource search subject id",
            "search/resource",
            {"subject": {"type": "agent"}, "action": read, "resource": {"type": "service"}},
            400,
            lambda b: "subject.id" in b["error"]["message"],
        ),
    ]
    failures = []
    for case_id, path, body, status, check in cases:
        resp = env.post(f"/access/v1/{path}", body, gw, headers={"X-Request-ID": case_id})
        ok = resp.status_code == status
        ok = ok and resp.headers.get("X-Request-ID") == case_id
        ok = ok and resp.headers.get("Content-Type", "").startswith("application/json")
        try:
            ok = ok and bool(check(resp.json()))
        except (KeyError, ValueError, TypeError):
            ok = False
        if not ok:
            failures.append(f"{case_id}: {resp.status_code} {resp.text[:400]}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 45


def test_transport_and_headers(env: Env) -> None:
    good = {
        "subject": env.agent("release-bot"),
        "action": {"name": "ci.runs.read"},
        "resource": {"type": "service", "id": "x"},
    }
    gw = env.gateway_token
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        resp = env.post("/access/v1/evaluation", good, gw, headers={"Content-Type": content_type})
        assert resp.status_code == 400 and "Content-Type" in resp.json()["error"]["message"]
    for raw, fragment in ((b"", "empty"), (b"{oops", "not valid JSON"), (b"[]", "JSON object")):
        for path in ("evaluation", "evaluations", "search/action", "search/subject"):
            resp = env.post(f"/access/v1/{path}", None, gw, raw=raw)
            assert resp.status_code == 400, (path, resp.text)
            assert fragment in resp.json()["error"]["message"]
    # X-Request-ID generated when absent, echoed when present, written to the audit record
    resp = env.post("/access/v1/evaluation", good, gw)
    assert resp.status_code == 200 and len(resp.headers["X-Request-ID"]) >= 16
    # idempotency
    answers = {
        json.dumps(env.post("/access/v1/evaluation", good, gw).json(), sort_keys=True)
        for _ in range(5)
    }
    assert len(answers) == 1
    # discovery
    conf = requests.get(env.url + "/.well-known/authzen-configuration", timeout=10)
    assert conf.status_code == 200 and conf.headers["Content-Type"].startswith("application/json")
    meta = conf.json()
    assert meta["policy_decision_point"] == env.url
    for key, path in (
        ("access_evaluation_endpoint", "evaluation"),
        ("access_evaluations_endpoint", "evaluations"),
        ("search_subject_endpoint", "search/subject"),
        ("search_resource_endpoint", "search/resource"),
        ("search_action_endpoint", "search/action"),
    ):
        assert meta[key] == f"{env.url}/access/v1/{path}"


def test_audit_record_per_decision(env: Env, admission: Any) -> None:
    rid = f"audit-{env.namespace}"
    resp = env.post(
        "/access/v1/evaluation",
        {
            "subject": {"type": "agent", "id": f"{env.namespace}/release-bot"},
            "action": {"name": "github.admin.users"},
            "resource": {"type": "service", "id": "x"},
        },
        env.release_token,
        headers={"X-Request-ID": rid},
    )
    assert resp.status_code == 200 and resp.json()["decision"] is False
    record = wait_for(
        lambda: next((r for r in admission.audit_records() if r.get("requestId") == rid), None),
        timeout=10,
        what="the audit record",
    )
    claims = json.loads(base64.urlsafe_b64decode(env.release_token.split(".")[1] + "=="))
    assert record["kind"] == "decision" and record["outcome"] == "deny"
    assert record["rule"] == "scope/deployer/tools.deny[0]"
    assert record["actor"] == f"system:serviceaccount:{env.namespace}:agent-release-bot"
    assert record["agent"].endswith(f"/{env.namespace}/release-bot")
    assert record["agentUid"] and record["gen_ai.agent.name"] == "release-bot"
    assert record["jti"] == claims["jti"]
    assert set(record["scopeGenerations"]) == {"deployer"}


# --------------------------------------------------------------------------------- callers


def test_callers_are_authenticated_and_authorized(env: Env, cluster: Any) -> None:
    ns = env.namespace
    body = {
        "subject": {"type": "agent", "id": f"{ns}/release-bot"},
        "action": {"name": "ci.runs.read"},
        "resource": {"type": "service", "id": "x"},
    }
    # no credentials, garbage, an expired token, a token for another audience
    assert env.post("/access/v1/evaluation", body).status_code == 401
    assert env.post("/access/v1/evaluation", body, "not-a-token").status_code == 401
    header = base64.urlsafe_b64encode(b'{"alg":"RS256"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1000}).encode()).rstrip(b"=").decode()
    expired = env.post("/access/v1/evaluation", body, f"{header}.{payload}.sig")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    wrong_aud = create_token(
        cluster, ns, "agent-release-bot", audience="https://kubernetes.default"
    )
    resp = env.post("/access/v1/evaluation", body, wrong_aud)
    assert resp.status_code == 401 and AUD in resp.json()["error"]["message"]
    # an agent asking about another agent
    resp = env.post("/access/v1/evaluation", body, env.other_token)
    assert resp.status_code == 403 and "only evaluate for itself" in resp.json()["error"]["message"]
    # a gateway without `evaluate`
    resp = env.post("/access/v1/evaluation", body, env.stranger_token)
    assert resp.status_code == 403 and "evaluate" in resp.json()["error"]["message"]
    # a gateway with `evaluate` but without the agent's token / with another agent's
    resp = env.post("/access/v1/evaluation", body, env.gateway_token)
    assert resp.status_code == 401 and "subject.properties.token" in resp.text
    forwarded = {**body, "subject": {**body["subject"], "properties": {"token": env.other_token}}}
    resp = env.post("/access/v1/evaluation", forwarded, env.gateway_token)
    assert resp.status_code == 403 and "belongs to" in resp.text
    ok = {**body, "subject": env.agent("release-bot")}
    resp = env.post("/access/v1/evaluation", ok, env.gateway_token)
    assert resp.status_code == 200 and resp.json()["decision"] is True
    # unknown agent
    unknown = {**body, "subject": {"type": "agent", "id": f"{ns}/nobody"}}
    resp = env.post("/access/v1/evaluation", unknown, env.gateway_token)
    assert resp.status_code == 404 and "not registered" in resp.text
    # whoami
    who = requests.get(
        env.url + "/v1/whoami", headers={"Authorization": f"Bearer {env.release_token}"}, timeout=10
    ).json()
    assert who["agent"] == f"{ns}/release-bot" and who["identity"].startswith("agent://")
    assert requests.get(env.url + "/v1/whoami", timeout=10).status_code == 401


def test_allow_deny_and_context(env: Env) -> None:
    def outcome(action: str, **kw: Any) -> tuple[bool, str, str]:
        resp = env.evaluate(action, **kw)
        assert resp.status_code == 200, resp.text
        ctx = resp.json()["context"]
        return resp.json()["decision"], ctx["outcome"], ctx["rule"]

    assert outcome("github.pulls.create") == (True, "allow", "scope/deployer/tools.allow[0]")
    assert outcome("github.admin.users.delete") == (False, "deny", "scope/deployer/tools.deny[0]")
    assert outcome("shell.exec") == (False, "deny", "default/unknown-action")
    # context-aware: the same agent and action
    prod = {"env": "production"}
    assert outcome("deploy.service", rprops={"env": "staging"})[1] == "allow"
    assert outcome("deploy.service", rprops=prod) == (
        False,
        "deny",
        "scope/deployer/constraints[0]",
    )
    assert outcome("deploy.service", rprops=prod, context={"change_window": True})[1] == "allow"
    # one agent, one action, three answers as the context changes: a small refund is
    # allowed, a large one needs two people (the refunds policy's `when`), and none at all
    # while refunds are frozen (the scope's constraint, checked before any approval)
    assert outcome("payments.refund", aprops={"amount": 10})[1] == "allow"
    assert outcome("payments.refund", aprops={"amount": 10_000}, rid="r-ctx")[1] == "escalate"
    frozen = {"refunds_frozen": True}
    assert outcome("payments.refund", aprops={"amount": 10}, context=frozen) == (
        False,
        "deny",
        "scope/deployer/constraints[2]",
    )
    assert outcome("payments.refund", aprops={"amount": 10_000}, context=frozen)[1] == "deny"
    reason = env.evaluate("deploy.service", rprops=prod).json()["context"]["reason"]
    assert 'resource.properties.env="production"' in reason


def test_pathological_expression_is_stopped_and_api_keeps_serving(env: Env, cluster: Any) -> None:
    # refused at admission: estimated cost over the limit
    expensive = (
        "apiVersion: agentidentity.io/v1alpha1\nkind: AuthorityScope\nmetadata: {name: heavy}\n"
        "spec:\n  tools: {allow: [x]}\n  constraints:\n  - tools: [x]\n    when: >-\n"
        "      context.a.all(i, context.a.all(j, context.a.all(k, i + j + k > 0)))\n"
    )
    out = cluster.kubectl("apply", "-n", env.namespace, "-f", "-", input=expensive, check=False)
    assert out.returncode != 0 and "too expensive" in out.stderr, out.stderr
    assert "constraints[0].when" in out.stderr
    # at evaluation: an input over the collection limit stops the expression
    started = time.monotonic()
    resp = env.evaluate("data.scan", context={"items": ["a"] * 100_000})
    elapsed = time.monotonic() - started
    body = resp.json()
    assert resp.status_code == 200 and body["decision"] is False
    assert body["context"]["rule"] == "scope/deployer/constraints[1]"
    assert "per-evaluation limit" in body["context"]["reason"]
    assert "context.items (100000 entries)" in body["context"]["reason"]
    assert elapsed < 5
    assert env.evaluate("data.scan", context={"items": ["a", "b"]}).json()["decision"] is True
    # A large input the expression does not read costs nothing: allowed.
    unrelated = {"items": ["a", "b"], "audit_trail": ["x"] * 200_000}
    assert env.evaluate("data.scan", context=unrelated).json()["decision"] is True
    assert env.evaluate("ci.runs.read").json()["decision"] is True


@pytest.mark.parametrize("state", ["Suspended", "Retired"])
def test_suspend_or_retire_denies_the_same_token_within_a_second(
    env: Env, cluster: Any, state: str
) -> None:
    # The API server would go on authenticating the token (its 10 s cache, and a Suspended
    # agent keeps its ServiceAccount): the decision API's own registry is what refuses.
    assert env.evaluate("ci.runs.read").json()["decision"] is True
    patch = json.dumps({"spec": {"lifecycle": {"state": state}}})
    started = time.monotonic()  # before kubectl starts: its own time counts too
    cluster.kubectl(
        "patch", "agent", "release-bot", "-n", env.namespace, "--type=merge", "-p", patch
    )
    while True:
        resp = env.evaluate("ci.runs.read")
        elapsed = time.monotonic() - started
        if resp.status_code == 200 and resp.json()["decision"] is False:
            break
        assert elapsed < 5, resp.text
        time.sleep(0.01)
    figure(f"{state.lower()} -> decision API denies the same token after {elapsed * 1000:.0f} ms")
    body = resp.json()
    assert body["context"]["outcome"] == "deny"
    assert body["context"]["rule"] == f"lifecycle/{state}"
    assert elapsed < 1.0
