"""End to end on the local cluster's own node: agent pods really run with their identity.

An agent Deployment using the project image (``localhost/agent-identity:<version>``,
``imagePullPolicy: Never``, built by ``make image`` and imported by ``devcluster up``) is
admitted, mutated and Running with its token mounted; from inside the pod (``kubectl
exec``) ``agent-identity whoami`` / ``check`` ask the decision API; a person approves with
``kubectl agent approve``; suspending deletes the pods and the webhook refuses new ones;
retiring makes a token taken from the pod fail in the decision API within a second.

Needs: the session ``cluster`` with a Ready node, and the ``operator`` and ``admission``
fixtures (tests/fixtures/) with ``admission --dev`` serving the decision API on the
cluster bridge and injecting that URL into agent pods. Figures are printed (run with -s):
apply-to-Running, suspend-to-pods-gone, retire-to-deny.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_identity import __version__
from agent_identity.client import AgentClient, DecisionAPIError
from agent_identity.identity.token import TOKEN_FILE_PATH
from tests.conftest import figure, wait_for

PLUGIN = str(Path(sys.executable).with_name("kubectl-agent"))
API = "agentidentity.io/v1alpha1"
LABEL = "agentidentity.io/agent"
IMAGE = f"localhost/agent-identity:{__version__}"
APPROVER = "sre-lead@example.com"
# The agent's program: says it started (for `kubectl logs`), exits at once on SIGTERM.
AGENT_PROGRAM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('agent started', flush=True)\n"
    "time.sleep(10**9)\n"
)
GONE_WITHIN = 15.0  # suspend -> every pod object gone (the kubelet confirmed the kill)
RETIRE_DENY_WITHIN = 1.0


class World:
    def __init__(self, cluster: Any, namespace: str, operator: Any, admission: Any) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.operator = operator
        self.admission = admission

    def kubectl(
        self, *args: str, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(*args, check=check, **kw)
        return result

    def apply(self, *docs: dict[str, Any]) -> None:
        for doc in docs:
            doc["metadata"]["namespace"] = self.ns
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
        self.kubectl("apply", "-f", "-", input=body)

    def governance(self) -> None:
        """A scope (allowed, denied, sensitive tools), an approval policy, an approver."""
        self.apply(
            {
                "apiVersion": API,
                "kind": "AuthorityScope",
                "metadata": {"name": "release"},
                "spec": {
                    "tools": {"allow": ["github.pulls.*"], "deny": ["github.admin.**"]},
                    "sensitive": ["deploy.production"],
                },
            },
            {
                "apiVersion": API,
                "kind": "ApprovalPolicy",
                "metadata": {"name": "prod-deploys"},
                "spec": {
                    "match": {"actions": ["deploy.production"]},
                    "approvers": {"users": [APPROVER]},
                    "timeoutSeconds": 600,
                    "grantSeconds": 300,
                },
            },
        )
        self.kubectl(
            "create",
            "rolebinding",
            "approvers",
            "-n",
            self.ns,
            "--clusterrole=agentidentity-approver",
            f"--user={APPROVER}",
        )

    def agent(self, name: str) -> None:
        self.apply(
            {
                "apiVersion": API,
                "kind": "Agent",
                "metadata": {"name": name},
                "spec": {"owner": "team-payments", "scopeRefs": [{"name": "release"}]},
            }
        )
        wait_for(f"agent {name} Active", lambda: self.phase(name) == "Active", 60)

    def phase(self, name: str) -> str | None:
        out = self.kubectl("get", "agents.agentidentity.io", name, "-n", self.ns, "-o", "json")
        phase: str | None = json.loads(out.stdout).get("status", {}).get("phase")
        return phase

    def deployment(self, name: str, labels: dict[str, str], replicas: int = 1) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, **labels}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "agent",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["python3", "-c", AGENT_PROGRAM],
                            }
                        ],
                    },
                },
            },
        }

    def pods(self, selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", self.ns, "-l", selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def running(self, selector: str, n: int = 1) -> list[dict[str, Any]] | None:
        pods = self.pods(selector)
        ready = [
            p
            for p in pods
            if p.get("status", {}).get("phase") == "Running"
            and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
        ]
        return ready if len(ready) == n else None

    def exec(self, pod: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "exec", "-n", self.ns, pod, "-c", "agent", "--", *cmd, check=False, timeout=timeout
        )

    def plugin(self, *args: str, kubeconfig: Path | None = None) -> str:
        proc = subprocess.run(
            [PLUGIN, *args, "--kubeconfig", str(kubeconfig or self.cluster.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl agent {args}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def failed_creates(self, needle: str) -> list[str]:
        out = self.kubectl("get", "events", "-n", self.ns, "-o", "json")
        return [
            e.get("message", "")
            for e in json.loads(out.stdout)["items"]
            if e.get("reason") == "FailedCreate" and needle in e.get("message", "")
        ]


@pytest.fixture
def world(cluster: Any, namespace: str, operator: Any, admission: Any, project_image: str) -> World:
    assert project_image == IMAGE
    w = World(cluster, namespace, operator, admission)
    nodes = json.loads(w.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "e2e tests need the local cluster's node (agent-identity devcluster up)"
    return w


def start_agent(w: World, name: str = "bot") -> dict[str, Any]:
    """Apply the Deployment of an Active agent; the Running pod (prints apply-to-Running)."""
    start = time.monotonic()
    w.apply(w.deployment(name, {LABEL: name}))
    (pod,) = wait_for(f"a Running pod of agent {name}", lambda: w.running(f"{LABEL}={name}"), 120)
    figure(f"\nagent pod: kubectl apply -> Running in {time.monotonic() - start:.2f}s")
    return dict(pod)


def test_agent_pod_asks_and_a_person_approves(world: World) -> None:
    w = world
    w.governance()
    w.agent("bot")
    pod = start_agent(w)
    name = pod["metadata"]["name"]

    # Admitted and mutated: its agent's ServiceAccount, the token, the decision API's URL.
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "agent-bot"
    volumes = [v["name"] for v in spec["volumes"]]
    assert "agentidentity-token" in volumes
    assert not [v for v in volumes if v.startswith("kube-api-access-")], volumes
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env") or []}
    url = env.get("AGENT_IDENTITY_DECISIONS_URL")
    assert url and not re.match(r"https?://(127\.|localhost)", url), (
        f"agent pods must get a decision API URL they can reach, not {url!r}"
    )
    token = w.exec(name, "cat", TOKEN_FILE_PATH)
    assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr

    # `kubectl logs` and `kubectl exec` work on agent pods.
    logs = w.kubectl("logs", "-n", w.ns, name, "-c", "agent")
    assert "agent started" in logs.stdout

    me = w.exec(name, "agent-identity", "whoami")
    assert me.returncode == 0, me.stderr
    assert me.stdout.splitlines()[0] == f"{w.ns}/bot"
    assert "identity: agent://" in me.stdout and f"/{w.ns}/bot" in me.stdout

    allowed = w.exec(
        name, "agent-identity", "check", "github.pulls.create", "--resource", "repo/org/app"
    )
    assert allowed.returncode == 0 and allowed.stdout.startswith("allow"), allowed
    denied = w.exec(name, "agent-identity", "check", "github.admin.delete")
    assert denied.returncode == 1 and denied.stdout.startswith("deny"), denied
    escalated = w.exec(
        name, "agent-identity", "check", "deploy.production", "--resource", "service/api"
    )
    assert escalated.returncode == 3 and escalated.stdout.startswith("escalate"), escalated
    found = re.search(r"approval request: (\S+)/(\S+)", escalated.stdout)
    assert found, escalated.stdout
    request_ns, request = found.groups()
    assert request_ns == w.ns

    # The agent waits; a named approver approves; the waiting check then says allow.
    waiting = subprocess.Popen(
        [
            w.cluster.kubectl_bin,
            "--kubeconfig",
            str(w.cluster.kubeconfig),
            "exec",
            "-n",
            w.ns,
            name,
            "-c",
            "agent",
            "--",
            "agent-identity",
            "check",
            "deploy.production",
            "--resource",
            "service/api",
            "--wait",
            "120",
            "--poll-interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        assert waiting.poll() is None, "check --wait returned before anyone approved"
        approver = w.cluster.user_kubeconfig(APPROVER, ["sre"])
        w.plugin("approve", request, "-n", w.ns, "--reason", "release 1.2", kubeconfig=approver)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, f"{out}\n{err}"
    assert out.startswith("escalate") and "\nallow deploy.production on service/api" in out


def test_suspend_deletes_running_pods_and_resume_brings_them_back(world: World) -> None:
    w = world
    w.governance()
    w.agent("bot")
    start_agent(w)
    w.kubectl("scale", "deployment", "bot", "-n", w.ns, "--replicas=2")
    wait_for("2 Running pods", lambda: w.running(f"{LABEL}=bot", 2), 120)

    start = time.monotonic()
    w.plugin("suspend", "bot", "-n", w.ns)
    wait_for("the pods of bot gone", lambda: not w.pods(f"{LABEL}=bot"), GONE_WITHIN)
    figure(f"\nkill switch on a node: suspend -> pods gone in {time.monotonic() - start:.2f}s")
    wait_for(
        "the webhook refusing new pods", lambda: w.failed_creates('agent "bot" is Suspended'), 30
    )
    time.sleep(2)
    assert not w.pods(f"{LABEL}=bot")

    start = time.monotonic()
    w.plugin("resume", "bot", "-n", w.ns)
    wait_for("2 Running pods again", lambda: w.running(f"{LABEL}=bot", 2), 120)
    figure(f"kill switch on a node: resume -> pods Running in {time.monotonic() - start:.2f}s")


def test_retire_makes_a_token_from_the_pod_fail_within_a_second(world: World) -> None:
    w = world
    w.governance()
    w.agent("bot")
    pod = start_agent(w)
    stolen = w.exec(pod["metadata"]["name"], "cat", TOKEN_FILE_PATH).stdout.strip()
    assert stolen
    url = w.admission.decisions_url
    assert url, "the admission process did not start the decision API"
    # Asked from the host, as anyone holding the token could.
    client = AgentClient(url, token=stolen, agent=f"{w.ns}/bot", timeout=5)
    assert client.check("github.pulls.read").allowed

    issued = time.monotonic()
    w.plugin("retire", "bot", "-n", w.ns)
    # Timed from when the plugin returns (its write is done by then); the plugin's own run,
    # mostly Python starting, is reported beside it.
    start = time.monotonic()

    def refused() -> str | None:
        try:
            d = client.check("github.pulls.read")
        except DecisionAPIError as exc:
            return f"HTTP {exc.status}"
        return None if d.allowed else f"deny ({d.rule})"

    how = wait_for("the retired agent's token to be refused", refused, 10, every=0.02)
    elapsed = time.monotonic() - start
    figure(
        f"retire -> decision API refuses the pod's token in {elapsed:.3f}s ({how}); "
        f"`kubectl agent retire` itself took {start - issued:.2f}s"
    )
    assert elapsed < RETIRE_DENY_WITHIN
    wait_for("the retired agent's pod gone", lambda: not w.pods(f"{LABEL}=bot"), GONE_WITHIN)


def test_unregistered_pod_in_enforcing_namespace_never_runs(world: World) -> None:
    w = world
    w.kubectl("label", "namespace", w.ns, "agentidentity.io/enforce=deny")
    run = w.kubectl(
        "run",
        "stray",
        "-n",
        w.ns,
        f"--image={IMAGE}",
        "--image-pull-policy=Never",
        "--command",
        "--",
        "sleep",
        "60",
        check=False,
    )
    assert run.returncode != 0 and "only runs registered agents" in run.stderr, run.stderr
    w.apply(w.deployment("stray", {}))
    wait_for(
        "FailedCreate for the unregistered pod",
        lambda: w.failed_creates("only runs registered agents"),
        30,
    )
    time.sleep(3)
    assert not w.pods("app=stray")
