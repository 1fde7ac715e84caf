from __future__ import annotations

import copy

import pytest

from agent_identity.admission.pods import TOKEN_VOLUME, mutate_pod, validate_pod
from tests.unit.test_admission_helpers import NOW, agent, pod, registry, review, scope

REG = registry(
    agent("active-bot", scopes=("deployer",)),
    agent("old-bot", phase="Deprecated", state="Deprecated", sunset="2027-01-01T00:00:00Z"),
    agent("paused-bot", phase="Suspended", state="Suspended"),
    agent("triage-bot", phase="Retired", state="Retired"),
    agent("expired-bot", expires="2026-11-30T00:00:00Z"),
    agent("new-bot", phase=None),
    agent("ext-bot", platform={"type": "external", "provider": "openai"}),
    agent("bad-owner", owner="!!"),
    scope("deployer", maxTokenTTLSeconds=600),
)


@pytest.mark.parametrize(
    ("label", "allowed", "reason", "fragment"),
    [
        ("active-bot", True, "Allowed", None),
        ("old-bot", True, "AgentDeprecated", None),
        ("paused-bot", False, "AgentSuspended", 'agent "paused-bot" is Suspended since 2026-11-02'),
        (
            "triage-bot",
            False,
            "AgentRetired",
            'agent "triage-bot" is Retired since 2026-11-02T08:00:00Z',
        ),
        ("expired-bot", False, "AgentRetired", "expiresAt passed"),
        ("new-bot", False, "AgentNotReady", "not provisioned yet"),
        ("ext-bot", False, "AgentExternal", "external platform"),
        ("bad-owner", False, "AgentInvalid", "spec.owner"),
        ("ghost", False, "AgentNotFound", 'no Agent "ghost" is registered in namespace "payments"'),
    ],
)
def test_agent_pod_by_state(label: str, allowed: bool, reason: str, fragment: str | None) -> None:
    d = validate_pod(review(pod(label=label)), REG, NOW)
    assert (d.allowed, d.reason) == (allowed, reason)
    if fragment:
        assert fragment in d.message
    if not allowed and reason != "AgentExternal":
        assert d.confirm == [("Agent", "payments", label)]


def test_deprecated_pod_is_warned_with_sunset() -> None:
    d = validate_pod(review(pod(label="old-bot")), REG, NOW)
    assert d.warnings and "retires at 2027-01-01T00:00:00Z" in d.warnings[0]


def test_retired_message_says_how_to_fix() -> None:
    d = validate_pod(review(pod(label="triage-bot")), REG, NOW)
    assert "register a new Agent" in d.message


def test_explicit_other_service_account_is_denied() -> None:
    d = validate_pod(review(pod(label="active-bot", sa="agent-old-bot")), REG, NOW)
    assert not d.allowed and d.reason == "ServiceAccountMismatch"
    assert '"agent-active-bot"' in d.message and "remove spec.serviceAccountName" in d.message


@pytest.mark.parametrize("sa", [None, "default", "agent-active-bot"])
def test_own_or_default_service_account_is_fine(sa: str | None) -> None:
    assert validate_pod(review(pod(label="active-bot", sa=sa)), REG, NOW).allowed


def test_borrowing_an_agent_service_account_is_denied() -> None:
    d = validate_pod(review(pod(sa="agent-active-bot")), REG, NOW)
    assert not d.allowed and d.reason == "ServiceAccountBorrowed"
    assert "agentidentity.io/agent: active-bot" in d.message


def test_service_account_with_agent_prefix_but_no_agent_is_fine() -> None:
    assert validate_pod(review(pod(sa="agent-nobody")), REG, NOW).allowed


@pytest.mark.parametrize(
    ("old_label", "new_label", "word"),
    [
        (None, "active-bot", "added"),
        ("active-bot", None, "removed"),
        ("active-bot", "old-bot", "changed"),
    ],
)
def test_label_cannot_change_on_update(
    old_label: str | None, new_label: str | None, word: str
) -> None:
    d = validate_pod(
        review(pod(label=new_label), operation="UPDATE", old=pod(label=old_label)), REG, NOW
    )
    assert not d.allowed and d.reason == "AgentLabelChanged" and word in d.message


def test_unrelated_update_of_suspended_agent_pod_is_allowed() -> None:
    p = pod(label="paused-bot")
    q = copy.deepcopy(p)
    q["metadata"]["labels"]["x"] = "y"
    assert validate_pod(review(q, operation="UPDATE", old=p), REG, NOW).allowed


def test_enforce_modes() -> None:
    req = review(pod())
    assert validate_pod(req, REG, NOW).allowed
    deny = validate_pod(req, REG, NOW, "deny")
    assert not deny.allowed and deny.reason == "UnregisteredPod"
    assert "agentidentity.io/enforce=deny" in deny.message
    warn = validate_pod(req, REG, NOW, "warn")
    assert warn.allowed and "not a registered agent" in warn.warnings[0]
    audited = validate_pod(req, REG, NOW, "audit")
    assert audited.allowed and not audited.warnings
    (rec,) = audited.audit
    assert rec["kind"] == "admission" and rec["outcome"] == "audited" and rec["pod"] == "p"
    assert rec["actor"] == "alice"


def test_enforce_still_checks_agent_pods() -> None:
    assert validate_pod(review(pod(label="active-bot")), REG, NOW, "deny").allowed
    assert not validate_pod(review(pod(label="paused-bot")), REG, NOW, "warn").allowed


def _apply(obj: dict, patch: list[dict]) -> dict:
    out = copy.deepcopy(obj)
    for op in patch:
        assert op["op"] == "add"
        parts = op["path"].strip("/").split("/")
        target = out
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = op["value"]
    return out


def test_mutation_injects_identity_into_every_container() -> None:
    d = mutate_pod(review(pod(label="active-bot", init=True)), REG, NOW, "http://127.0.0.1:9")
    assert d.allowed and d.patch and d.token_ttl == 600  # the scope caps 900 at 600
    spec = _apply(pod(label="active-bot", init=True), d.patch)["spec"]
    assert spec["serviceAccountName"] == "agent-active-bot"
    assert spec["automountServiceAccountToken"] is False
    names = [v["name"] for v in spec["volumes"]]
    assert names == [TOKEN_VOLUME]  # the API token volume is gone
    src = spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert src == {"audience": "agentidentity.io", "expirationSeconds": 600, "path": "token"}
    for c in spec["containers"] + spec["initContainers"]:
        assert c["volumeMounts"] == [
            {
                "name": TOKEN_VOLUME,
                "mountPath": "/var/run/secrets/agentidentity.io/token",
                "readOnly": True,
            }
        ]
        assert {"name": "AGENT_IDENTITY_DECISIONS_URL", "value": "http://127.0.0.1:9"} in c["env"]


def test_mutation_injects_the_decision_api_ca_when_it_serves_https() -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    stale = {"name": "AGENT_IDENTITY_DECISIONS_CA", "value": "forged"}
    base = pod(label="active-bot")
    base["spec"]["containers"][0]["env"] = [stale, {"name": "KEEP", "value": "1"}]
    d = mutate_pod(review(base), REG, NOW, "https://ai.example.svc", ca)
    assert d.allowed and d.patch
    env = _apply(base, d.patch)["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "KEEP", "value": "1"},
        {"name": "AGENT_IDENTITY_DECISIONS_URL", "value": "https://ai.example.svc"},
        {"name": "AGENT_IDENTITY_DECISIONS_CA", "value": ca},
    ]
    # Plain HTTP (--dev): no CA, and a CA set by hand is not left to mislead the client.
    d = mutate_pod(review(base), REG, NOW, "http://127.0.0.1:9")
    env = _apply(base, d.patch or [])["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["KEEP", "AGENT_IDENTITY_DECISIONS_URL"]


def test_deprecated_agent_gets_the_shortest_ttl() -> None:
    reg = registry(
        agent(
            "old-bot",
            phase="Deprecated",
            state="Deprecated",
            sunset="2027-01-01T00:00:00Z",
            ttl=3600,
        )
    )
    d = mutate_pod(review(pod(label="old-bot")), reg, NOW, "u")
    assert d.token_ttl == 600 and not d.warnings


def test_mutation_uses_agent_audience_and_ttl() -> None:
    a = agent("a")
    a["spec"]["token"] = {"audience": "payments-gw", "ttlSeconds": 1800}
    d = mutate_pod(review(pod(label="a")), registry(a), NOW, "u")
    spec = _apply(pod(label="a"), d.patch or [])["spec"]
    src = spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert (src["audience"], src["expirationSeconds"]) == ("payments-gw", 1800)


@pytest.mark.parametrize("label", ["paused-bot", "ghost"])
def test_no_mutation_for_pods_that_will_be_denied(label: str) -> None:
    d = mutate_pod(review(pod(label=label)), REG, NOW, "u")
    assert d.allowed and not d.patch


def test_no_mutation_without_label() -> None:
    assert not mutate_pod(review(pod()), REG, NOW, "u").patch
