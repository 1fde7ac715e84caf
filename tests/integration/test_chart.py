"""The Helm chart and the kustomize manifests on the real control plane.

Each test installs under its own release name (cluster-scoped objects are named after
it) and removes what it installed before it ends: while one of these releases is
installed, its webhooks (failurePolicy Fail, no endpoint: its pods never start, see
NEVER_RUNS) would refuse our resources cluster-wide.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from agent_identity.devcluster import helm as helmlib
from tests.unit.chart_support import ALL_TOGGLES, CHART, ROOT

pytestmark = pytest.mark.timeout(600)


def _crd(group: str, plural: str, kind: str, version: str) -> dict[str, Any]:
    """A minimal CRD of someone else's kind (the real ones are not installed here)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


OPTIONAL_CRDS = [
    _crd("monitoring.coreos.com", "servicemonitors", "ServiceMonitor", "v1"),
    _crd("monitoring.coreos.com", "prometheusrules", "PrometheusRule", "v1"),
    _crd("cert-manager.io", "certificates", "Certificate", "v1"),
    _crd("cert-manager.io", "issuers", "Issuer", "v1"),
]


@pytest.fixture(scope="module")
def optional_crds(cluster: Any) -> Iterator[None]:
    docs = yaml.safe_dump_all(OPTIONAL_CRDS)
    cluster.kubectl("apply", "-f", "-", input=docs)
    names = [c["metadata"]["name"] for c in OPTIONAL_CRDS]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    yield
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", *(f"crd/{n}" for n in names))


def _helm(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(helmlib.ensure_helm()), "--kubeconfig", str(cluster.kubeconfig), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _release() -> str:
    return f"t{secrets.token_hex(3)}"


def _sets(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


@pytest.mark.parametrize("values", [{}, ALL_TOGGLES], ids=["defaults", "all-toggles"])
def test_template_is_accepted_by_the_api_server(
    cluster: Any, crds: None, optional_crds: None, namespace: str, values: dict[str, str]
) -> None:
    rendered = _helm(
        cluster,
        "template",
        _release(),
        str(CHART),
        "-n",
        namespace,
        "--include-crds",
        *_sets(values),
    ).stdout
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    out = cluster.kubectl("apply", "--dry-run=server", "-o", "name", "-f", "-", input=rendered)
    applied = out.stdout.split()
    assert len(applied) == len(objs), out.stdout + out.stderr
    kinds = {o["kind"] for o in objs}
    if values:
        assert {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer", "ConfigMap"} <= kinds


def test_kustomize_manifests_are_accepted(cluster: Any, crds: None, optional_crds: None) -> None:
    # `kubectl apply -k manifests/` (server dry run: applying for real would replace the
    # session's own webhook configurations, also named agent-identity). The namespace
    # must exist for a dry run of the objects inside it.
    created = cluster.kubectl("get", "namespace", helmlib.NAMESPACE, check=False).returncode != 0
    if created:
        cluster.kubectl("create", "namespace", helmlib.NAMESPACE)
    try:
        for path in ("manifests", "manifests/overlays/cert-manager"):
            out = cluster.kubectl("apply", "--dry-run=server", "-o", "name", "-k", str(ROOT / path))
            names = out.stdout.split()
            assert "namespace/agent-identity-system" in names
            assert (
                "validatingwebhookconfiguration.admissionregistration.k8s.io/agent-identity"
                in names
            )
            assert len(names) >= 25, out.stdout
    finally:
        if created:
            cluster.kubectl("delete", "namespace", helmlib.NAMESPACE, "--wait=false")


# Installed releases here never run their pods: with the local node up, a second operator
# would reconcile the session's Agents beside the session's own. An image no node has,
# with pullPolicy Never, still lets the controller-manager create the Pods (so Pod
# Security judges them) but none starts.
NEVER_RUNS = {
    "image.repository": "localhost/agent-identity-never-pulled",
    "image.pullPolicy": "Never",
}


def _install(cluster: Any, release: str, namespace: str) -> None:
    # --skip-crds: the session's CRDs were applied by `crds install` (another field
    # manager), and helm 4 server-side-applies crds/ even when present, which conflicts;
    # the chart's CRDs are byte-identical to those (tests/unit/test_chart_render.py).
    _helm(
        cluster, "install", release, str(CHART), "-n", namespace, "--skip-crds", *_sets(NEVER_RUNS)
    )


def _failed_creates(cluster: Any, namespace: str) -> list[str]:
    """Messages of the FailedCreate events in ``namespace`` (a refusal by Pod Security)."""
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate", "-o", "json"
    ).stdout
    return [e["message"] for e in json.loads(events)["items"]]


@pytest.fixture
def fixed_name_roles_aside(cluster: Any) -> Iterator[None]:
    """The chart's fixed-name ClusterRoles (agentidentity-approver, ...) removed for one test
    and restored afterwards.

    They are the product's vocabulary, so they are named the same in every release, and
    one cluster holds them once; the session applied them from manifests/rbac/, and helm
    will not adopt objects another tool created.
    """
    rendered = _helm(cluster, "template", "probe", str(CHART)).stdout
    names = [
        d["metadata"]["name"]
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ClusterRole" and not d["metadata"]["name"].startswith("probe")
    ]
    assert names, "the chart ships no fixed-name ClusterRole"
    saved: list[dict[str, Any]] = []
    for name in names:
        got = cluster.kubectl("get", "clusterrole", name, "-o", "json", check=False)
        if got.returncode == 0:
            obj = json.loads(got.stdout)
            for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
                obj["metadata"].pop(key, None)
            saved.append(obj)
            cluster.kubectl("delete", "clusterrole", name)
    try:
        yield
    finally:
        for obj in saved:
            cluster.kubectl("delete", "clusterrole", obj["metadata"]["name"], "--ignore-not-found")
            cluster.kubectl("create", "-f", "-", input=json.dumps(obj))


def _labelled(cluster: Any, release: str) -> list[str]:
    """Every object of every listable kind carrying the release's instance label."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if not k.startswith("events")]
    out = cluster.kubectl(
        "get", ",".join(kinds), "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    )
    return sorted(out.stdout.split())


def test_install_then_uninstall_leaves_nothing(
    cluster: Any, crds: None, namespace: str, fixed_name_roles_aside: None
) -> None:
    release = _release()
    crds_before = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    _install(cluster, release, namespace)
    try:
        installed = _labelled(cluster, release)
        kinds = {name.split("/")[0] for name in installed}
        assert {
            "deployment.apps",
            "service",
            "serviceaccount",
            "clusterrole.rbac.authorization.k8s.io",
            "validatingwebhookconfiguration.admissionregistration.k8s.io",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io",
            "poddisruptionbudget.policy",
            "lease.coordination.k8s.io",
            "secret",
        } <= kinds, installed
        status = json.loads(_helm(cluster, "status", release, "-n", namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    # ReplicaSets and Pods go by garbage collection, a moment after their Deployment.
    deadline = time.monotonic() + 90
    left = _labelled(cluster, release)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = _labelled(cluster, release)
    assert left == [], f"left behind by helm uninstall: {left}"
    # CRDs stay, as Helm does for crds/.
    assert sorted(cluster.kubectl("get", "crd", "-o", "name").stdout.split()) == sorted(crds_before)
    assert "customresourcedefinition.apiextensions.k8s.io/agents.agentidentity.io" in crds_before


def test_pods_pass_pod_security_restricted(
    cluster: Any, crds: None, namespace: str, fixed_name_roles_aside: None
) -> None:
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    )
    # The namespace really enforces: a privileged pod is refused.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr

    release = _release()
    _install(cluster, release, namespace)
    try:
        # No node runs them, but the controller-manager creates the Pods; Pod Security
        # admits or refuses them at creation (a refusal is a FailedCreate event).
        want = {"operator": 1, "admission": 2}
        deadline = time.monotonic() + 120
        while True:
            pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
            counts = {
                c: sum(
                    1
                    for p in pods["items"]
                    if p["metadata"]["labels"].get("app.kubernetes.io/component") == c
                )
                for c in want
            }
            if counts == want:
                break
            failures = _failed_creates(cluster, namespace)
            assert not failures, f"the controller-manager could not create pods: {failures}"
            assert time.monotonic() < deadline, f"pods {counts}, want {want}"
            time.sleep(1)
        for pod in pods["items"]:
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        rs = json.loads(cluster.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)
        assert len(rs["items"]) == 2
        assert _failed_creates(cluster, namespace) == []
    finally:
        _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
