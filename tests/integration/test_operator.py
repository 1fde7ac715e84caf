"""The operator on the real control plane: children, lifecycle, scopes, GC, restarts."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agent_identity.api.common import AGENT_LABEL
from tests.conftest import figure, wait_for
from tests.integration.test_metrics import scrape, value

G, V = "agentidentity.io", "v1alpha1"
CHILD_KINDS = ("serviceaccount", "role", "rolebinding", "networkpolicy")


@pytest.fixture
def api(cluster: Any, operator: Any) -> Iterator[Any]:
    yield cluster.api_client()
    operator.assert_no_traceback()


def apply(cluster: Any, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def scope_doc(name: str, verbs: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs or ["get"]}]
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AuthorityScope",
        "metadata": {"name": name},
        "spec": {"rules": rules, **spec},
    }


def agent_doc(name: str, scopes: list[str], state: str = "Active", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "owner": "team-payments",
            "scopeRefs": [{"name": s} for s in scopes],
            "lifecycle": {"state": state},
            **spec,
        },
    }


def get_agent(api: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        G, V, ns, "agents", name
    )
    return obj


def condition(agent: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conds = (agent.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


def is_ready(agent: dict[str, Any]) -> bool:
    ready = condition(agent, "Ready")
    status = agent.get("status") or {}
    return bool(
        ready
        and ready["status"] == "True"
        and status.get("observedGeneration") == agent["metadata"]["generation"]
    )


def wait_ready(api: Any, ns: str, name: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        f"Agent {ns}/{name} Ready",
        lambda: a if is_ready(a := get_agent(api, ns, name)) else None,
        timeout,
    )


def wait_phase(api: Any, ns: str, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        a = get_agent(api, ns, name)
        return a if (a.get("status") or {}).get("phase") == phase else None

    return wait_for(f"Agent {ns}/{name} phase {phase}", check, timeout)


def child(api: Any, kind: str, ns: str, name: str) -> Any | None:
    core, rbac, net = (
        client.CoreV1Api(api),
        client.RbacAuthorizationV1Api(api),
        client.NetworkingV1Api(api),
    )
    read = {
        "serviceaccount": core.read_namespaced_service_account,
        "role": rbac.read_namespaced_role,
        "rolebinding": rbac.read_namespaced_role_binding,
        "networkpolicy": net.read_namespaced_network_policy,
    }[kind]
    try:
        return read(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def token_review(cluster: Any, token: str) -> dict[str, Any]:
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["agentidentity.io"]},
    }
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    status: dict[str, Any] = json.loads(out.stdout)["status"]
    return status


# --- tests ----------------------------------------------------------------------------------


def test_agent_becomes_ready_with_four_owned_children(
    cluster: Any, namespace: str, api: Any, operator: Any
) -> None:
    apply(
        cluster, namespace, scope_doc("deployer", ["get", "list"]), agent_doc("bot", ["deployer"])
    )
    agent = wait_ready(api, namespace, "bot")
    uid = agent["metadata"]["uid"]
    status = agent["status"]
    assert status["phase"] == "Active"
    assert status["identity"] == {
        "uri": f"agent://test/{namespace}/bot",
        "serviceAccount": "agent-bot",
        "uid": uid,
    }
    assert status["effectiveAuthority"]["digest"].startswith("sha256:")
    assert status["history"][-1]["to"] == "Active"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {
        "Ready": "True",
        "IdentityProvisioned": "True",
        "AuthorityBound": "True",
        "NetworkIsolated": "True",
    }
    assert not agent["metadata"].get("finalizers")  # deletion never waits for the operator
    for kind in CHILD_KINDS:
        obj = child(api, kind, namespace, "agent-bot")
        assert obj is not None, kind
        assert obj.metadata.labels[AGENT_LABEL] == "bot"
        (ref,) = obj.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
            "Agent",
            "bot",
            uid,
            True,
            True,
        )
    sa = child(api, "serviceaccount", namespace, "agent-bot")
    assert sa.automount_service_account_token is False
    role = child(api, "role", namespace, "agent-bot")
    assert [r.verbs for r in role.rules] == [["get", "list"]]
    np = child(api, "networkpolicy", namespace, "agent-bot")
    assert np.spec.policy_types == ["Egress"] and len(np.spec.egress) == 2
    # kopf's own state is in annotations under our group; once it is written, an unchanged
    # agent is not rewritten at all (status is written only when it changes).
    key = "agentidentity.io/last-handled-configuration"
    agent = wait_for(
        "kopf's diff-base annotation",
        lambda: (a if key in (a := get_agent(api, namespace, "bot"))["metadata"].get(
            "annotations", {}) else None),
    )  # fmt: skip
    assert not any(k.startswith("kopf.zalando.org") for k in agent["metadata"]["annotations"])
    rv = agent["metadata"]["resourceVersion"]
    time.sleep(2)
    assert get_agent(api, namespace, "bot")["metadata"]["resourceVersion"] == rv
    # The transition is an Event and an audit record.
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json")
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert "Provisioned" in reasons
    assert any(
        r.get("kind") == "lifecycle" and r.get("agentUid") == uid and r.get("to") == "Active"
        for r in operator.audit_records()
    )


def test_retired_agent_tokens_stop_authenticating(
    cluster: Any, namespace: str, api: Any, operator: Any
) -> None:
    apply(cluster, namespace, scope_doc("deployer"), agent_doc("bot", ["deployer"]))
    wait_ready(api, namespace, "bot")
    token = cluster.kubectl(
        "create", "token", "agent-bot", "-n", namespace, "--audience", "agentidentity.io"
    ).stdout.strip()
    assert token_review(cluster, token).get("authenticated") is True
    cluster.kubectl(
        "patch", "agent", "bot", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"lifecycle": {"state": "Retired"}}}',
    )  # fmt: skip
    start = time.monotonic()
    wait_for(
        "the token to stop authenticating",
        lambda: not token_review(cluster, token).get("authenticated"),
        timeout=30,
        every=0.25,
    )
    elapsed = time.monotonic() - start
    figure(f"\nretire -> token no longer authenticates: {elapsed:.1f} s")
    assert elapsed <= 15
    agent = wait_phase(api, namespace, "bot", "Retired")
    for kind in ("serviceaccount", "role", "rolebinding"):
        assert child(api, kind, namespace, "agent-bot") is None, kind
    np = child(api, "networkpolicy", namespace, "agent-bot")
    assert np.spec.egress in (None, []) and np.spec.policy_types == ["Egress"]
    assert agent["status"]["identity"].get("serviceAccount") is None
    assert agent["status"]["history"][-1]["reason"] == "Retired"


def test_suspended_removes_the_role_binding_and_active_restores_it(
    cluster: Any, namespace: str, api: Any
) -> None:
    apply(cluster, namespace, scope_doc("deployer"), agent_doc("bot", ["deployer"]))
    wait_ready(api, namespace, "bot")
    apply(cluster, namespace, agent_doc("bot", ["deployer"], state="Suspended"))
    agent = wait_phase(api, namespace, "bot", "Suspended")
    wait_for("RoleBinding gone", lambda: child(api, "rolebinding", namespace, "agent-bot") is None)
    assert condition(agent, "AuthorityBound")["status"] == "False"
    assert child(api, "serviceaccount", namespace, "agent-bot") is not None
    apply(cluster, namespace, agent_doc("bot", ["deployer"], state="Active"))
    agent = wait_ready(api, namespace, "bot")
    assert child(api, "rolebinding", namespace, "agent-bot") is not None
    assert [h["to"] for h in agent["status"]["history"]] == ["Active", "Suspended", "Active"]


def _mark_status(cluster: Any, namespace: str, name: str) -> None:
    """Write a marker into an Agent's status that only a reconcile of it would correct
    (a status write starts no reconcile: kopf's update handlers ignore status)."""
    patch = json.dumps({"status": {"scopes": "marker"}})
    cluster.kubectl(
        "patch", "agent", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )


def test_editing_a_scope_updates_exactly_its_agents(cluster: Any, namespace: str, api: Any) -> None:
    apply(
        cluster, namespace,
        scope_doc("s1", ["get"]), scope_doc("s2", ["get"]),
        agent_doc("a", ["s1"]), agent_doc("b", ["s1", "s2"]), agent_doc("c", ["s2"]),
    )  # fmt: skip
    for name in "abc":
        wait_ready(api, namespace, name)
    rv_c = child(api, "role", namespace, "agent-c").metadata.resource_version
    digest_c = get_agent(api, namespace, "c")["status"]["effectiveAuthority"]["digest"]
    for name in "abc":
        _mark_status(cluster, namespace, name)
    apply(cluster, namespace, scope_doc("s1", ["get", "watch"]))
    for name in "ab":
        wait_for(
            f"Role of {name} updated",
            lambda n=name: any(  # type: ignore[misc]
                "watch" in r.verbs for r in child(api, "role", namespace, f"agent-{n}").rules
            ),
        )
        # Reconciled: the marker is gone (positive control for agent c below).
        wait_for(
            f"status of {name} rewritten",
            lambda n=name: get_agent(api, namespace, n)["status"]["scopes"] != "marker",  # type: ignore[misc]
        )
    time.sleep(2)
    # Agent c (bound to s2 only) was not reconciled at all: its marker is still there.
    assert get_agent(api, namespace, "c")["status"]["scopes"] == "marker"
    assert child(api, "role", namespace, "agent-c").metadata.resource_version == rv_c
    assert get_agent(api, namespace, "c")["status"]["effectiveAuthority"]["digest"] == digest_c
    assert get_agent(api, namespace, "b")["status"]["scopes"] == "s1,s2"
    scope = client.CustomObjectsApi(api).get_namespaced_custom_object(
        G, V, namespace, "authorityscopes", "s1"
    )
    assert scope["status"]["boundAgents"] == ["a", "b"]


def test_fields_the_operator_does_not_own_are_left_alone(
    cluster: Any, namespace: str, api: Any
) -> None:
    apply(cluster, namespace, scope_doc("s1", ["get"]), agent_doc("bot", ["s1"]))
    wait_ready(api, namespace, "bot")
    # A person (or another controller) labels and annotates the children.
    for kind in CHILD_KINDS:
        cluster.kubectl("label", kind, "agent-bot", "-n", namespace, "team=payments")
        cluster.kubectl("annotate", kind, "agent-bot", "-n", namespace, "note=keep")
    # A reconcile that changes the Role: our fields change, theirs stay.
    apply(cluster, namespace, scope_doc("s1", ["get", "list"]))
    wait_for(
        "Role updated",
        lambda: child(api, "role", namespace, "agent-bot").rules[0].verbs == ["get", "list"],
    )
    for kind in CHILD_KINDS:
        obj = child(api, kind, namespace, "agent-bot")
        assert obj.metadata.labels["team"] == "payments", kind
        assert obj.metadata.labels[AGENT_LABEL] == "bot", kind
        assert obj.metadata.annotations["note"] == "keep", kind


def test_expiry_and_sunset_retire_agents_on_time(
    cluster: Any, namespace: str, api: Any, operator: Any
) -> None:
    # Deadlines a few seconds ahead, passing while the operator runs: its clock retires
    # each agent about when it passes, as the operator (not a person).
    soon = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
    stamp = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    apply(
        cluster, namespace, scope_doc("s1"),
        agent_doc("expiring", ["s1"], lifecycle={"state": "Active", "expiresAt": stamp}),
        agent_doc("sunsetting", ["s1"], lifecycle={"state": "Deprecated", "sunsetAt": stamp}),
    )  # fmt: skip
    wait_ready(api, namespace, "expiring")
    assert wait_ready(api, namespace, "sunsetting")["status"]["phase"] == "Deprecated"
    for name, reason in (("expiring", "Expired"), ("sunsetting", "Sunset")):
        agent = wait_phase(api, namespace, name, "Retired", timeout=30)
        last = agent["status"]["history"][-1]
        assert (last["to"], last["reason"]) == ("Retired", reason), last
        assert last["actor"] == "system:agent-identity-operator"
        at = datetime.fromisoformat(last["at"].replace("Z", "+00:00"))
        late = (at - soon).total_seconds()
        figure(f"{reason.lower()} -> Retired {late:.1f}s after the deadline")
        assert 0 <= late <= 5, late
        assert child(api, "serviceaccount", namespace, f"agent-{name}") is None
        assert condition(agent, "Expired")["reason"] == reason


def test_deleted_children_are_recreated(cluster: Any, namespace: str, api: Any) -> None:
    apply(cluster, namespace, scope_doc("deployer"), agent_doc("bot", ["deployer"]))
    wait_ready(api, namespace, "bot")
    for kind in CHILD_KINDS:
        old_uid = child(api, kind, namespace, "agent-bot").metadata.uid
        cluster.kubectl("delete", kind, "agent-bot", "-n", namespace)
        wait_for(
            f"{kind} recreated",
            lambda k=kind, u=old_uid: (  # type: ignore[misc]
                (c := child(api, k, namespace, "agent-bot")) is not None and c.metadata.uid != u
            ),
        )


def test_deleting_the_agent_garbage_collects_children(
    cluster: Any, namespace: str, api: Any
) -> None:
    apply(cluster, namespace, scope_doc("deployer"), agent_doc("bot", ["deployer"]))
    wait_ready(api, namespace, "bot")
    cluster.kubectl("delete", "agent", "bot", "-n", namespace, "--wait=true", timeout=60)
    for kind in CHILD_KINDS:
        wait_for(f"{kind} collected", lambda k=kind: child(api, k, namespace, "agent-bot") is None)  # type: ignore[misc]


def test_agent_created_before_its_scope_becomes_ready_when_it_appears(
    cluster: Any, namespace: str, api: Any, without_admission_webhooks: None
) -> None:
    # Without the admission webhook (or on a cluster where it is not installed yet), an
    # Agent may be stored before its scope: Pending, waiting (kstatus Reconciling, not
    # Stalled), with its identity but no authority; Ready once the scope is created.
    apply(cluster, namespace, agent_doc("early", ["not-yet"]))
    agent = wait_phase(api, namespace, "early", "Pending")
    assert condition(agent, "Ready")["reason"] == "ScopeNotFound"
    assert condition(agent, "Reconciling")["reason"] == "ScopeNotFound"
    assert condition(agent, "Stalled") is None
    assert child(api, "serviceaccount", namespace, "agent-early") is not None
    assert child(api, "rolebinding", namespace, "agent-early") is None
    apply(cluster, namespace, scope_doc("not-yet"))
    agent = wait_ready(api, namespace, "early")
    assert condition(agent, "Reconciling") is None
    assert child(api, "rolebinding", namespace, "agent-early") is not None


def test_agent_becomes_ready_once_its_scope_appears(cluster: Any, namespace: str, api: Any) -> None:
    # Applied together, scope first (the admission webhook, when installed, refuses a
    # reference to a scope that does not exist: binding to a future scope would skip the
    # escalation check) ...
    apply(cluster, namespace, scope_doc("s-together"), agent_doc("together", ["s-together"]))
    wait_ready(api, namespace, "together")
    # ... and a scope that goes away and comes back later: the agent loses the authority
    # at once and regains it when the scope reappears.
    apply(cluster, namespace, scope_doc("later"), agent_doc("bot", ["later"]))
    wait_ready(api, namespace, "bot")
    cluster.kubectl("delete", "authorityscope", "later", "-n", namespace)
    agent = wait_phase(api, namespace, "bot", "Pending")
    ready = condition(agent, "Ready")
    assert ready and ready["status"] == "False" and ready["reason"] == "ScopeNotFound"
    assert "later" in ready["message"]
    wait_for(
        "RoleBinding removed", lambda: child(api, "rolebinding", namespace, "agent-bot") is None
    )
    apply(cluster, namespace, scope_doc("later"))
    wait_ready(api, namespace, "bot")
    assert child(api, "rolebinding", namespace, "agent-bot") is not None


@pytest.fixture
def owner_not_enforced(cluster: Any) -> Iterator[None]:
    """The CRD with its owner validation loosened, restored afterwards.

    The CRD refuses a missing owner; to test the operator's own defence (an Agent
    stored before the rule existed, or by a loosened CRD) we loosen it briefly.
    """
    crd_name = "agents.agentidentity.io"
    original = json.loads(cluster.kubectl("get", "crd", crd_name, "-o", "json").stdout)
    loose = copy.deepcopy(original)
    for version in loose["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec["required"] = [r for r in spec.get("required", []) if r != "owner"]
        if not spec["required"]:
            del spec["required"]
        owner = spec["properties"]["owner"]
        for key in ("minLength", "pattern", "x-kubernetes-validations"):
            owner.pop(key, None)
    cluster.kubectl("replace", "-f", "-", input=json.dumps(loose))
    try:
        yield
    finally:
        current = json.loads(cluster.kubectl("get", "crd", crd_name, "-o", "json").stdout)
        original["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        cluster.kubectl("replace", "-f", "-", input=json.dumps(original))


def test_agent_without_owner_stays_not_ready(
    cluster: Any,
    namespace: str,
    api: Any,
    without_admission_webhooks: None,
    owner_not_enforced: None,
    operator: Any,
) -> None:
    doc = agent_doc("orphan", ["deployer"])
    del doc["spec"]["owner"]
    # The API server may take a moment to serve the loosened schema.
    wait_for(
        "the loosened CRD to accept an Agent without owner",
        lambda: (
            cluster.kubectl(
                "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
            ).returncode
            == 0
        ),
    )
    apply(cluster, namespace, scope_doc("deployer"))
    agent = wait_phase(api, namespace, "orphan", "Pending")
    ready = condition(agent, "Ready")
    assert ready and ready["status"] == "False" and ready["reason"] == "OwnerMissing"
    assert "spec.owner" in ready["message"] and "accountable" in ready["message"]
    time.sleep(2)
    agent = get_agent(api, namespace, "orphan")
    assert agent["status"]["phase"] == "Pending"
    assert child(api, "serviceaccount", namespace, "agent-orphan") is None
    assert child(api, "rolebinding", namespace, "agent-orphan") is None

    # Counted for the AgentIdentityAgentsWithoutOwner alert, until someone sets an owner.
    metrics = f"http://127.0.0.1:{operator.metrics_port}/metrics"

    def ownerless() -> float:
        return value(scrape(metrics), "agent_identity_agents_without_owner", namespace=namespace)

    wait_for("the without-owner gauge to count the agent", lambda: ownerless() == 1)
    patch = json.dumps({"spec": {"owner": "team-payments"}})
    cluster.kubectl("patch", "agent", "orphan", "-n", namespace, "--type=merge", "-p", patch)
    wait_ready(api, namespace, "orphan")
    wait_for("the without-owner gauge to drop the agent", lambda: ownerless() == 0)


def test_restart_while_reconciling_200_agents(
    cluster: Any, namespace: str, api: Any, operator: Any
) -> None:
    n = 200
    docs = [scope_doc("shared")] + [agent_doc(f"bulk-{i:03d}", ["shared"]) for i in range(n)]
    custom = client.CustomObjectsApi(api)

    def ready_count() -> int:
        items = custom.list_namespaced_custom_object(G, V, namespace, "agents")["items"]
        return sum(1 for a in items if is_ready(a))

    start = time.monotonic()
    # Applied in the background, so the operator can be killed while agents still arrive
    # and most are not reconciled yet.
    applying = subprocess.Popen(
        [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), "apply", "-n", namespace,
         "-f", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert applying.stdin is not None
    applying.stdin.write(yaml.safe_dump_all(docs))
    applying.stdin.close()
    wait_for("some agents Ready", lambda: ready_count() >= 20, timeout=120, every=0.05)
    operator.stop(kill=True)  # the hard way, mid-way: no chance to finish anything
    before = ready_count()
    assert applying.wait(timeout=120) == 0, applying.stderr.read() if applying.stderr else ""
    assert before < n // 2, f"the operator was not stopped mid-way ({before} of {n} Ready)"
    operator.start()
    wait_for(f"all {n} agents Ready", lambda: ready_count() == n or None, timeout=300, every=1)
    elapsed = time.monotonic() - start
    figure(f"\n{n} agents Ready in {elapsed:.1f} s (operator killed after {before} were Ready)")

    agents = {
        a["metadata"]["name"]: a["metadata"]["uid"]
        for a in custom.list_namespaced_custom_object(G, V, namespace, "agents")["items"]
    }
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    net = client.NetworkingV1Api(api)
    selector = AGENT_LABEL
    for listing in (
        core.list_namespaced_service_account(namespace, label_selector=selector),
        rbac.list_namespaced_role(namespace, label_selector=selector),
        rbac.list_namespaced_role_binding(namespace, label_selector=selector),
        net.list_namespaced_network_policy(namespace, label_selector=selector),
    ):
        owners = [obj.metadata.labels[AGENT_LABEL] for obj in listing.items]
        assert sorted(owners) == sorted(agents)  # one per agent: no duplicate, none orphaned
        for obj in listing.items:
            name = obj.metadata.labels[AGENT_LABEL]
            assert obj.metadata.name == f"agent-{name}"
            assert [r.uid for r in obj.metadata.owner_references] == [agents[name]]
    operator.assert_no_traceback()
