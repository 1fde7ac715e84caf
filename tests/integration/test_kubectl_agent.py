"""`kubectl agent` against the real control plane, with the operator, the admission webhooks
and the decision API running for real. The plugin runs as a subprocess, as people run it.

Fixture contract used here (tests/fixtures/operator.py, tests/fixtures/admission.py):
``operator`` runs the reconciler; ``admission`` runs the webhooks and the decision API and
exposes ``decisions_url`` (base URL of the decision API) and ``audit_path`` (the JSON-lines
audit file it writes).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import wait_for

VENV_BIN = Path(sys.executable).parent
PLUGIN = str(VENV_BIN / "kubectl-agent")
API = "agentidentity.io/v1alpha1"


# --- helpers ----------------------------------------------------------------------------------


def agent_cli(
    cluster: Any, *args: str, kubeconfig: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *args, "--kubeconfig", str(kubeconfig or cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def apply(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        doc.setdefault("apiVersion", API)
        doc["metadata"]["namespace"] = namespace
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )


def agent_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "agents.agentidentity.io", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def wait_phase(cluster: Any, namespace: str, name: str, phase: str) -> None:
    wait_for(
        f"agent {namespace}/{name} phase {phase}",
        lambda: agent_status(cluster, namespace, name).get("status", {}).get("phase") == phase,
    )


def scope(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "AuthorityScope", "metadata": {"name": name}, "spec": spec}


def agent(name: str, owner: str = "team-payments", **spec: Any) -> dict[str, Any]:
    return {"kind": "Agent", "metadata": {"name": name}, "spec": {"owner": owner, **spec}}


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def evaluate(
    url: str, token: str, body: dict[str, Any], request_id: str
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url.rstrip("/") + "/access/v1/evaluation",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Request-ID": request_id,
        },
        method="POST",
    )
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the dev decision API's own CA; TLS is not under test here
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return resp.status, dict(json.loads(resp.read()))


def grant_approval_rights(cluster: Any, namespace: str, users: list[str]) -> None:
    """Kubernetes RBAC that lets `users` read and decide ApprovalRequests in the namespace."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "approver", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["agentidentity.io"],
                "resources": ["approvalrequests", "approvalrequests/status"],
                "verbs": ["get", "list", "watch", "update"],
            },
            {
                "apiGroups": ["agentidentity.io"],
                "resources": ["agents"],
                "verbs": ["get", "list"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "approver", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "approver"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users
        ],
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}),
    )


GOVERNED_SCOPE = scope(
    "deployer",
    rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}],
    tools={
        "allow": ["github.pulls.*", "ci.runs.read", "payments.refund", "docs.**"],
        "deny": ["github.admin.**", "docs.secret.**"],
    },
    sensitive=["deploy.production", "payments.payout"],
    constraints=[
        {
            "tools": ["payments.refund"],
            "when": "has(action.properties.amount) && action.properties.amount <= 1000",
            "message": "refunds above 1000 need a person",
        },
        {
            "tools": ["ci.runs.read"],
            "when": '!has(resource.properties.env) || resource.properties.env != "production"'
            " || context.change_window == true",
        },
    ],
    network={"egress": [{"to": [{"cidr": "10.20.0.0/16"}], "ports": [{"port": 443}]}]},
    maxTokenTTLSeconds=1800,
)
PROD_POLICY = {
    "kind": "ApprovalPolicy",
    "metadata": {"name": "prod-deploys"},
    "spec": {
        "match": {"actions": ["deploy.production"], "scopes": ["deployer"]},
        "approvers": {"users": ["alice"]},
        "minApprovals": 1,
        "grantSeconds": 600,
    },
}


# --- registry, describe, export, token, the kubectl plugin mechanism --------------------------


def test_list_describe_export_token_and_kubectl_plugin(
    cluster: Any, namespace: str, crds: None, operator: Any
) -> None:
    apply(
        cluster,
        namespace,
        [
            GOVERNED_SCOPE,
            agent("release-bot", description="Ships releases", scopeRefs=[{"name": "deployer"}]),
            agent(
                "assistant",
                owner="alice@example.com",
                platform={"type": "external", "provider": "openai", "externalId": "asst_1"},
                scopeRefs=[{"name": "deployer"}],
                lifecycle={"state": "Active", "expiresAt": "2099-01-01T00:00:00Z"},
            ),
        ],
    )
    wait_phase(cluster, namespace, "release-bot", "Active")
    wait_phase(cluster, namespace, "assistant", "Active")

    table = ok(agent_cli(cluster, "list", "-n", namespace))
    header = table.splitlines()[0].split()
    assert header == [
        "NAME",
        "NAMESPACE",
        "OWNER",
        "PLATFORM",
        "PHASE",
        "READY",
        "SCOPES",
        "EXPIRES",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["assistant"][2:8] == [
        "alice@example.com",
        "external/openai",
        "Active",
        "True",
        "deployer",
        "2099-01-01T00:00:00Z",
    ]
    assert rows["release-bot"][3] == "kubernetes"
    # -A covers this namespace too; -o json is the wire objects
    every = json.loads(ok(agent_cli(cluster, "list", "-A", "-o", "json")))
    assert {(a["metadata"]["namespace"], a["metadata"]["name"]) for a in every} >= {
        (namespace, "release-bot"),
        (namespace, "assistant"),
    }

    desc = json.loads(
        ok(agent_cli(cluster, "describe", "release-bot", "-n", namespace, "-o", "json"))
    )
    stored = agent_status(cluster, namespace, "release-bot")
    assert desc["identity"]["uid"] == stored["metadata"]["uid"]
    assert desc["identity"]["serviceAccount"] == "agent-release-bot"
    assert desc["identity"]["uri"].endswith(f"/{namespace}/release-bot")
    assert desc["authority"]["effective"]["sensitive"] == ["deploy.production", "payments.payout"]
    assert desc["authority"]["scopes"][0]["egress"][0]["to"][0]["cidr"] == "10.20.0.0/16"
    assert desc["authority"]["digest"] == stored["status"]["effectiveAuthority"]["digest"]
    assert desc["lifecycle"]["phase"] == "Active"
    assert any(
        c["type"] == "Ready" and c["status"] == "True" for c in desc["lifecycle"]["conditions"]
    )
    assert desc["lifecycle"]["history"], "the transition to Active is in the history"
    text = ok(agent_cli(cluster, "describe", "release-bot", "-n", namespace))
    for needle in (
        "Identity:",
        "Authority:",
        "Lifecycle:",
        "History:",
        "Provenance:",
        "Pending approvals:",
    ):
        assert needle in text

    cards = json.loads(ok(agent_cli(cluster, "export", "--format", "a2a", "-n", namespace)))
    by_name = {c["name"]: c for c in cards}
    assert set(by_name) == {"release-bot", "assistant"}
    card = by_name["assistant"]
    assert card["provider"]["organization"] == "alice@example.com"
    assert {s["id"] for s in card["skills"]} == {
        "github.pulls.*",
        "ci.runs.read",
        "payments.refund",
        "docs.**",
        "deploy.production",
        "payments.payout",
    }
    params = card["capabilities"]["extensions"][0]["params"]
    assert params["lifecycle"]["phase"] == "Active"
    assert params["platform"]["provider"] == "openai"

    tok = json.loads(
        ok(agent_cli(cluster, "token", "assistant", "--ttl", "900", "-n", namespace, "-o", "json"))
    )
    claims = jwt_claims(tok["token"])
    assert claims["sub"] == f"system:serviceaccount:{namespace}:agent-assistant"
    assert claims["aud"] == ["agentidentity.io"]
    assert 880 <= claims["exp"] - claims["iat"] <= 900
    too_long = agent_cli(cluster, "token", "assistant", "--ttl", "3600", "-n", namespace)
    assert too_long.returncode == 2 and "1800" in too_long.stderr

    missing = agent_cli(cluster, "describe", "nope", "-n", namespace)
    assert missing.returncode == 4
    assert f"Agent 'nope' not found in namespace '{namespace}'" in missing.stderr
    assert "kubectl agent list" in missing.stderr

    # a real kubectl plugin: kubectl finds kubectl-agent on PATH and passes the flags through
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    via_kubectl = subprocess.run(
        [
            cluster.kubectl_bin,
            "agent",
            "list",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr

    def cells(text: str) -> list[list[str]]:
        return [line.split()[:-1] for line in text.splitlines()]  # all but AGE

    assert cells(via_kubectl.stdout) == cells(table)


# --- can-i agrees with the decision API; audit lists every decision ---------------------------


def _amount(n: int) -> tuple[list[str], dict[str, Any]]:
    return ["--action-prop", f"amount={n}"], {"action": {"properties": {"amount": n}}}


def _prod(window: bool | None) -> tuple[list[str], dict[str, Any]]:
    """A production resource, with the change window open, closed or not said."""
    args = ["--resource-prop", "env=production"]
    extra: dict[str, Any] = {"resource": {"properties": {"env": "production"}}}
    if window is not None:
        args += ["--context", f"change_window={json.dumps(window)}"]
        extra["context"] = {"change_window": window}
    return args, extra


# (action, RESOURCE, extra can-i args, AuthZEN extras, expected outcome)
CASES: list[tuple[str, str, list[str], dict[str, Any], str]] = [
    ("github.pulls.create", "repo/payments", [], {}, "allow"),
    ("github.pulls.merge", "repo/payments", [], {}, "allow"),
    ("github.pulls", "repo/payments", [], {}, "deny"),
    ("github.pulls.review.submit", "repo/payments", [], {}, "deny"),
    ("github.admin", "repo/payments", [], {}, "deny"),
    ("github.admin.users.delete", "repo/payments", [], {}, "deny"),
    ("docs.read", "wiki/home", [], {}, "allow"),
    ("docs.a.b.c", "wiki/home", [], {}, "allow"),
    ("docs.secret.keys", "wiki/home", [], {}, "deny"),
    ("unknown.tool", "repo/payments", [], {}, "deny"),
    ("Bad..Name", "repo/payments", [], {}, "deny"),
    ("deploy.production", "service/payments-api", [], {}, "escalate"),
    ("deploy.production", "service/checkout", [], {}, "escalate"),
    ("payments.payout", "account/42", [], {}, "deny"),  # sensitive, no policy: no approver
    ("payments.refund", "order/1", *_amount(500), "allow"),
    ("payments.refund", "order/2", *_amount(1000), "allow"),
    ("payments.refund", "order/3", *_amount(1500), "deny"),
    ("payments.refund", "order/4", [], {}, "deny"),
    ("ci.runs.read", "pipeline/main", [], {}, "allow"),
    ("ci.runs.read", "pipeline/prod", *_prod(None), "deny"),
    ("ci.runs.read", "pipeline/prod", *_prod(True), "allow"),
    ("ci.runs.read", "pipeline/prod", *_prod(False), "deny"),
    ("ci.runs.write", "pipeline/main", [], {}, "deny"),
]  # fmt: skip
EXIT = {"allow": 0, "deny": 1, "escalate": 3}


def _authzen_body(
    namespace: str, name: str, action: str, resource: str, extra: dict[str, Any]
) -> dict[str, Any]:
    rtype, rid = resource.split("/", 1)
    body: dict[str, Any] = {
        "subject": {"type": "agent", "id": f"{namespace}/{name}"},
        "action": {"name": action, **extra.get("action", {})},
        "resource": {"type": rtype, "id": rid, **extra.get("resource", {})},
        "context": extra.get("context", {}),
    }
    return body


def test_can_i_agrees_with_the_decision_api_and_audit_lists_every_decision(
    cluster: Any, namespace: str, crds: None, operator: Any, admission: Any
) -> None:
    assert len(CASES) >= 20
    apply(
        cluster,
        namespace,
        [GOVERNED_SCOPE, PROD_POLICY, agent("release-bot", scopeRefs=[{"name": "deployer"}])],
    )
    wait_phase(cluster, namespace, "release-bot", "Active")
    token = ok(agent_cli(cluster, "token", "release-bot", "-n", namespace)).strip()
    actor = f"system:serviceaccount:{namespace}:agent-release-bot"

    request_ids: list[str] = []
    for action, resource, args, extra, expected in CASES:
        local = agent_cli(
            cluster, "can-i", "release-bot", action, resource, *args, "-n", namespace, "-o", "json"
        )
        assert local.returncode == EXIT[expected], (action, resource, local.stdout, local.stderr)
        mine = json.loads(local.stdout)
        rid = uuid.uuid4().hex
        request_ids.append(rid)
        status, theirs = evaluate(
            admission.decisions_url,
            token,
            _authzen_body(namespace, "release-bot", action, resource, extra),
            rid,
        )
        assert status == 200
        ctx = theirs["context"]
        assert (mine["outcome"], mine["decision"], mine["rule"]) == (
            ctx["outcome"], theirs["decision"], ctx["rule"]
        ), (action, resource, mine, theirs)  # fmt: skip
        assert mine["outcome"] == expected, (action, resource, mine)
        # asked again after the API opened its ApprovalRequest: still the same answer
        again = json.loads(
            agent_cli(
                cluster,
                "can-i",
                "release-bot",
                action,
                resource,
                *args,
                "-n",
                namespace,
                "-o",
                "json",
            ).stdout
        )
        assert again["outcome"] == ctx["outcome"]

    escalated = json.loads(
        agent_cli(
            cluster,
            "can-i",
            "release-bot",
            "deploy.production",
            "service/payments-api",
            "-n",
            namespace,
            "-o",
            "json",
        ).stdout
    )
    assert escalated["approvers"] == ["alice"]
    listed = json.loads(
        ok(agent_cli(cluster, "can-i", "release-bot", "--list", "-n", namespace, "-o", "json"))
    )
    # concrete actions allowed now: payments.refund needs an amount, deploy.production approval
    assert {a["action"] for a in listed} == {"ci.runs.read"}

    audit_file = Path(admission.audit_path)

    def decisions_seen() -> Any:
        rep = json.loads(
            ok(
                agent_cli(
                    cluster, "audit", "-n", namespace, "--audit-file", str(audit_file), "-o", "json"
                )
            )
        )
        ids = {d["requestId"] for d in rep["decisions"]}
        return rep if set(request_ids) <= ids else None

    rep = wait_for("every decision in the audit file", decisions_seen, timeout=20)
    mine_only = [d for d in rep["decisions"] if d["requestId"] in set(request_ids)]
    assert len(mine_only) == len(CASES)
    for d, (action, _resource, _a, _e, expected) in zip(
        sorted(mine_only, key=lambda d: request_ids.index(d["requestId"])), CASES, strict=True
    ):
        assert d["actor"] == actor
        assert d["outcome"] == expected
        assert d["action"] == action
        assert d["rule"]
    agents = {a["name"]: a for a in rep["agents"]}
    assert agents["release-bot"]["owner"] == "team-payments"
    assert agents["release-bot"]["scopes"] == ["deployer"]
    assert {r["action"] for r in agents["release-bot"]["approvals"]} == {"deploy.production"}
    md = ok(
        agent_cli(
            cluster, "audit", "-n", namespace, "--audit-file", str(audit_file), "-o", "markdown"
        )
    )
    assert md.startswith("# Agent identity audit report")
    for rid in request_ids:
        assert rid in md


# --- approvals: approve, deny, refusals carried from the webhook ------------------------------


def test_approvals_approve_deny_and_refusals(
    cluster: Any, namespace: str, crds: None, operator: Any, admission: Any
) -> None:
    apply(
        cluster,
        namespace,
        [GOVERNED_SCOPE, PROD_POLICY, agent("release-bot", scopeRefs=[{"name": "deployer"}])],
    )
    wait_phase(cluster, namespace, "release-bot", "Active")
    grant_approval_rights(cluster, namespace, ["alice", "mallory"])
    alice = cluster.user_kubeconfig("alice")
    mallory = cluster.user_kubeconfig("mallory")
    token = ok(agent_cli(cluster, "token", "release-bot", "-n", namespace)).strip()

    names = []
    for svc in ("payments-api", "checkout"):
        _, out = evaluate(
            admission.decisions_url,
            token,
            _authzen_body(namespace, "release-bot", "deploy.production", f"service/{svc}", {}),
            uuid.uuid4().hex,
        )
        assert out["context"]["outcome"] == "escalate"
        names.append(out["context"]["approvalRequest"].split("/", 1)[1])

    rows = ok(agent_cli(cluster, "approvals", "-n", namespace, kubeconfig=alice)).splitlines()
    assert rows[0].split() == [
        "NAME",
        "NAMESPACE",
        "AGENT",
        "ACTION",
        "RESOURCE",
        "STATE",
        "APPROVALS",
        "AGE",
    ]
    body = {line.split()[0]: line.split() for line in rows[1:]}
    assert set(body) == set(names)
    assert body[names[0]][5:7] == ["Pending", "0/1"]

    refused = agent_cli(
        cluster, "approve", names[0], "--reason", "mine", "-n", namespace, kubeconfig=mallory
    )
    assert refused.returncode == 1
    assert "mallory" in refused.stderr and "not an approver" in refused.stderr
    assert "admission webhook" not in refused.stderr  # the message itself, not the wrapping

    done = ok(
        agent_cli(
            cluster,
            "approve",
            names[0],
            "--reason",
            "change CHG-7",
            "-n",
            namespace,
            kubeconfig=alice,
        )
    )
    assert "state Approved" in done and "1/1" in done
    stored = json.loads(
        cluster.kubectl(
            "get", "approvalrequests.agentidentity.io", names[0], "-n", namespace, "-o", "json"
        ).stdout
    )
    assert (
        stored["status"]["decisions"][0]["approver"] == "alice"
    )  # from the request, not the client
    allowed = agent_cli(
        cluster,
        "can-i",
        "release-bot",
        "deploy.production",
        "service/payments-api",
        "-n",
        namespace,
    )
    assert allowed.returncode == 0 and allowed.stdout.startswith("yes")

    twice = agent_cli(
        cluster, "approve", names[0], "--reason", "again", "-n", namespace, kubeconfig=alice
    )
    assert twice.returncode == 1 and "Approved" in twice.stderr

    denied = json.loads(
        ok(
            agent_cli(
                cluster,
                "deny",
                names[1],
                "--reason",
                "not now",
                "-n",
                namespace,
                "-o",
                "json",
                kubeconfig=alice,
            )
        )
    )
    assert denied["state"] == "Denied"
    assert denied["decisions"][0]["approver"] == "alice"
    blocked = agent_cli(
        cluster, "can-i", "release-bot", "deploy.production", "service/checkout", "-n", namespace
    )
    assert blocked.returncode == 1

    as_json = json.loads(ok(agent_cli(cluster, "approvals", "-n", namespace, "-o", "json")))
    assert {a["name"]: a["state"] for a in as_json} == {names[0]: "Approved", names[1]: "Denied"}
    missing = agent_cli(
        cluster, "approve", "nope", "--reason", "x", "-n", namespace, kubeconfig=alice
    )
    assert missing.returncode == 4 and "kubectl agent approvals" in missing.stderr

    # provenance recorded by the admission webhook, shown by describe
    prov = json.loads(
        ok(agent_cli(cluster, "describe", "release-bot", "-n", namespace, "-o", "json"))
    )
    assert prov["provenance"]["createdBy"]

    audit = json.loads(ok(agent_cli(cluster, "audit", "-n", namespace, "-o", "json")))
    deciders = {
        r["name"]: [(d["approver"], d["verdict"]) for d in r["decisions"]]
        for a in audit["agents"]
        for r in a["approvals"]
    }
    assert deciders == {names[0]: [("alice", "Approve")], names[1]: [("alice", "Deny")]}


# --- lifecycle: suspend, resume, bulk, retire, refusals ---------------------------------------


def test_suspend_resume_bulk_and_retire(
    cluster: Any, namespace: str, crds: None, operator: Any, admission: Any
) -> None:
    apply(
        cluster,
        namespace,
        [
            GOVERNED_SCOPE,
            agent("a1", owner="team-x", scopeRefs=[{"name": "deployer"}]),
            agent("a2", owner="team-x", scopeRefs=[{"name": "deployer"}]),
            agent("b1", owner="team-y", scopeRefs=[{"name": "deployer"}]),
        ],
    )
    for name in ("a1", "a2", "b1"):
        wait_phase(cluster, namespace, name, "Active")

    out = ok(agent_cli(cluster, "suspend", "a1", "-n", namespace))
    assert f"agent {namespace}/a1: Active -> Suspended" in out
    wait_phase(cluster, namespace, "a1", "Suspended")
    no = agent_cli(cluster, "can-i", "a1", "github.pulls.create", "repo/x", "-n", namespace)
    assert no.returncode == 1 and "Suspended" in no.stdout
    ok(agent_cli(cluster, "resume", "a1", "-n", namespace))
    wait_phase(cluster, namespace, "a1", "Active")

    bulk = json.loads(
        ok(agent_cli(cluster, "suspend", "--owner", "team-x", "-n", namespace, "-o", "json"))
    )
    assert sorted(r["agent"] for r in bulk) == [f"{namespace}/a1", f"{namespace}/a2"]
    assert all(r["state"] == "Suspended" for r in bulk)
    assert agent_status(cluster, namespace, "b1")["spec"]["lifecycle"]["state"] == "Active"
    wait_phase(cluster, namespace, "a2", "Suspended")
    back = json.loads(ok(agent_cli(cluster, "resume", "--all", "-n", namespace, "-o", "json")))
    assert sorted(r["agent"] for r in back) == [f"{namespace}/a1", f"{namespace}/a2"]
    for name in ("a1", "a2"):
        wait_phase(cluster, namespace, name, "Active")

    # Deprecated -> Suspended is not a legal move: the webhook's message is shown, exit 1
    deprecate = {"spec": {"lifecycle": {"state": "Deprecated", "sunsetAt": "2099-01-01T00:00:00Z"}}}
    cluster.kubectl(
        "patch", "agents.agentidentity.io", "b1", "-n", namespace, "--type", "merge", "-p",
        json.dumps(deprecate),
    )  # fmt: skip
    wait_phase(cluster, namespace, "b1", "Deprecated")
    illegal = agent_cli(cluster, "suspend", "b1", "-n", namespace)
    assert illegal.returncode == 1
    assert "Deprecated" in illegal.stderr and "admission webhook" not in illegal.stderr

    retired = ok(agent_cli(cluster, "retire", "b1", "-n", namespace))
    assert "Deprecated -> Retired, sunsetAt 2099-01-01T00:00:00Z" in retired
    wait_phase(cluster, namespace, "b1", "Retired")
    assert (
        agent_status(cluster, namespace, "b1")["spec"]["lifecycle"]["sunsetAt"]
        == "2099-01-01T00:00:00Z"
    )
    revive = agent_cli(cluster, "resume", "b1", "-n", namespace)
    assert revive.returncode == 1 and "Retired" in revive.stderr
    no_token = agent_cli(cluster, "token", "b1", "-n", namespace)
    assert no_token.returncode == 1 and "Retired" in no_token.stderr

    history = json.loads(ok(agent_cli(cluster, "describe", "a1", "-n", namespace, "-o", "json")))[
        "lifecycle"
    ]["history"]
    assert "Suspended" in [h["to"] for h in history]
    assert history[-1]["to"] == "Active"
