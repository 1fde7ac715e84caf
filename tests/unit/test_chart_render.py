"""The Helm chart rendered with `helm template` (the real helm v4 binary): shape and policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_identity.admission.webhookconfig import ServiceRef, webhook_configurations
from tests.unit.chart_support import ALL_TOGGLES, CHART, ROOT, find, helm, render

NS = "agent-identity-system"


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render(include_crds=False)


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render(ALL_TOGGLES, include_crds=False)


def test_lint_strict() -> None:
    proc = helm("lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for values in ({}, ALL_TOGGLES):
        sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
        proc = helm("lint", "--strict", str(CHART), *sets)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("operator.replicas=2", "replicas"),  # kopf: exactly one operator
        ("admission.failurePolicy=Sometimes", "failurePolicy"),
        ("admission.webhookPort=70000", "webhookPort"),
        ("nosuchvalue=1", "nosuchvalue"),
    ],
)
def test_schema_rejects_bad_values(setting: str, field: str) -> None:
    proc = helm("template", "x", str(CHART), "--set", setting)
    assert proc.returncode != 0
    assert field in proc.stderr


def test_default_namespace_and_names(default: list[dict[str, Any]]) -> None:
    namespaced = [o for o in default if o["kind"] not in CLUSTER_KINDS]
    assert namespaced and all(o["metadata"]["namespace"] == NS for o in namespaced)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["admission"]["replicas"] == 2 and values["operator"]["replicas"] == 1
    # The install namespace in the docs (NOTES, values header) is the fixed one.
    assert f"--namespace {NS}" in (CHART / "values.yaml").read_text()


CLUSTER_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
    "Namespace",
}


def test_object_counts(default: list[dict[str, Any]], everything: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in default)
    assert kinds.count("Deployment") == 2 and kinds.count("ClusterRole") == 6
    extra = {o["kind"] for o in everything} - {o["kind"] for o in default}
    assert extra == {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_operator_is_a_single_recreated_replica(default: list[dict[str, Any]]) -> None:
    dep = find(default, "Deployment", "agent-identity-operator")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    assert f"--decision-namespace={NS}" in args and "--metrics-port=9090" in args


def test_admission_replicas_pdb_antiaffinity_probes(default: list[dict[str, Any]]) -> None:
    dep = find(default, "Deployment", "agent-identity-admission")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (
        terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == spec["selector"]["matchLabels"]
    )
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 8443, "decisions": 8444, "metrics": 8080}
    assert f"--metrics-port={ports['metrics']}" in c["args"]
    pdb = find(default, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"]
    # The operator's NetworkPolicies let agents reach pods labelled like this.
    from agent_identity.identity.network import DECISION_API_LABELS

    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in DECISION_API_LABELS.items())


def test_services_route_to_named_ports(default: list[dict[str, Any]]) -> None:
    hook = find(default, "Service", "agent-identity-admission")
    assert hook["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    dec = find(default, "Service", "agent-identity-decisions")
    assert dec["spec"]["ports"][0]["targetPort"] == "decisions"
    metrics = [o for o in default if o["kind"] == "Service" and "metrics" in o["metadata"]["name"]]
    assert len(metrics) == 2
    assert all(o["metadata"]["labels"]["agentidentity.io/metrics"] == "true" for o in metrics)


@pytest.mark.parametrize("which", ["default", "everything"])
def test_pod_security_restricted(which: str, request: pytest.FixtureRequest) -> None:
    objs = request.getfixturevalue(which)
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsUser"] == 65532
        assert all("hostPath" not in v for v in pod.get("volumes", []))


def _rules(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in obj["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_operator_rbac_least_privilege(default: list[dict[str, Any]]) -> None:
    rules = _rules(find(default, "ClusterRole", "agent-identity-operator"))
    rbac = "rbac.authorization.k8s.io"
    # escalate/bind exist only so the operator can write the agents' Roles and Bindings.
    assert {(rbac, "roles", "escalate"), (rbac, "roles", "bind")} <= rules
    assert {(g, r, v) for g, r, v in rules if v in ("escalate", "bind")} <= {
        (rbac, "roles", "escalate"),
        (rbac, "roles", "bind"),
        (rbac, "rolebindings", "escalate"),
        (rbac, "rolebindings", "bind"),
    }
    assert all("*" not in (g, r, v) for g, r, v in rules)
    assert not {r for _, r, _ in rules} & {"secrets", "clusterroles", "clusterrolebindings"}
    # Pods: only what the kill switch needs (follow agent pods, delete those of a Suspended
    # or Retired agent); never create, update or exec.
    assert {v for g, r, v in rules if (g, r) == ("", "pods")} == {"list", "watch", "delete"}
    # Workloads: list and patch (the resume annotation), nothing that creates or deletes.
    assert {v for g, r, v in rules if g == "apps"} <= {"list", "patch"}
    # The template explains every rule.
    text = (CHART / "templates" / "operator-rbac.yaml").read_text()
    assert "escalation guard" in text


@pytest.mark.parametrize(
    "template", ["operator-rbac.yaml", "admission-rbac.yaml", "user-roles.yaml"]
)
def test_every_rbac_rule_says_why(template: str) -> None:
    # Least privilege you can review: a comment right above every rule of every role.
    text = (CHART / "templates" / template).read_text()
    parts = text.split("  - apiGroups:")
    assert len(parts) > 1, f"{template} has no rules"
    for i, rule in enumerate(parts[1:]):
        assert parts[i].rstrip().splitlines()[-1].lstrip().startswith("#"), (
            f"{template}: no comment above the rule {rule[:80]!r}"
        )


def test_admission_rbac(default: list[dict[str, Any]], everything: list[dict[str, Any]]) -> None:
    rules = _rules(find(default, "ClusterRole", "agent-identity-admission"))
    assert ("authentication.k8s.io", "tokenreviews", "create") in rules
    assert ("authorization.k8s.io", "subjectaccessreviews", "create") in rules
    assert not any(v in ("delete", "escalate", "bind", "*") for _, _, v in rules)
    own = find(default, "Role", "agent-identity-admission")
    assert ("coordination.k8s.io", "leases", "update") in _rules(own)
    # cert-manager mode: nothing to write, no lease, no webhook patching.
    cm = _rules(find(everything, "Role", "agent-identity-admission"))
    assert {v for _, _, v in cm} == {"get", "list", "watch"}
    assert not any(
        r.endswith("webhookconfigurations")
        for _, r, _ in _rules(find(everything, "ClusterRole", "agent-identity-admission"))
    )


def test_user_roles_match_the_decision_api_rbac(default: list[dict[str, Any]]) -> None:
    # manifests/rbac/ (owned by the decision API) is folded into the chart: same rules.
    for name in ("agentidentity-approver", "agentidentity-evaluator"):
        path = next(
            p for p in (ROOT / "manifests" / "rbac").glob("*.yaml") if name in p.read_text()
        )
        theirs = yaml.safe_load(path.read_text())
        ours = find(default, "ClusterRole", name)
        assert _rules(ours) == _rules(theirs), name
        for key, value in theirs["metadata"]["labels"].items():
            if key.startswith("rbac.authorization.k8s.io/"):
                assert ours["metadata"]["labels"][key] == value
    decisions = yaml.safe_load(
        (ROOT / "manifests" / "rbac" / "decisions-clusterrole.yaml").read_text()
    )
    assert _rules(decisions) <= _rules(find(default, "ClusterRole", "agent-identity-admission"))
    viewer = find(default, "ClusterRole", "agentidentity-viewer")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    editor = find(default, "ClusterRole", "agentidentity-editor")
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"


def _strip(config: dict[str, Any]) -> list[dict[str, Any]]:
    hooks = []
    for hook in config["webhooks"]:
        hook = {**hook, "clientConfig": dict(hook["clientConfig"])}
        hook["clientConfig"].pop("caBundle", None)
        hooks.append(hook)
    return hooks


@pytest.mark.parametrize("which", ["default", "everything"])
def test_webhooks_equal_the_admission_builder(which: str, request: pytest.FixtureRequest) -> None:
    objs = request.getfixturevalue(which)
    validating, mutating = webhook_configurations(
        ca_bundle=b"", service=ServiceRef("agent-identity-admission", NS), name="agent-identity"
    )
    ours_v = find(objs, "ValidatingWebhookConfiguration")
    ours_m = find(objs, "MutatingWebhookConfiguration")
    assert ours_v["metadata"]["name"] == validating["metadata"]["name"]
    assert _strip(ours_v) == _strip(validating)
    assert _strip(ours_m) == _strip(mutating)
    for cfg in (ours_v, ours_m):
        assert all("caBundle" not in h["clientConfig"] for h in cfg["webhooks"])
        annotations = cfg["metadata"].get("annotations") or {}
        if which == "everything":
            assert annotations["cert-manager.io/inject-ca-from"] == f"{NS}/agent-identity-admission"
        else:
            assert "cert-manager.io/inject-ca-from" not in annotations


def test_webhooks_exclude_the_release_namespace() -> None:
    objs = render({"admission.excludedNamespaces[0]": "monitoring"}, namespace="ops")
    for hook in find(objs, "ValidatingWebhookConfiguration")["webhooks"]:
        for expr in (hook.get("namespaceSelector") or {}).get("matchExpressions", []):
            if expr["key"] == "kubernetes.io/metadata.name":
                assert expr == {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", "monitoring", "ops"],
                }


def test_cert_manager_mode(everything: list[dict[str, Any]]) -> None:
    cert = find(everything, "Certificate")
    assert cert["spec"]["secretName"] == "agent-identity-admission-tls"
    assert "agent-identity-admission.agent-identity-system.svc" in cert["spec"]["dnsNames"]
    assert "agent-identity-decisions.agent-identity-system.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"]["name"] == find(everything, "Issuer")["metadata"]["name"]
    c = find(everything, "Deployment", "agent-identity-admission")["spec"]["template"]["spec"]
    assert "--tls-cert-file=/etc/agent-identity/tls/tls.crt" in c["containers"][0]["args"]
    assert {"name": "tls", "secret": {"secretName": "agent-identity-admission-tls"}} in c["volumes"]


def test_self_managed_certificate_mode(default: list[dict[str, Any]]) -> None:
    c = find(default, "Deployment", "agent-identity-admission")["spec"]["template"]["spec"]
    container = c["containers"][0]
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--tls-"))
    assert args["--tls-secret"] == "agent-identity-admission-tls"
    assert args["--tls-lease"] == "agent-identity-admission-tls"
    names = args["--tls-dns-names"].split(",")
    assert "agent-identity-admission.agent-identity-system.svc" in names
    assert "agent-identity-decisions.agent-identity-system.svc" in names
    # The admission process's default names are the chart's Services.
    from agent_identity.admission.selfcert import chart_dns_names

    assert sorted(names) == sorted(chart_dns_names("agent-identity", NS))
    assert {e["name"] for e in container["env"]} == {"POD_NAME"}  # the Lease holder identity
    assert "volumes" not in c or all(v["name"] != "tls" for v in c["volumes"])
    # The chart creates the Secret and the Lease the process writes (it may not create).
    assert find(default, "Secret", "agent-identity-admission-tls")["type"] == "Opaque"
    assert find(default, "Lease", "agent-identity-admission-tls")["spec"] == {}


def test_monitoring_objects(everything: list[dict[str, Any]]) -> None:
    sm = find(everything, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"]["agentidentity.io/metrics"] == "true"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    rule = find(everything, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "AgentIdentityWebhookFailing",
        "AgentIdentityWebhookSlow",
        "AgentIdentityReconcileErrors",
        "AgentIdentityApprovalsPending",
        "AgentIdentityAgentsWithoutOwner",
        "AgentIdentityAgentsPastExpiry",
    } <= alerts
    # Alert annotations keep Prometheus' own templating (not consumed by Helm).
    assert any(
        "{{ $labels" in str(r["annotations"]) for g in rule["spec"]["groups"] for r in g["rules"]
    )
    cm = find(everything, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    import json

    dash = json.loads(cm["data"]["agent-identity.json"])
    assert dash["uid"] == "agent-identity" and len(dash["panels"]) >= 10


def test_notes_name_the_next_command() -> None:
    proc = helm("install", "agent-identity", str(CHART), "-n", NS, "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    assert (
        "kubectl -n agent-identity-system rollout status deployment/agent-identity-admission"
        in proc.stdout
    )


def test_chart_crds_equal_the_generated_ones() -> None:
    generated = sorted((ROOT / "crds").glob("*.yaml"))
    in_chart = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in generated] == [p.name for p in in_chart], "run `make helm`"
    assert len(generated) == 4
    for a, b in zip(generated, in_chart, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{b} drifted from {a}: run `make helm`"


def test_crds_equal_the_models() -> None:
    # And crds/ itself equals the generator's output (so the chart equals the models).
    from agent_identity.api import crdgen

    for name, content in crdgen.rendered_files().items():
        assert (CHART / "crds" / name).read_text() == content, f"{name}: run `make helm`"


def test_release_name_prefixes_objects() -> None:
    objs = render(release="blue", include_crds=False)
    names = {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"}
    assert names == {"blue-agent-identity-operator", "blue-agent-identity-admission"}
    dep = find(objs, "Deployment", "blue-agent-identity-admission")
    assert (
        "--webhook-name=blue-agent-identity"
        in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    _ = Path  # keep the import for type checkers of helpers
