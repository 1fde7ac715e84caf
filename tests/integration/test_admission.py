"""Admission through the real API server: a table of cases, each run as real users.

Agents get their status from the real operator (fixture ``operator``); the
webhooks are the session's ``agent-identity admission --dev`` process (fixture
``admission``). Every case asserts the outcome (allowed / denied / warned) and
the message a person sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.admission import AdmissionProcess

GROUP = "agentidentity.io"
TESTERS = "agentidentity-admission-testers"
EDITOR_ROLE = "agentidentity-test-editor"
APPS_ROLE = "agentidentity-test-apps-reader"


@pytest.fixture(scope="module")
def users(cluster: Any) -> Iterator[dict[str, Path]]:
    """alice and bob may read deployments (so may grant that); eve may only edit our resources."""
    roles = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": EDITOR_ROLE},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["agents", "authorityscopes", "approvalpolicies"],
                    # explicit verbs: '*' would include 'escalate'
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["get", "list", "create", "update", "patch", "delete"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": APPS_ROLE},
            "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}
            ],
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(roles))
    yield {u: cluster.user_kubeconfig(u, [TESTERS]) for u in ("alice", "bob", "eve")}
    cluster.kubectl(
        "delete", "clusterrole", EDITOR_ROLE, APPS_ROLE, "--ignore-not-found", check=False
    )


@dataclass
class Outcome:
    ok: bool
    out: str
    err: str

    @property
    def warnings(self) -> str:
        return "\n".join(line for line in self.err.splitlines() if line.startswith("Warning:"))


class World:
    """One test namespace with users, agents and scopes, acting through kubectl."""

    def __init__(
        self, cluster: Any, namespace: str, users: dict[str, Path], admission: AdmissionProcess
    ):
        self.cluster, self.ns, self.users, self.admission = cluster, namespace, users, admission
        cluster.kubectl(
            "create",
            "rolebinding",
            "testers",
            "-n",
            namespace,
            f"--clusterrole={EDITOR_ROLE}",
            f"--group={TESTERS}",
        )
        cluster.kubectl(
            "create",
            "rolebinding",
            "apps",
            "-n",
            namespace,
            f"--clusterrole={APPS_ROLE}",
            "--user=alice",
            "--user=bob",
        )

    def run(self, *args: str, user: str | None = None, input: str | None = None) -> Outcome:
        proc = self.cluster.kubectl(
            *args,
            "-n",
            self.ns,
            as_user=self.users[user] if user else None,
            input=input,
            check=False,
        )
        return Outcome(proc.returncode == 0, proc.stdout, proc.stderr)

    def create(self, obj: dict[str, Any], user: str | None = None) -> Outcome:
        obj["metadata"].setdefault("namespace", self.ns)
        return self.run("create", "-f", "-", user=user, input=json.dumps(obj))

    def must(self, outcome: Outcome) -> Outcome:
        assert outcome.ok, outcome.err
        return outcome

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.must(self.run("get", kind, name, "-o", "json")).out)

    def scope(self, name: str, user: str | None = None, **spec: Any) -> Outcome:
        return self.create(
            {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": "AuthorityScope",
                "metadata": {"name": name},
                "spec": spec,
            },
            user,
        )

    def agent_body(
        self,
        name: str,
        *,
        state: str = "Active",
        scopes: tuple[str, ...] = (),
        parent: str | None = None,
        ttl: int | None = None,
        sunset: str | None = None,
        expires: str | None = None,
        audience: str | None = None,
    ) -> dict[str, Any]:
        lifecycle: dict[str, Any] = {"state": state}
        if sunset:
            lifecycle["sunsetAt"] = sunset
        if expires:
            lifecycle["expiresAt"] = expires
        spec: dict[str, Any] = {
            "owner": "team-payments",
            "scopeRefs": [{"name": s} for s in scopes],
            "lifecycle": lifecycle,
        }
        if parent:
            spec["parentRef"] = {"name": parent}
        token: dict[str, Any] = {}
        if ttl:
            token["ttlSeconds"] = ttl
        if audience:
            token["audience"] = audience
        if token:
            spec["token"] = token
        return {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": spec,
        }

    def agent(
        self, name: str, phase: str | None = None, user: str | None = None, **kw: Any
    ) -> Outcome:
        """Create an Agent; with ``phase``, wait until the operator reports it."""
        out = self.create(self.agent_body(name, **kw), user)
        if phase:
            self.must(out)
            self.wait_phase(name, phase)
        return out

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("agent", name).get("status") or {}
            if status.get("phase") == phase:
                # the ServiceAccount (or its removal) is part of the phase being real
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {name} did not reach {phase}: {status}")
            time.sleep(0.1)

    def pod(
        self,
        name: str,
        *,
        label: str | None = None,
        sa: str | None = None,
        user: str = "alice",
        init: bool = False,
        namespace: str | None = None,
    ) -> Outcome:
        meta: dict[str, Any] = {"name": name, "labels": {}}
        if namespace:
            meta["namespace"] = namespace
        if label:
            meta["labels"][f"{GROUP}/agent"] = label
        spec: dict[str, Any] = {
            "containers": [{"name": "main", "image": "registry.invalid/agent:1"}]
        }
        if init:
            spec["initContainers"] = [{"name": "setup", "image": "registry.invalid/setup:1"}]
        if sa:
            spec["serviceAccountName"] = sa
        return self.create(
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, user
        )

    def enforce(self, mode: str) -> None:
        self.cluster.kubectl(
            "label", "namespace", self.ns, f"{GROUP}/enforce={mode}", "--overwrite"
        )


Expect = tuple[str, str]  # ("allowed" | "denied" | "warned", message fragment)


def _deployer(w: World, name: str = "deployer", **extra: Any) -> None:
    spec: dict[str, Any] = {
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}],
        "tools": {"allow": ["github.pulls.*"], "deny": ["github.admin.**"]},
        "network": {"egress": [{"to": [{"cidr": "10.20.0.0/16"}], "ports": [{"port": 443}]}]},
        "maxTokenTTLSeconds": 1800,
    }
    spec.update(extra)
    w.must(w.scope(name, **spec))


def _child_of_orchestrator(w: World, **child_scope: Any) -> Outcome:
    ttl = child_scope.pop("_ttl", None)
    _deployer(w)
    w.agent("orchestrator", phase="Active", scopes=("deployer",))
    w.must(w.scope("child-scope", **child_scope))
    return w.agent("child", scopes=("child-scope",), parent="orchestrator", ttl=ttl)


# --- the cases ------------------------------------------------------------------------------


def unregistered_pod_in_enforcing_namespace(w: World) -> Outcome:
    w.enforce("deny")
    return w.pod("plain")


def pod_of_active_agent(w: World) -> Outcome:
    w.agent("bot", phase="Active")
    return w.pod("bot-1", label="bot")


def pod_of_deprecated_agent(w: World) -> Outcome:
    w.agent("old-bot", phase="Deprecated", state="Deprecated", sunset="2099-01-01T00:00:00Z")
    return w.pod("old-1", label="old-bot")


def pod_of_suspended_agent(w: World) -> Outcome:
    w.agent("paused", phase="Suspended", state="Suspended")
    return w.pod("paused-1", label="paused")


def pod_of_retired_agent(w: World) -> Outcome:
    w.agent("triage-bot", phase="Retired", state="Retired")
    return w.pod("triage-1", label="triage-bot")


def pod_of_expired_agent(w: World) -> Outcome:
    w.agent("late-bot", phase="Retired", expires="2020-01-01T00:00:00Z")
    return w.pod("late-1", label="late-bot")


def pod_of_unknown_agent(w: World) -> Outcome:
    return w.pod("ghost-1", label="ghost")


def service_account_borrowing(w: World) -> Outcome:
    w.agent("bot", phase="Active")
    return w.pod("borrower", sa="agent-bot")


def agent_pod_naming_another_agents_service_account(w: World) -> Outcome:
    w.agent("bot", phase="Active")
    w.agent("admin-bot", phase="Active")
    return w.pod("spoof", label="bot", sa="agent-admin-bot")


def label_spoofing_on_existing_pod(w: World) -> Outcome:
    w.agent("bot", phase="Active")
    w.must(w.pod("plain"))
    return w.run("label", "pod", "plain", f"{GROUP}/agent=bot", user="alice")


def label_removal_on_agent_pod(w: World) -> Outcome:
    w.agent("bot", phase="Active")
    w.must(w.pod("bot-1", label="bot"))
    return w.run("label", "pod", "bot-1", f"{GROUP}/agent-", user="alice")


def warn_mode(w: World) -> Outcome:
    w.enforce("warn")
    return w.pod("plain")


def audit_mode(w: World) -> Outcome:
    w.enforce("audit")
    out = w.pod("audited-pod")
    records = [r for r in w.admission.audit_records() if r.get("namespace") == w.ns]
    assert records and records[-1]["pod"] == "audited-pod" and records[-1]["actor"] == "alice"
    assert records[-1]["outcome"] == "audited"
    return out


def mutation_result(w: World) -> Outcome:
    _deployer(w, maxTokenTTLSeconds=600)
    w.agent("bot", phase="Active", scopes=("deployer",), audience="payments-gateway")
    out = w.must(w.pod("bot-1", label="bot", init=True))
    spec = w.get("pod", "bot-1")["spec"]
    assert spec["serviceAccountName"] == "agent-bot"
    assert spec["automountServiceAccountToken"] is False
    (volume,) = spec["volumes"]  # the API token volume is gone
    src = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert src == {"audience": "payments-gateway", "expirationSeconds": 600, "path": "token"}
    for c in spec["containers"] + spec["initContainers"]:
        (mount,) = c["volumeMounts"]
        assert mount == {
            "name": volume["name"],
            "mountPath": "/var/run/secrets/agentidentity.io/token",
            "readOnly": True,
        }
        (env,) = [e for e in c["env"] if e["name"] == "AGENT_IDENTITY_DECISIONS_URL"]
        # The URL the process announced: loopback, or the cluster bridge when the node is up.
        assert env["value"] == w.admission.decisions_url
        assert env["value"].startswith(("http://127.0.0.1:", "http://10.244.0.1:"))
    return out


def sub_agent_wider_rules(w: World) -> Outcome:
    return _child_of_orchestrator(
        w, rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}]
    )


def sub_agent_wider_tools(w: World) -> Outcome:
    return _child_of_orchestrator(w, tools={"allow": ["github.**"]})


def sub_agent_wider_egress(w: World) -> Outcome:
    return _child_of_orchestrator(
        w, network={"egress": [{"to": [{"cidr": "0.0.0.0/0"}], "ports": [{"port": 443}]}]}
    )


def sub_agent_longer_ttl(w: World) -> Outcome:
    return _child_of_orchestrator(
        w, tools={"allow": ["github.pulls.list"]}, maxTokenTTLSeconds=7200, _ttl=3600
    )


def sub_agent_within_parent(w: World) -> Outcome:
    return _child_of_orchestrator(
        w,
        rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        tools={"allow": ["github.pulls.list"]},
        network={"egress": [{"to": [{"cidr": "10.20.5.0/24"}], "ports": [{"port": 443}]}]},
    )


def missing_scope_reference(w: World) -> Outcome:
    return w.agent("bot", scopes=("does-not-exist",))


def scope_and_agent_in_one_apply(w: World) -> Outcome:
    docs = [
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "AuthorityScope",
            "metadata": {"name": "fresh", "namespace": w.ns},
            "spec": {"tools": {"allow": ["a.b"]}},
        },
        {
            **w.agent_body("fresh-bot", scopes=("fresh",)),
            "metadata": {"name": "fresh-bot", "namespace": w.ns},
        },
    ]
    return w.run("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def illegal_lifecycle_transition(w: World) -> Outcome:
    # retired by expiry: moving expiresAt into the future does not revive it
    w.agent("late-bot", phase="Retired", expires="2020-01-01T00:00:00Z")
    return w.run(
        "patch",
        "agent",
        "late-bot",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lifecycle": {"expiresAt": "2099-01-01T00:00:00Z"}}}),
        user="alice",
    )


def ttl_above_scope_maximum(w: World) -> Outcome:
    _deployer(w, maxTokenTTLSeconds=900)
    return w.agent("bot", scopes=("deployer",), ttl=3600)


def user_escalating_through_scope(w: World) -> Outcome:
    return w.scope(
        "secrets-reader",
        user="eve",
        rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    )


def user_escalating_through_agent_binding(w: World) -> Outcome:
    _deployer(w)  # grants deployments get/list, which eve does not hold
    return w.agent("bot", user="eve", scopes=("deployer",))


def user_with_permissions_succeeds(w: World) -> Outcome:
    out = w.scope(
        "deploy-reader",
        user="alice",
        rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
    )
    w.must(out)
    return w.agent("bot", user="alice", scopes=("deploy-reader",))


def invalid_cel_expression(w: World) -> Outcome:
    return w.scope(
        "guarded",
        tools={"allow": ["payments.refund"]},
        constraints=[
            {"tools": ["payments.refund"], "when": "subject.name == 'x'"},
            {"tools": ["payments.refund"], "when": "secret.value > 3"},
        ],
    )


def cel_syntax_error(w: World) -> Outcome:
    return w.scope(
        "broken",
        tools={"allow": ["deploy.staging"]},
        constraints=[{"tools": ["deploy.*"], "when": "resource.properties.env =="}],
    )


def cel_result_not_boolean(w: World) -> Outcome:
    return w.scope(
        "counting",
        tools={"allow": ["deploy.staging"]},
        constraints=[{"tools": ["deploy.*"], "when": "size(context)"}],
    )


def policy_condition_invalid(w: World) -> Outcome:
    return w.create(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ApprovalPolicy",
            "metadata": {"name": "refunds"},
            "spec": {
                "match": {"actions": ["payments.refund"], "when": "action.properties.amount >"},
                "approvers": {"users": ["finance@example.com"]},
            },
        }
    )


def parent_narrowing_below_its_sub_agent(w: World) -> Outcome:
    w.must(sub_agent_within_parent(w))
    w.must(w.scope("tiny", tools={"allow": ["ci.runs.read"]}))
    patch = {"spec": {"scopeRefs": [{"name": "tiny"}]}}
    return w.run(
        "patch", "agent", "orchestrator", "--type=merge", "-p", json.dumps(patch), user="alice"
    )


def sunset_agent_cannot_be_reactivated(w: World) -> Outcome:
    # Deprecated past its sunsetAt: Retired by the operator, though spec still says
    # Deprecated (which the CRD alone would let go back to Active): the webhook checks
    # the effective phase.
    w.agent("sunset-bot", phase="Retired", state="Deprecated", sunset="2020-01-01T00:00:00Z")
    patch = {"spec": {"lifecycle": {"state": "Active", "sunsetAt": None}}}
    return w.run("patch", "agent", "sunset-bot", "--type=merge", "-p", json.dumps(patch))


def pod_of_deprecated_agent_gets_the_shortest_ttl(w: World) -> Outcome:
    _deployer(w)
    w.agent(
        "old-bot", phase="Deprecated", state="Deprecated", sunset="2099-01-01T00:00:00Z",
        scopes=("deployer",), ttl=1800,
    )  # fmt: skip
    out = w.pod("old-1", label="old-bot")
    (volume,) = w.get("pod", "old-1")["spec"]["volumes"]
    src = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert src["expirationSeconds"] == 600, src  # not the agent's 1800: it is on its way out
    return out


def hand_set_provenance(w: World) -> Outcome:
    body = w.agent_body("bot")
    body["metadata"]["annotations"] = {f"{GROUP}/created-by": "ceo@example.com"}
    return w.create(body, user="eve")


def hand_changed_provenance(w: World) -> Outcome:
    w.must(w.agent("bot", user="alice"))
    return w.run(
        "annotate",
        "agent",
        "bot",
        f"{GROUP}/last-modified-by=ceo@example.com",
        "--overwrite",
        user="eve",
    )


def provenance_of_two_users(w: World) -> Outcome:
    w.must(w.agent("bot", user="alice"))
    out = w.run(
        "patch",
        "agent",
        "bot",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"description": "edited"}}),
        user="bob",
    )
    w.must(out)
    ann = w.get("agent", "bot")["metadata"]["annotations"]
    assert ann[f"{GROUP}/created-by"] == "alice"
    assert ann[f"{GROUP}/last-modified-by"] == "bob"
    return out


CASES: list[tuple[Callable[[World], Outcome], Expect]] = [
    (
        unregistered_pod_in_enforcing_namespace,
        (
            "denied",
            'only runs registered agents (agentidentity.io/enforce=deny): pod "plain" has no '
            "agentidentity.io/agent label",
        ),
    ),
    (pod_of_active_agent, ("allowed", "pod/bot-1 created")),
    (pod_of_deprecated_agent, ("warned", 'agent "old-bot" is Deprecated since')),
    (pod_of_suspended_agent, ("denied", 'agent "paused" is Suspended since')),
    (pod_of_retired_agent, ("denied", 'agent "triage-bot" is Retired since')),
    (pod_of_expired_agent, ("denied", 'agent "late-bot" is Retired since')),
    (pod_of_unknown_agent, ("denied", 'no Agent "ghost" is registered in namespace')),
    (
        service_account_borrowing,
        ("denied", 'uses ServiceAccount "agent-bot" of agent "bot" without the label'),
    ),
    (
        agent_pod_naming_another_agents_service_account,
        (
            "denied",
            'names serviceAccountName "agent-admin-bot", but agent pods run as their agent\'s '
            'ServiceAccount "agent-bot"',
        ),
    ),
    (
        label_spoofing_on_existing_pod,
        ("denied", "label of an existing pod cannot be added, changed or removed (added 'bot')"),
    ),
    (label_removal_on_agent_pod, ("denied", "(removed 'bot')")),
    (warn_mode, ("warned", 'pod "plain" is not a registered agent')),
    (audit_mode, ("allowed", "pod/audited-pod created")),
    (mutation_result, ("allowed", "pod/bot-1 created")),
    (
        sub_agent_wider_rules,
        (
            "denied",
            'agent "child" would be wider than its parent "orchestrator": RBAC rule delete '
            "deployments",
        ),
    ),
    (
        sub_agent_wider_tools,
        (
            "denied",
            "tool 'github.**' is not allowed to the parent",
        ),
    ),
    (sub_agent_wider_egress, ("denied", "network egress")),
    (sub_agent_longer_ttl, ("denied", "token TTL 3600s is longer than the parent's 900s")),
    (sub_agent_within_parent, ("allowed", "agent.agentidentity.io/child created")),
    (
        missing_scope_reference,
        ("denied", 'spec.scopeRefs[0]: AuthorityScope "does-not-exist" does not exist'),
    ),
    (scope_and_agent_in_one_apply, ("allowed", "agent.agentidentity.io/fresh-bot created")),
    (illegal_lifecycle_transition, ("denied", "Retired is terminal and cannot become Active")),
    (
        ttl_above_scope_maximum,
        (
            "denied",
            "spec.token.ttlSeconds 3600 is above maxTokenTTLSeconds 900 of AuthorityScope "
            '"deployer"',
        ),
    ),
    (user_escalating_through_scope, ("denied", "'eve' cannot get secrets (apiGroup 'core')")),
    (
        user_escalating_through_agent_binding,
        (
            "denied",
            "binding agent 'bot' to AuthorityScope 'deployer' would grant permissions 'eve' "
            "does not hold",
        ),
    ),
    (user_with_permissions_succeeds, ("allowed", "agent.agentidentity.io/bot created")),
    (invalid_cel_expression, ("denied", "spec.constraints[1].when:")),
    (cel_syntax_error, ("denied", "spec.constraints[0].when:")),
    (cel_result_not_boolean, ("denied", "spec.constraints[0].when:")),
    (policy_condition_invalid, ("denied", "spec.match.when:")),
    (
        parent_narrowing_below_its_sub_agent,
        ("denied", 'would leave its sub-agent "child" wider than it'),
    ),
    (sunset_agent_cannot_be_reactivated, ("denied", "Retired is terminal")),
    (pod_of_deprecated_agent_gets_the_shortest_ttl, ("warned", 'agent "old-bot" is Deprecated')),
    (hand_set_provenance, ("denied", "cannot be set by hand (you sent 'ceo@example.com')")),
    (hand_changed_provenance, ("denied", "agentidentity.io/last-modified-by")),
    (provenance_of_two_users, ("allowed", "agent.agentidentity.io/bot patched")),
]


@pytest.mark.parametrize(("case", "expect"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_admission(
    case: Callable[[World], Outcome],
    expect: Expect,
    cluster: Any,
    namespace: str,
    users: dict[str, Path],
    admission: AdmissionProcess,
    operator: Any,
) -> None:
    world = World(cluster, namespace, users, admission)
    outcome = case(world)
    kind, fragment = expect
    if kind == "denied":
        assert not outcome.ok, f"expected a denial, got: {outcome.out}"
        assert "denied the request" in outcome.err and fragment in outcome.err, outcome.err
    else:
        assert outcome.ok, outcome.err
        if kind == "warned":
            assert fragment in outcome.warnings, outcome.err
        else:
            assert not outcome.warnings, outcome.err
            assert fragment in outcome.out, outcome.out
    admission.assert_no_traceback()
