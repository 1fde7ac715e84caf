"""The generated CRDs on a real kube-apiserver: install, examples, kubectl UX, and the API
server itself refusing invalid objects with messages that name the field."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from agent_identity.api import Agent, ApprovalPolicy, ApprovalRequest, AuthorityScope, crdgen
from agent_identity.cli.crds import crds as crds_cli
from tests.fixtures.crds import valid_bodies

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API = "agentidentity.io/v1alpha1"
MODELS = {m.KIND: m for m in (Agent, AuthorityScope, ApprovalPolicy, ApprovalRequest)}


def _retry(fn: Any, timeout: float = 30.0) -> Any:
    """Call fn until it stops raising AssertionError (discovery/OpenAPI publish lag)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _examples_in(namespace: str) -> list[dict[str, Any]]:
    """The example manifests, moved into the test's namespace."""
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["kind"] == "Namespace":
                continue  # the test's namespace stands in for it
            doc["metadata"]["namespace"] = namespace
            docs.append(doc)
    return docs


def _apply(cluster: Any, namespace: str, docs: list[dict[str, Any]], *extra: str) -> Any:
    return cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        *extra,
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        check=False,
    )


def _table(out: str) -> dict[str, dict[str, str]]:
    """kubectl's table output as rows by name, cut at the header's column starts."""
    header, *lines = out.rstrip("\n").splitlines()
    names = header.split()
    starts = [header.index(n) for n in names]
    bounds = [*starts[1:], None]
    rows: dict[str, dict[str, str]] = {}
    for line in lines:
        cells = {n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)}
        rows[cells["NAME"]] = cells
    return rows


def _get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_crds_are_established_and_install_is_idempotent(cluster: Any, crds: None) -> None:
    from kubernetes import client

    api = client.ApiextensionsV1Api(cluster.api_client())
    for expected in crdgen.all_crds():
        current = api.read_custom_resource_definition(expected["metadata"]["name"])
        conditions = {c.type: c.status for c in current.status.conditions}
        assert conditions.get("Established") == "True"
        assert conditions.get("NamesAccepted") == "True"
        assert current.spec.names.categories == ["agentidentity"]
    # Installing again replaces in place (the CLI path, with an explicit kubeconfig).
    result = CliRunner().invoke(crds_cli, ["install", "--kubeconfig", str(cluster.kubeconfig)])
    assert result.exit_code == 0, result.output
    assert result.output.count("established") == 4


def test_install_times_out_with_a_clear_error(cluster: Any, crds: None) -> None:
    # A shortName the agents CRD already holds: names are never accepted, never Established.
    broken = copy.deepcopy(crdgen.crd(Agent))
    broken["metadata"]["name"] = "widgets.agentidentity.io"
    broken["spec"]["names"] = {
        "kind": "Widget",
        "plural": "widgets",
        "singular": "widget",
        "listKind": "WidgetList",
        "shortNames": ["agt"],
    }
    try:
        with pytest.raises(TimeoutError) as caught:
            crdgen.install_crds(cluster.api_client(), timeout=3, crds=[broken])
        message = str(caught.value)
        assert "not Established after 3s: widgets.agentidentity.io" in message
        assert "NamesAccepted=False" in message and "agt" in message
    finally:
        cluster.kubectl("delete", "crd", "widgets.agentidentity.io", check=False)


def test_examples_apply_and_defaults_are_filled(cluster: Any, crds: None, namespace: str) -> None:
    docs = _examples_in(namespace)
    assert {d["kind"] for d in docs} == {"AuthorityScope", "ApprovalPolicy", "Agent"}
    proc = _apply(cluster, namespace, docs)
    assert proc.returncode == 0, proc.stderr
    # Nested defaults apply even when the parent object is omitted.
    assistant = _get(cluster, namespace, "agent", "support-assistant")["spec"]
    assert assistant["lifecycle"] == {"state": "Active"}
    assert assistant["token"] == {"audience": "agentidentity.io", "ttlSeconds": 900}
    assert assistant["platform"] == {
        "type": "external",
        "provider": "openai",
        "externalId": "asst_123",
    }
    bot = _get(cluster, namespace, "agent", "release-bot")["spec"]
    assert bot["platform"] == {"type": "kubernetes"} and bot["parentRef"] == {
        "name": "orchestrator"
    }
    assert bot["token"] == {"audience": "agentidentity.io", "ttlSeconds": 600}
    refunds = _get(cluster, namespace, "approvalpolicy", "large-refunds")["spec"]
    assert refunds["minApprovals"] == 2 and refunds["grantSeconds"] == 300
    # Applying again changes nothing.
    again = _apply(cluster, namespace, docs)
    assert again.returncode == 0 and "configured" not in again.stdout, again.stdout


def test_kubectl_apply_examples_directory_as_is(cluster: Any, crds: None) -> None:
    """`kubectl apply -f examples/` on a fresh cluster: the Namespace file sorts first."""
    exists = cluster.kubectl("get", "namespace", "payments", check=False).returncode == 0
    assert not exists, "namespace payments already exists; this test owns it"
    try:
        proc = cluster.kubectl("apply", "-f", str(EXAMPLES), check=False)
        assert proc.returncode == 0, proc.stderr
        assert "namespace/payments created" in proc.stdout
        assert "agent.agentidentity.io/support-assistant created" in proc.stdout
        names = cluster.kubectl(
            "get", "agentidentity", "-n", "payments", "-o", "name"
        ).stdout.split()
        assert len(names) == 3 + 3 + 2  # agents, scopes, policies
    finally:
        cluster.kubectl("delete", "namespace", "payments", "--wait=false", check=False)


def test_kubectl_get_shows_printer_columns_shortnames_and_category(
    cluster: Any, crds: None, operator: Any, namespace: str
) -> None:
    assert _apply(cluster, namespace, _examples_in(namespace)).returncode == 0

    def agents_table() -> None:
        out = cluster.kubectl("get", "agents", "-n", namespace).stdout
        rows = _table(out)
        assert list(rows["orchestrator"]) == ["NAME", "READY", "PHASE", "OWNER", "SCOPES", "AGE"]
        # Ready and Phase come from the status the operator writes.
        assert rows["orchestrator"]["READY"] == "True"
        assert rows["orchestrator"]["PHASE"] == "Active"
        assert rows["orchestrator"]["OWNER"] == "team-payments"
        # Scopes come from status.scopes: a table column shows one item of a [*] JSONPath only.
        assert rows["orchestrator"]["SCOPES"] == "analyst,deployer"
        assert rows["support-assistant"]["SCOPES"] == "support"
        assert rows["release-bot"]["OWNER"] == "alice@example.com"

    _retry(agents_table)
    wide = cluster.kubectl("get", "agt", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-3:] == ["PLATFORM", "PARENT", "EXPIRES"]
    assert "orchestrator" in next(line for line in wide.splitlines() if "release-bot" in line)
    policies = cluster.kubectl("get", "apol", "-n", namespace).stdout
    assert policies.splitlines()[0].split() == ["NAME", "ACTIONS", "MIN", "APPROVALS", "AGE"]
    assert "deploy.production" in policies and "payments.refund" in policies
    scopes = cluster.kubectl("get", "ascope", "-n", namespace).stdout
    assert scopes.splitlines()[0].split() == ["NAME", "AGENTS", "READY", "AGE"]
    everything = cluster.kubectl("get", "agentidentity", "-n", namespace).stdout
    for ref in (
        "agent.agentidentity.io/release-bot",
        "authorityscope.agentidentity.io/deployer",
        "approvalpolicy.agentidentity.io/prod-deploys",
    ):
        assert ref in everything, everything


def test_kubectl_explain_shows_the_model_docs(cluster: Any, crds: None) -> None:
    def explain() -> None:
        proc = cluster.kubectl("explain", "agent.spec.lifecycle", check=False)
        assert proc.returncode == 0, proc.stderr
        out = " ".join(proc.stdout.split())
        assert "Requested lifecycle state and dates." in out
        for field in ("state", "expiresAt", "sunsetAt"):
            assert field in out
        assert "Active (default), Suspended, Deprecated (needs sunsetAt) or Retired" in out
        assert "With Deprecated: when the deprecated agent is retired" in out

    _retry(explain, timeout=60)
    owner = " ".join(cluster.kubectl("explain", "agent.spec.owner").stdout.split())
    assert "the accountable person or team" in owner


def _agent(spec: dict[str, Any], name: str = "bad-agent") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Agent", "metadata": {"name": name}, "spec": spec}


def _scope(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AuthorityScope",
        "metadata": {"name": "bad-scope"},
        "spec": spec,
    }


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": API, "kind": "ApprovalPolicy", "metadata": {"name": "bad-policy"}}
    return {**body, "spec": spec} if spec else body


_ACT = {"actions": ["deploy.production"]}

INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("owner-missing", _agent({}), ["spec.owner", "Required value"]),
    ("owner-empty", _agent({"owner": ""}), ["spec.owner", "at least 1 chars"]),
    (
        "owner-invalid",
        _agent({"owner": "team payments!"}),
        ["spec.owner must name the accountable"],
    ),
    (
        "external-without-provider",
        _agent({"owner": "t", "platform": {"type": "external"}}),
        ["spec.platform", "provider is required when spec.platform.type is external"],
    ),
    (
        "platform-unknown",
        _agent({"owner": "t", "platform": {"type": "lambda"}}),
        ["spec.platform.type"],
    ),
    (
        "ttl-599",
        _agent({"owner": "t", "token": {"ttlSeconds": 599}}),
        ["spec.token.ttlSeconds", "600"],
    ),
    (
        "ttl-86401",
        _agent({"owner": "t", "token": {"ttlSeconds": 86401}}),
        ["spec.token.ttlSeconds", "86400"],
    ),
    (
        "sunset-with-active",
        _agent(
            {"owner": "t", "lifecycle": {"state": "Active", "sunsetAt": "2027-01-01T00:00:00Z"}}
        ),
        ["spec.lifecycle", "sunsetAt is only allowed with state Deprecated or Retired"],
    ),
    (
        "deprecated-without-sunset",
        _agent({"owner": "t", "lifecycle": {"state": "Deprecated"}}),
        ["spec.lifecycle", "sunsetAt is required with state Deprecated"],
    ),
    (
        "state-unknown",
        _agent({"owner": "t", "lifecycle": {"state": "Paused"}}),
        ["spec.lifecycle.state"],
    ),
    (
        "name-64",
        _agent({"owner": "t"}, name="a" * 64),
        ["metadata.name of an Agent must be at most 63"],
    ),
    (
        "scope-ref-duplicate",
        _agent({"owner": "t", "scopeRefs": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}),
        ["spec.scopeRefs[2]", "Duplicate value"],
    ),
    (
        "scope-ref-bad-name",
        _agent({"owner": "t", "scopeRefs": [{"name": "Bad_Name"}]}),
        ["spec.scopeRefs[0].name"],
    ),
    ("tool-bad-pattern", _scope({"tools": {"allow": ["GitHub.pulls.*"]}}), ["spec.tools.allow[0]"]),
    (
        "tool-double-starstar",
        _scope({"tools": {"deny": ["github.**.**"]}}),
        ["spec.tools.deny[0]", "'**.**'"],
    ),
    (
        "sensitive-empty-segment",
        _scope({"sensitive": ["deploy..production"]}),
        ["spec.sensitive[0]"],
    ),
    (
        "verbs-star-and-more",
        _scope({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*", "get"]}]}),
        ["spec.rules[0]", "'*' already means every verb"],
    ),
    (
        "verbs-empty",
        _scope({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]}),
        ["spec.rules[0].verbs"],
    ),
    (
        "resources-missing",
        _scope({"rules": [{"apiGroups": [""], "verbs": ["get"]}]}),
        ["spec.rules[0].resources", "Required value"],
    ),
    (
        "api-groups-missing",
        _scope({"rules": [{"resources": ["pods"], "verbs": ["get"]}]}),
        ["spec.rules[0].apiGroups", "Required value"],
    ),
    (
        # minItems does not stop the CEL rules, so the message with the fix shows too
        "api-groups-empty",
        _scope({"rules": [{"apiGroups": [], "resources": ["pods"], "verbs": ["get"]}]}),
        ["spec.rules[0].apiGroups", 'use apiGroups: [""] for the core group'],
    ),
    (
        "tools-allow-duplicate",
        _scope({"tools": {"allow": ["github.pulls.*", "ci.runs.read", "github.pulls.*"]}}),
        ["spec.tools.allow[2]", "Duplicate value", "github.pulls.*"],
    ),
    (
        "sensitive-duplicate",
        _scope({"sensitive": ["deploy.production", "deploy.production"]}),
        ["spec.sensitive[1]", "Duplicate value"],
    ),
    (
        "constraint-tools-duplicate",
        _scope({"constraints": [{"tools": ["deploy.*", "deploy.*"], "when": "true"}]}),
        ["spec.constraints[0].tools[1]", "Duplicate value"],
    ),
    (
        "cidr-and-selector",
        _scope({"network": {"egress": [{"to": [{"cidr": "10.0.0.0/8", "podSelector": {}}]}]}}),
        ["spec.network.egress[0].to[0]", "set either cidr or namespaceSelector/podSelector"],
    ),
    (
        "cidr-not-a-cidr",
        _scope({"network": {"egress": [{"to": [{"cidr": "10.0.0.1"}]}]}}),
        ["spec.network.egress[0].to[0].cidr", "must be a CIDR"],
    ),
    (
        "end-port-below-port",
        _scope({"network": {"egress": [{"ports": [{"port": 8080, "endPort": 80}]}]}}),
        ["spec.network.egress[0].ports[0]", "endPort"],
    ),
    ("max-ttl-too-low", _scope({"maxTokenTTLSeconds": 60}), ["spec.maxTokenTTLSeconds"]),
    (
        "min-approvals-above-users",
        _policy({"match": _ACT, "approvers": {"users": ["a", "b"]}, "minApprovals": 3}),
        ["spec.minApprovals is more than the number of approvers.users"],
    ),
    (
        "no-approvers",
        _policy({"match": _ACT, "approvers": {}}),
        ["spec.approvers: name at least one user or group"],
    ),
    (
        "approvers-users-duplicate",
        _policy({"match": _ACT, "approvers": {"users": ["alice", "alice"]}}),
        ["spec.approvers.users[1]", "Duplicate value", "alice"],
    ),
    (
        "approvers-groups-duplicate",
        _policy({"match": _ACT, "approvers": {"groups": ["sre", "sre"]}}),
        ["spec.approvers.groups[1]", "Duplicate value", "sre"],
    ),
    (
        "match-actions-duplicate",
        _policy(
            {
                "match": {"actions": ["deploy.production", "deploy.production"]},
                "approvers": {"groups": ["sre"]},
            }
        ),
        ["spec.match.actions[1]", "Duplicate value"],
    ),
    (
        "match-scopes-duplicate",
        _policy(
            {
                "match": {**_ACT, "scopes": ["deployer", "deployer"]},
                "approvers": {"groups": ["sre"]},
            }
        ),
        ["spec.match.scopes[1]", "Duplicate value"],
    ),
    (
        "no-actions",
        _policy({"match": {"actions": []}, "approvers": {"groups": ["sre"]}}),
        ["spec.match.actions"],
    ),
    ("policy-without-spec", _policy({}), ["spec", "Required value"]),
    (
        "grant-zero",
        _policy({"match": _ACT, "approvers": {"groups": ["sre"]}, "grantSeconds": 0}),
        ["spec.grantSeconds"],
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_api_server_rejects_invalid_objects(
    cluster: Any, crds: None, namespace: str, body: dict[str, Any], expected: list[str]
) -> None:
    proc = cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert "is invalid" in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in: {proc.stderr}"
    assert (
        cluster.kubectl(
            "get", body["kind"].lower(), body["metadata"]["name"], "-n", namespace, check=False
        ).returncode
        != 0
    )


def _update(cluster: Any, namespace: str, body: dict[str, Any]) -> Any:
    """Send ``body``'s spec as an update (the old object's spec replaced whole).

    A JSON patch that replaces /spec, without resourceVersion: the session's operator or
    decision API may write status or annotations between our read and this write, and a
    full `kubectl replace` would then fail with a Conflict rather than say what we test.
    """
    kind = body["kind"].lower()
    patch = json.dumps([{"op": "replace", "path": "/spec", "value": body["spec"]}])
    name = body["metadata"]["name"]
    return cluster.kubectl(
        "patch", kind, name, "-n", namespace, "--type=json", "-p", patch, check=False
    )


def test_lifecycle_transition_rules_on_update(cluster: Any, crds: None, namespace: str) -> None:
    retired = _agent({"owner": "t", "lifecycle": {"state": "Retired"}}, name="tombstone")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(retired))
    revived = _get(cluster, namespace, "agent", "tombstone")
    revived["spec"]["lifecycle"]["state"] = "Active"
    proc = _update(cluster, namespace, revived)
    assert proc.returncode != 0
    assert "spec.lifecycle" in proc.stderr and "a Retired agent cannot be revived" in proc.stderr

    sunset = {"state": "Deprecated", "sunsetAt": "2030-01-01T00:00:00Z"}
    cluster.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(_agent({"owner": "t", "lifecycle": sunset}, "old")),
    )
    old = _get(cluster, namespace, "agent", "old")
    old["spec"]["lifecycle"] = {"state": "Suspended"}
    proc = _update(cluster, namespace, old)
    assert proc.returncode != 0 and "a Deprecated agent cannot be Suspended" in proc.stderr
    # A legal change passes: Deprecated -> Active (sunsetAt removed), then Active -> Suspended.
    old["spec"]["lifecycle"] = {"state": "Active"}
    assert _update(cluster, namespace, old).returncode == 0
    old = _get(cluster, namespace, "agent", "old")
    old["spec"]["lifecycle"] = {"state": "Suspended"}
    assert _update(cluster, namespace, old).returncode == 0


def test_approval_request_spec_is_immutable(cluster: Any, crds: None, namespace: str) -> None:
    request = {
        "apiVersion": API,
        "kind": "ApprovalRequest",
        "metadata": {"name": "ask-1"},
        "spec": {
            "agent": {"name": "release-bot"},
            "agentUid": "0d6c5d3e-1b7a-4c1e-9a55-2f5a6b7c8d9e",
            "action": "deploy.production",
            "resource": {"type": "service", "id": "payments-api"},
            "context": {"ticket": "CHG-1", "nested": {"change_window": True}},
            "requestedAt": "2026-01-01T10:00:00Z",
            "requestedBy": "system:serviceaccount:payments:release-bot",
            "approvers": {"groups": ["sre-leads"]},
            "expiresAt": "2026-01-01T11:00:00Z",
        },
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(request))
    stored = _get(cluster, namespace, "approvalrequest", "ask-1")
    assert stored["spec"]["context"] == {"ticket": "CHG-1", "nested": {"change_window": True}}
    assert stored["spec"]["minApprovals"] == 1 and stored["spec"]["grantSeconds"] == 900
    stored["spec"]["action"] = "deploy.staging"
    proc = _update(cluster, namespace, stored)
    assert proc.returncode != 0 and "spec of an ApprovalRequest is immutable" in proc.stderr


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=valid_bodies)
def test_api_server_accepts_generated_valid_objects(
    cluster: Any, crds: None, namespace: str, without_admission_webhooks: None, body: dict[str, Any]
) -> None:
    # What the CRD schema alone accepts: our webhooks (when the session runs them) would
    # also check the references these objects make to scopes and parents that do not exist.
    proc = cluster.kubectl(
        "create",
        "-n",
        namespace,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(body),
        check=False,
    )
    assert proc.returncode == 0, f"{json.dumps(body)}\n{proc.stderr}"
    stored = json.loads(proc.stdout)
    # What the server stores (after its defaulting) is what our model makes of the input.
    model = MODELS[body["kind"]]
    assert model.parse(stored).to_wire()["spec"] == model.parse(body).to_wire()["spec"]
