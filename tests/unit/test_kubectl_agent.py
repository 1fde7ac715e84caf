"""Unit tests of the kubectl plugin's pure parts: option parsing, shaping, reports, A2A cards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from agent_identity.api import Agent, ApprovalRequest, AuthorityScope
from agent_identity.api.common import CREATED_BY_ANNOTATION, LAST_MODIFIED_BY_ANNOTATION
from agent_identity.authz.approvals import effective_state
from agent_identity.cli import report
from agent_identity.cli.kubeapi import KubeOptions, refusal_message
from agent_identity.cli.kubectl_agent import cli
from agent_identity.cli.report import UsageError

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def state_of(req: ApprovalRequest, now: datetime) -> str:
    return effective_state(req, now).value


def make_agent(name: str = "release-bot", ns: str = "payments", **spec: Any) -> Agent:
    body: dict[str, Any] = {
        "apiVersion": "agentidentity.io/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 3,
            "creationTimestamp": "2026-02-28T12:00:00Z",
            "annotations": {
                CREATED_BY_ANNOTATION: "alice@example.com",
                LAST_MODIFIED_BY_ANNOTATION: "bob@example.com",
            },
        },
        "spec": {"owner": "team-payments", "scopeRefs": [{"name": "deployer"}], **spec},
        "status": {
            "phase": "Active",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Provisioned",
                    "message": "ok",
                    "lastTransitionTime": "2026-02-28T12:00:05Z",
                }
            ],
            "identity": {
                "uri": f"agent://dev/{ns}/{name}",
                "serviceAccount": f"agent-{name}",
                "uid": f"uid-{name}",
            },
            "effectiveAuthority": {"digest": "a" * 64, "summary": "1 rule, 2 tools"},
            "history": [
                {
                    "from": "Pending",
                    "to": "Active",
                    "actor": "alice@example.com",
                    "at": "2026-02-28T12:00:05Z",
                    "reason": "Provisioned",
                },
                {
                    "from": "Active",
                    "to": "Suspended",
                    "actor": "bob@example.com",
                    "at": "2026-03-01T11:00:00Z",
                    "reason": "SpecChanged",
                },
            ],
        },
    }
    return Agent.parse(body)


def make_scope(name: str = "deployer", ns: str = "payments") -> AuthorityScope:
    return AuthorityScope.parse(
        {
            "metadata": {"name": name, "namespace": ns, "generation": 2},
            "spec": {
                "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
                "tools": {
                    "allow": ["github.pulls.*", "ci.runs.read", "github.admin.users"],
                    "deny": ["github.admin.users"],
                },
                "sensitive": ["deploy.production"],
                "constraints": [
                    {"tools": ["ci.runs.read"], "when": "context.ok == true", "message": "m"}
                ],
                "network": {"egress": [{"to": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 443}]}]},
                "maxTokenTTLSeconds": 1800,
            },
        }
    )


def make_request(
    name: str = "ar-1",
    *,
    state: str = "Pending",
    decisions: list[dict[str, Any]] | None = None,
    expires: str = "2026-03-01T13:00:00Z",
    requested_at: str = "2026-03-01T11:30:00Z",
) -> ApprovalRequest:
    return ApprovalRequest.parse(
        {
            "metadata": {
                "name": name,
                "namespace": "payments",
                "creationTimestamp": requested_at,
            },
            "spec": {
                "agent": {"name": "release-bot"},
                "agentUid": "uid-release-bot",
                "action": "deploy.production",
                "resource": {"type": "service", "id": "payments-api"},
                "requestedAt": requested_at,
                "requestedBy": "system:serviceaccount:payments:agent-release-bot",
                "approvers": {"users": ["sre@example.com"], "groups": ["sre-leads"]},
                "minApprovals": 2,
                "expiresAt": expires,
            },
            "status": {"state": state, "decisions": decisions or []},
        }
    )


# --- option parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("1500", 1500),
        ("12.5", 12.5),
        ('["a", "b"]', ["a", "b"]),
        ('{"x": 1}', {"x": 1}),
        ("null", None),
        ("production", "production"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_parse_value_json_when_possible(raw: str, expected: Any) -> None:
    assert report.parse_value(raw) == expected


def test_parse_kv_nests_dotted_keys_and_splits_on_first_equals() -> None:
    got = report.parse_kv(
        ["env=production", "change.window=true", "change.ticket=CHG-1", "q=a=b", "n=3"],
        "--context",
    )
    assert got == {
        "env": "production",
        "change": {"window": True, "ticket": "CHG-1"},
        "q": "a=b",
        "n": 3,
    }


@pytest.mark.parametrize("bad", ["noequals", "=value", "a..b=1", "a.=1"])
def test_parse_kv_rejects_malformed_with_the_option_name(bad: str) -> None:
    with pytest.raises(UsageError, match="--resource-prop"):
        report.parse_kv([bad], "--resource-prop")


def test_parse_kv_refuses_key_both_value_and_map() -> None:
    with pytest.raises(UsageError, match="already set"):
        report.parse_kv(["a=1", "a.b=2"], "--context")


def test_parse_resource() -> None:
    assert report.parse_resource("service/payments-api") == ("service", "payments-api")
    assert report.parse_resource("repo/org/app") == ("repo", "org/app")
    assert report.parse_resource(None) is None
    for bad in ("service", "/x", "service/"):
        with pytest.raises(UsageError, match="TYPE/ID"):
            report.parse_resource(bad)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), ("500ms", 0.5)],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert report.parse_duration(raw).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["", "h", "10", "1x", "1h 2m", "-1h"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        report.parse_duration(bad)


def test_parse_since_duration_or_timestamp() -> None:
    assert report.parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert report.parse_since("2026-02-01T00:00:00Z", NOW) == datetime(2026, 2, 1, tzinfo=UTC)
    assert report.parse_since("2026-02-01T01:00:00+01:00", NOW) == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since"):
        report.parse_since("yesterday", NOW)


@pytest.mark.parametrize(
    ("delta", "age"),
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=3), "3h"),
        (timedelta(days=3), "3d"),
        (timedelta(days=800), "2y"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_format_age(delta: timedelta, age: str) -> None:
    assert report.format_age(NOW - delta, NOW) == age
    assert report.format_age(None, NOW) == "<unknown>"


# --- agents -----------------------------------------------------------------------------------


def test_agent_row_columns() -> None:
    agent = make_agent(
        platform={"type": "external", "provider": "openai", "externalId": "asst_1"},
        lifecycle={"state": "Active", "expiresAt": "2027-06-30T00:00:00Z"},
    )
    row = report.agent_row(agent, NOW)
    assert list(row) == [
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
    assert row["PLATFORM"] == "external/openai"
    assert row["READY"] == "True"
    assert row["SCOPES"] == "deployer"
    assert row["EXPIRES"] == "2027-06-30T00:00:00Z"
    assert row["AGE"] == "24h"
    wide = report.agent_row(agent, NOW, wide=True)
    assert wide["IDENTITY"] == "agent://dev/payments/release-bot"
    assert wide["SERVICEACCOUNT"] == "agent-release-bot"


def test_agent_row_of_unreconciled_agent() -> None:
    agent = Agent.parse({"metadata": {"name": "x", "namespace": "n"}, "spec": {"owner": "o"}})
    row = report.agent_row(agent, NOW, wide=True)
    assert row["PHASE"] == "Pending"
    assert row["READY"] == "Unknown"
    assert row["SCOPES"] == "<none>"
    assert row["IDENTITY"] == "<pending>"


def test_describe_agent_collects_every_section() -> None:
    agent = make_agent()
    pending = make_request("ar-pending")
    expired = make_request("ar-old", expires="2026-03-01T11:59:00Z")
    d = report.describe_agent(agent, [make_scope()], ["gone"], [pending, expired], NOW, state_of)
    assert d["identity"] == {
        "uri": "agent://dev/payments/release-bot",
        "serviceAccount": "agent-release-bot",
        "uid": "uid-release-bot",
    }
    eff = d["authority"]["effective"]
    assert eff["sensitive"] == ["deploy.production"]
    assert eff["maxTokenTTLSeconds"] == 1800
    assert d["authority"]["missingScopes"] == ["gone"]
    scope = d["authority"]["scopes"][0]
    assert scope["egress"][0]["to"][0]["cidr"] == "10.0.0.0/8"
    assert scope["constraints"][0]["when"] == "context.ok == true"
    assert [h["to"] for h in d["lifecycle"]["history"]] == ["Active", "Suspended"]
    assert d["provenance"]["createdBy"] == "alice@example.com"
    assert d["provenance"]["lastModifiedBy"] == "bob@example.com"
    # only the live pending request, not the expired one
    assert [a["name"] for a in d["pendingApprovals"]] == ["ar-pending"]
    text = report.describe_text(d)
    for needle in (
        "agent://dev/payments/release-bot",
        "Sensitive:",
        "deploy.production",
        "Egress:      to 10.0.0.0/8 ports 443/TCP",
        "Active -> Suspended  by bob@example.com",
        "Created by:",
        "alice@example.com",
        "ar-pending: deploy.production on service/payments-api",
        "Missing scopes:",
    ):
        assert needle in text, needle
    json.dumps(d)  # serialisable as is


# --- approvals --------------------------------------------------------------------------------


def test_approval_row_counts_distinct_approvers_and_applies_expiry() -> None:
    decisions = [
        {"approver": "sre@example.com", "verdict": "Approve", "reason": "ok", "at": NOW},
        {"approver": "sre@example.com", "verdict": "Approve", "reason": "again", "at": NOW},
    ]
    req = make_request(decisions=decisions)
    row = report.approval_row(req, NOW, state_of)
    assert row["APPROVALS"] == "1/2"
    assert row["STATE"] == "Pending"
    assert row["RESOURCE"] == "service/payments-api"
    assert row["AGE"] == "30m"
    later = NOW + timedelta(hours=2)
    assert report.approval_row(req, later, state_of)["STATE"] == "Expired"
    view = report.approval_view(req, later, state_of)
    assert view["storedState"] == "Pending"
    assert view["decisions"][0]["approver"] == "sre@example.com"


def test_decision_entry_leaves_identity_to_the_server() -> None:
    entry = report.decision_entry("Approve", "looks fine", NOW)
    assert entry == {
        "verdict": "Approve",
        "reason": "looks fine",
        "approver": "",
        "at": "2026-03-01T12:00:00Z",
    }


# --- can-i ------------------------------------------------------------------------------------


def test_decision_view_and_exit_codes() -> None:
    agent = make_agent()
    req = report.CanIRequest("deploy.production", ("service", "api"), {}, {}, {})
    v = report.decision_view(
        agent, req, "escalate", "needs approval", "scope/deployer/sensitive[0]",
        {"users": ["sre@example.com"], "groups": ["sre-leads"]},
    )  # fmt: skip
    assert v["answer"] == "needs approval"
    assert v["decision"] is False
    assert v["approvers"] == ["sre@example.com", "group:sre-leads"]
    assert v["resource"] == "service/api"
    text = report.decision_text(v)
    assert text.startswith("needs approval\n")
    assert "rule:" in text and "scope/deployer/sensitive[0]" in text
    assert "approvers: sre@example.com, group:sre-leads" in text
    assert report.OUTCOME_EXIT == {"allow": 0, "deny": 1, "escalate": 3}
    assert report.approvers_list(None) == []
    assert report.approvers_list(["u"]) == ["u"]


# --- lifecycle --------------------------------------------------------------------------------


def test_lifecycle_patches() -> None:
    active = make_agent()
    assert report.lifecycle_patch(active, "suspend") == {
        "spec": {"lifecycle": {"state": "Suspended"}}
    }
    assert report.lifecycle_patch(active, "resume") is None
    assert report.lifecycle_patch(active, "retire") == {"spec": {"lifecycle": {"state": "Retired"}}}
    deprecated = make_agent(lifecycle={"state": "Deprecated", "sunsetAt": "2026-09-01T00:00:00Z"})
    # resume drops sunsetAt (allowed only with Deprecated/Retired); retire keeps it
    assert report.lifecycle_patch(deprecated, "resume") == {
        "spec": {"lifecycle": {"state": "Active", "sunsetAt": None}}
    }
    assert report.lifecycle_patch(deprecated, "retire") == {
        "spec": {"lifecycle": {"state": "Retired"}}
    }


def test_bulk_targets_by_owner_and_state() -> None:
    a = make_agent("a")
    b = make_agent("b", lifecycle={"state": "Suspended"})
    c = Agent.parse({"metadata": {"name": "c", "namespace": "payments"}, "spec": {"owner": "x"}})
    assert [t.metadata.name for t in report.bulk_targets([c, b, a], "suspend", None)] == ["a", "c"]
    assert [t.metadata.name for t in report.bulk_targets([c, b, a], "suspend", "x")] == ["c"]
    assert [t.metadata.name for t in report.bulk_targets([c, b, a], "resume", None)] == ["b"]


# --- audit ------------------------------------------------------------------------------------


def _records() -> list[dict[str, Any]]:
    return [
        {
            "kind": "decision",
            "at": "2026-03-01T11:50:00.000Z",
            "requestId": "r-1",
            "namespace": "payments",
            "agent": "agent://dev/payments/release-bot",
            "gen_ai.agent.name": "release-bot",
            "actor": "system:serviceaccount:payments:agent-release-bot",
            "action": {"name": "deploy.production"},
            "resource": {"type": "service", "id": "payments-api"},
            "outcome": "escalate",
            "rule": "scope/deployer/sensitive[0]",
        },
        {
            "kind": "decision",
            "at": "2026-02-01T00:00:00.000Z",
            "requestId": "r-old",
            "outcome": "allow",
        },
        {"kind": "lifecycle", "at": "2026-03-01T11:00:00.000Z", "actor": "bob", "outcome": "x"},
    ]


def test_audit_report_window_and_joins() -> None:
    agent = make_agent()
    decided = make_request(
        "ar-done",
        state="Denied",
        decisions=[{"approver": "sre@example.com", "verdict": "Deny", "reason": "no", "at": NOW}],
    )
    old = make_request(
        "ar-old", requested_at="2026-01-01T00:00:00Z", expires="2026-01-01T01:00:00Z"
    )
    since = NOW - timedelta(hours=2)
    rep = report.audit_report(
        [agent], [decided, old], _records(), now=NOW, since=since, state_of=state_of,
        sources=["audit.jsonl"],
    )  # fmt: skip
    assert rep["summary"] == {
        "agents": 1,
        "approvalRequests": 1,
        "decisions": 1,
        "outcomes": {"escalate": 1},
    }
    a = rep["agents"][0]
    assert a["owner"] == "team-payments"
    assert a["authorityDigest"] == "a" * 64
    assert a["scopes"] == ["deployer"]
    assert [h["to"] for h in a["history"]] == ["Suspended"]  # the older one is out of the window
    assert a["approvals"][0]["decisions"][0]["approver"] == "sre@example.com"
    d = rep["decisions"][0]
    assert (d["actor"], d["action"], d["resource"], d["outcome"], d["requestId"]) == (
        "system:serviceaccount:payments:agent-release-bot",
        "deploy.production",
        "service/payments-api",
        "escalate",
        "r-1",
    )
    assert [r["kind"] for r in rep["otherRecords"]] == ["lifecycle"]
    full = report.audit_report([agent], [decided, old], _records(), now=NOW, since=None,
                               state_of=state_of)  # fmt: skip
    assert full["summary"]["decisions"] == 2
    assert len(full["agents"][0]["history"]) == 2
    json.dumps(rep)


def test_audit_markdown_is_readable() -> None:
    rep = report.audit_report(
        [make_agent()], [], _records(), now=NOW, since=None, state_of=state_of, sources=["f"]
    )
    md = report.audit_markdown(rep)
    assert md.startswith("# Agent identity audit report\n")
    assert "## Agents" in md and "## Decisions" in md
    assert "| payments | release-bot | team-payments | Active | deployer |" in md
    assert "| r-1 | payments/release-bot | system:serviceaccount:payments:agent-release-bot |" in md
    # every table row has the header's column count
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({line.count(" | ") for line in rows if not line.startswith("|-")}) == 1
    assert "_no approval requests in the window_" in md


def test_audit_markdown_escapes_pipes() -> None:
    recs = [{"kind": "decision", "at": "2026-03-01T11:00:00Z", "reason": "a|b", "rule": "x|y"}]
    md = report.audit_markdown(report.audit_report([], [], recs, now=NOW, since=None,
                                                   state_of=state_of))  # fmt: skip
    assert "x\\|y" in md


# --- A2A cards --------------------------------------------------------------------------------


def test_a2a_card_shape() -> None:
    agent = make_agent(description="Ships releases")
    card = report.a2a_card(agent, [make_scope()])
    for key in (
        "protocolVersion",
        "name",
        "description",
        "url",
        "version",
        "provider",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "skills",
    ):
        assert key in card, key
    assert card["name"] == "release-bot"
    assert card["description"] == "Ships releases"
    assert card["url"] == "agent://dev/payments/release-bot"
    assert card["version"] == "3"
    assert card["provider"]["organization"] == "team-payments"
    assert set(card["capabilities"]) >= {"streaming", "pushNotifications", "extensions"}
    skills = {s["id"]: s for s in card["skills"]}
    # the denied pattern is not a skill; sensitive is, tagged as needing approval
    assert set(skills) == {"github.pulls.*", "ci.runs.read", "deploy.production"}
    assert "approval-required" in skills["deploy.production"]["tags"]
    for s in card["skills"]:
        assert set(s) >= {"id", "name", "description", "tags"}
    ext = card["capabilities"]["extensions"][0]
    assert ext["uri"] == report.A2A_EXTENSION_URI
    assert ext["params"]["lifecycle"]["phase"] == "Active"
    assert ext["params"]["owner"] == "team-payments"
    assert ext["params"]["identity"]["serviceAccount"] == "agent-release-bot"
    assert card["securitySchemes"]["kubernetes"]["scheme"] == "bearer"
    json.dumps(card)


# --- the command line (no cluster: everything here fails or finishes before connecting) -------


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    res = CliRunner().invoke(
        cli, ["list", "--kubeconfig", str(missing), "-n", "x"], obj=KubeOptions()
    )
    assert res.exit_code == report.EXIT_ERROR
    assert "cannot load the kubeconfig" in res.output or "cannot read the kubeconfig" in res.output


def _kubeconfig(tmp_path: Path) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
            {"name": "two", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "one",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_namespace_defaults_from_context_and_impersonation_headers(tmp_path: Path) -> None:
    from agent_identity.cli.kubeapi import Kube

    path = _kubeconfig(tmp_path)
    assert Kube(KubeOptions(kubeconfig=str(path))).namespace == "team-a"
    assert Kube(KubeOptions(kubeconfig=str(path), context="two")).namespace == "default"
    assert Kube(KubeOptions(kubeconfig=str(path), namespace="x")).namespace == "x"
    k = Kube(KubeOptions(kubeconfig=str(path), as_user="alice", as_groups=["g1", "g2"]))
    assert k.client.default_headers["Impersonate-User"] == "alice"
    sent: dict[str, Any] = {}
    pool = k.client.rest_client.pool_manager

    # what the wrapper hands to urllib3: one Impersonate-Group line per group
    import agent_identity.cli.kubeapi as kubeapi

    def fake(method: str, url: str, *a: Any, **kw: Any) -> None:
        sent.update(kw)

    client = k.client
    client.rest_client.pool_manager = pool
    kubeapi._impersonate(client, None, [])  # no-op without groups
    pool_orig = pool.request
    pool.request = fake
    kubeapi._impersonate(client, None, ["g1", "g2"])
    pool.request("GET", "https://x", headers={"Impersonate-Group": "stale", "A": "b"})
    assert sent["headers"].getlist("Impersonate-Group") == ["g1", "g2"]
    assert sent["headers"]["A"] == "b"
    pool.request = pool_orig


def test_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path)
    res = CliRunner().invoke(
        cli, ["list", "--kubeconfig", str(path), "--context", "three"], obj=KubeOptions()
    )
    assert res.exit_code == report.EXIT_ERROR
    assert "context 'three' is not in the kubeconfig (known contexts: one, two)" in res.output


def test_unreachable_cluster_exit_code(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path)
    res = CliRunner().invoke(cli, ["--kubeconfig", str(path), "list"], obj=KubeOptions())
    assert res.exit_code == report.EXIT_ERROR
    assert "cannot reach the API server" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["can-i", "bot"], "ACTION is required"),
        (["can-i", "bot", "x.y", "noslash"], "TYPE/ID"),
        (["can-i", "bot", "x.y", "--context", "a=1", "--context", "one", "--context", "two"],
         "at most one kubeconfig context"),
        (["can-i", "bot", "x.y", "--resource-prop", "bad"], "--resource-prop 'bad'"),
        (["audit", "--since", "soon"], "--since 'soon'"),
        (["list", "-o", "markdown"], "-o markdown is not supported"),
        (["suspend"], "give NAME, --owner OWNER or --all"),
        (["retire", "--all"], "retire acts on one agent at a time"),
        (["suspend", "x", "--owner", "y"], "not both"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    path = _kubeconfig(tmp_path)
    res = CliRunner().invoke(cli, [*args, "--kubeconfig", str(path)], obj=KubeOptions())
    assert res.exit_code == report.EXIT_USAGE, res.output
    assert message in res.output


def test_refusal_message_strips_the_api_server_wrapping() -> None:
    class Exc:
        status = 400
        reason = "Bad Request"
        body = json.dumps(
            {
                "kind": "Status",
                "message": 'admission webhook "approvals.agentidentity.io" denied the request: '
                "alice is not an approver",
            }
        )

    assert refusal_message(Exc()) == "alice is not an approver"
