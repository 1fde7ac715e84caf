from __future__ import annotations

import base64

import yaml
from click.testing import CliRunner

from agent_identity.admission.webhookconfig import ServiceRef, webhook_configurations
from agent_identity.cli.admission import admission


def _hooks(doc: dict) -> dict[str, dict]:
    return {h["name"]: h for h in doc["webhooks"]}


def test_dev_configuration() -> None:
    v, m = webhook_configurations(ca_bundle=b"PEM", url="https://127.0.0.1:9443")
    assert (
        v["kind"] == "ValidatingWebhookConfiguration"
        and m["kind"] == "MutatingWebhookConfiguration"
    )
    assert v["metadata"]["name"] == m["metadata"]["name"] == "agent-identity"
    vh, mh = _hooks(v), _hooks(m)
    for hook in [*vh.values(), *mh.values()]:
        assert hook["timeoutSeconds"] == 5 and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"PEM"
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:9443/")
        if hook["rules"][0]["resources"] == ["pods"]:
            exclusion = hook["namespaceSelector"]["matchExpressions"][0]
            assert exclusion["values"] == ["agent-identity-system", "kube-system"]
    assert {n: h["failurePolicy"] for n, h in vh.items()} == {
        "agent-pods.agentidentity.io": "Fail",
        "agent-sa-pods.agentidentity.io": "Fail",
        "enforce-deny.agentidentity.io": "Fail",
        "enforce-warn.agentidentity.io": "Ignore",
        "enforce-audit.agentidentity.io": "Ignore",
        "resources.agentidentity.io": "Fail",
        "approval-requests.agentidentity.io": "Fail",
    }
    creation = vh["approval-requests.agentidentity.io"]["rules"][0]
    assert (creation["resources"], creation["operations"]) == (["approvalrequests"], ["CREATE"])
    assert vh["agent-sa-pods.agentidentity.io"]["matchConditions"][0]["expression"].endswith(
        "startsWith('agent-')"
    )
    assert vh["enforce-warn.agentidentity.io"]["clientConfig"]["url"].endswith(
        "/validate/pods/warn"
    )
    assert mh["approvals.agentidentity.io"]["rules"][0]["resources"] == ["approvalrequests/status"]
    assert (
        mh["agent-pods.agentidentity.io"]["objectSelector"]["matchExpressions"][0]["operator"]
        == "Exists"
    )


def test_service_configuration_and_cli(tmp_path) -> None:
    v, _ = webhook_configurations(
        ca_bundle=b"x", service=ServiceRef("svc", "ns", 443), operator_namespace="ns"
    )
    hook = v["webhooks"][0]
    assert hook["clientConfig"]["service"] == {
        "name": "svc",
        "namespace": "ns",
        "port": 443,
        "path": "/validate/pods",
    }
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CA")
    result = CliRunner().invoke(
        admission, ["webhook-config", "--namespace", "ops", "--ca-file", str(ca)]
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in docs] == [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    assert docs[0]["webhooks"][0]["clientConfig"]["service"]["namespace"] == "ops"
