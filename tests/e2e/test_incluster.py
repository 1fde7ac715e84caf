"""The operator in-cluster, installed from its own chart with the image built here.

`helm upgrade --install` of helm/agent-identity-operator into `agent-identity-system`
(Pod Security `restricted` enforced) with `localhost/agent-identity:<version>`: the
operator and two admission replicas run as pods; the API server calls the webhooks
through their Service (self-managed certificate, caBundle kept by the admission
process); an agent pod gets the decision API's Service URL and CA injected and asks it
over verified HTTPS. Then `helm uninstall` leaves no webhook configuration behind.

Runs before any test that starts the session's own operator and `admission --dev`
(marker `runs_first`): two operators on the same Agents would fight over their status.
Figures printed (-s): install-to-Ready, apply-to-Running of the agent pod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_identity import __version__
from agent_identity.devcluster import helm as helmlib
from tests.conftest import TestCluster, figure, wait_for
from tests.e2e.demo_support import NS as EXAMPLES_NS
from tests.e2e.demo_support import apply_examples, assert_demo_story, delete_examples, run_demo

ROOT = Path(__file__).resolve().parents[2]
API = "agentidentity.io/v1alpha1"
LABEL = "agentidentity.io/agent"
RELEASE = helmlib.RELEASE
NS = helmlib.NAMESPACE
DECISIONS_URL = f"https://{RELEASE}-decisions.{NS}.svc"

pytestmark = pytest.mark.runs_first


@pytest.fixture(scope="module")
def release(cluster: TestCluster, crds: None, project_image: str) -> Iterator[helmlib.Installed]:
    if cluster.devcluster is None or not cluster.devcluster.has_node:
        pytest.skip("installs the locally built image into the local cluster's node")
    assert not cluster.stop_hooks, (
        "the session's operator or admission process already runs: this module must run "
        "first (marker runs_first), else two operators reconcile the same Agents"
    )
    kubectl = Path(cluster.kubectl_bin)
    installed = helmlib.install_incluster(
        ROOT,
        cluster.kubeconfig,
        kubectl,
        values=helmlib.incluster_values(__version__),
        say=print,
    )
    figure(f"\nin-cluster install: helm upgrade --install -> Ready in {installed.seconds:.1f}s")
    try:
        yield installed
    finally:
        helmlib.uninstall_incluster(cluster.kubeconfig)
        cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--timeout=120s")


def _json(cluster: TestCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def test_the_chart_runs_the_operator_and_webhooks_as_restricted_pods(
    cluster: TestCluster, release: helmlib.Installed
) -> None:
    ns = _json(cluster, "get", "namespace", NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = _json(cluster, "get", "pods", "-n", NS)["items"]
    by_component: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "")
        by_component.setdefault(component, []).append(pod)
    assert sorted((c, len(p)) for c, p in by_component.items()) == [
        ("admission", 2),
        ("operator", 1),
    ]
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert pod["spec"]["containers"][0]["image"] == f"localhost/agent-identity:{__version__}"
        sc = pod["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    # The admission process published its own CA into both webhook configurations.
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        config = _json(cluster, "get", kind, RELEASE)
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["service"]["namespace"] == NS
            assert hook["clientConfig"].get("caBundle"), f"{kind} {hook['name']}: no caBundle"
    assert "kubectl" in release.notes


def test_an_agent_pod_asks_the_in_cluster_decision_api(
    cluster: TestCluster, release: helmlib.Installed, namespace: str
) -> None:
    del release
    cluster.kubectl("label", "namespace", namespace, "agentidentity.io/enforce=deny")
    docs = [
        {
            "apiVersion": API,
            "kind": "AuthorityScope",
            "metadata": {"name": "release", "namespace": namespace},
            "spec": {"tools": {"allow": ["github.pulls.*"], "deny": ["github.admin.**"]}},
        },
        {
            "apiVersion": API,
            "kind": "Agent",
            "metadata": {"name": "bot", "namespace": namespace},
            "spec": {"owner": "team-payments", "scopeRefs": [{"name": "release"}]},
        },
    ]
    # Through the in-cluster validating webhook (our resources) and the operator pod.
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": docs})
    )

    def phase() -> str | None:
        agent = _json(cluster, "get", "agents.agentidentity.io", "bot", "-n", namespace)
        value: str | None = agent.get("status", {}).get("phase")
        return value

    wait_for("agent bot Active (reconciled by the operator pod)", lambda: phase() == "Active", 90)
    agent = _json(cluster, "get", "agents.agentidentity.io", "bot", "-n", namespace)
    assert agent["status"]["identity"]["uri"] == f"agent://local/{namespace}/bot"

    # An unregistered pod in the enforcing namespace is refused by the in-cluster webhook.
    refused = cluster.kubectl(
        "run", "stray", "-n", namespace, f"--image=localhost/agent-identity:{__version__}",
        "--image-pull-policy=Never", "--restart=Never", "--", "version", check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "agentidentity.io/enforce" in refused.stderr, refused

    start = time.monotonic()
    cluster.kubectl(
        "run", "bot", "-n", namespace, f"--image=localhost/agent-identity:{__version__}",
        "--image-pull-policy=Never", "--restart=Never", f"--labels={LABEL}=bot",
        "--command", "--", "python3", "-c", "import time; time.sleep(10**9)",
    )  # fmt: skip

    def running() -> bool:
        pod = _json(cluster, "get", "pod", "bot", "-n", namespace)
        statuses = pod["status"].get("containerStatuses") or [{}]
        return pod["status"].get("phase") == "Running" and all(c.get("ready") for c in statuses)

    wait_for("the agent pod Running", running, 120)
    figure(f"\nin-cluster agent pod: kubectl run -> Running in {time.monotonic() - start:.2f}s")
    pod = _json(cluster, "get", "pod", "bot", "-n", namespace)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AGENT_IDENTITY_DECISIONS_URL"] == DECISIONS_URL
    assert env["AGENT_IDENTITY_DECISIONS_CA"].startswith("-----BEGIN CERTIFICATE-----")
    assert pod["spec"]["serviceAccountName"] == "agent-bot"

    def in_pod(*args: str) -> Any:
        return cluster.kubectl(
            "exec", "-n", namespace, "bot", "--", "agent-identity", *args, check=False
        )

    me = in_pod("whoami")
    assert me.returncode == 0, me.stderr
    assert me.stdout.splitlines()[0] == f"{namespace}/bot"
    assert f"agent://local/{namespace}/bot" in me.stdout
    allowed = in_pod("check", "github.pulls.create")
    assert allowed.returncode == 0 and allowed.stdout.startswith("allow"), allowed
    denied = in_pod("check", "github.admin.delete-repo")
    assert denied.returncode == 1 and denied.stdout.startswith("deny"), denied


def test_make_run_demo_in_cluster(
    cluster: TestCluster, release: helmlib.Installed, tmp_path: Path
) -> None:
    """`RUN_MODE=incluster make run`'s demo: the same story as with host processes, the
    webhooks, the operator and the decision API all pods of the chart."""
    del release
    start = time.monotonic()
    try:
        apply_examples(cluster)
        proc = run_demo(cluster, tmp_path)
        # The pod asked the chart's decision API through its Service (HTTPS, CA injected).
        pods = _json(cluster, "get", "pods", "-n", EXAMPLES_NS, "-l", f"{LABEL}=release-bot")
        env = {e["name"]: e.get("value") for e in pods["items"][0]["spec"]["containers"][0]["env"]}
    finally:
        delete_examples(cluster)
    assert_demo_story(proc)
    assert env["AGENT_IDENTITY_DECISIONS_URL"] == DECISIONS_URL
    took = time.monotonic() - start
    figure(f"make run demo (in-cluster chart): examples applied to approval in {took:.1f}s")


def test_uninstall_removes_the_webhooks(cluster: TestCluster, release: helmlib.Installed) -> None:
    # Last in this module: the release fixture uninstalls again afterwards (a no-op then).
    helmlib.uninstall_incluster(cluster.kubeconfig, release=release.release, namespace=NS)
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        gone = cluster.kubectl("get", kind, RELEASE, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone
    left = _json(cluster, "get", "deployments,services,serviceaccounts,leases", "-n", NS)
    ours = [
        o["metadata"]["name"]
        for o in left["items"]
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
    ]
    assert ours == []
