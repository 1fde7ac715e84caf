"""Pod admission, pure: which pods may run as which agent, and what to inject into them.

Validating (CREATE and UPDATE):

* a pod labelled ``agentidentity.io/agent: NAME`` must name an Agent of its
  namespace whose effective phase admits pods (Active; Deprecated with a
  warning); Pending, Suspended, Retired (incl. expired or past sunset), missing,
  unparseable (e.g. no valid owner) and external-platform agents are denied;
* an agent pod may not name another ServiceAccount than its agent's, and a pod
  without the label may not use an agent's ServiceAccount (no borrowing);
* the agent label of an existing pod cannot be added, changed or removed;
* in namespaces labelled ``agentidentity.io/enforce`` every other pod is
  denied (``deny``), warned about (``warn``) or recorded (``audit``).

Mutating (CREATE of an admitted agent pod): the agent's ServiceAccount, the
default API token off, a projected audience-bound token mounted read-only in
every container (incl. init containers) and the decision API's URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from agent_identity import audit
from agent_identity.admission.agentstate import effective_state
from agent_identity.admission.review import Decision, allow, deny, format_time
from agent_identity.api import Phase, PlatformType
from agent_identity.api.common import (
    AGENT_LABEL,
    DECISIONS_CA_ENV,
    DECISIONS_URL_ENV,
    ENFORCE_LABEL,
)
from agent_identity.identity import token_ttl, token_volume
from agent_identity.identity.names import agent_name_from_service_account, service_account_name
from agent_identity.identity.token import TOKEN_VOLUME_NAME
from agent_identity.registry import Registry

EnforceMode = Literal["deny", "warn", "audit"]
ENFORCE_MODES: tuple[EnforceMode, ...] = ("deny", "warn", "audit")
TOKEN_VOLUME = TOKEN_VOLUME_NAME
# The ServiceAccount admission plugin mounts the API token as kube-api-access-<random>.
_API_TOKEN_VOLUME_PREFIX = "kube-api-access-"


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _pod_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName", "") + "<generated>")


def _service_account(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "")


def validate_pod(
    request: dict[str, Any],
    registry: Registry,
    now: datetime,
    enforce: EnforceMode | None = None,
) -> Decision:
    """Decide a pod CREATE or UPDATE; ``enforce``: the namespace's mode (from the path)."""
    operation = request.get("operation")
    pod: dict[str, Any] = request.get("object") or {}
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    name = _pod_name(pod)
    label = _labels(pod).get(AGENT_LABEL)

    if operation == "UPDATE":
        old_label = _labels(request.get("oldObject")).get(AGENT_LABEL)
        if old_label != label:
            change = (
                f"added {label!r}"
                if old_label is None
                else f"removed {old_label!r}"
                if label is None
                else f"changed {old_label!r} to {label!r}"
            )
            return deny(
                f'pod "{name}": the {AGENT_LABEL} label of an existing pod cannot be added, '
                f"changed or removed ({change}); an identity is fixed at creation: delete the "
                "pod and create a new one with the label you need",
                "AgentLabelChanged",
            )
        # Other updates of running pods (finalizers, labels) are not identity changes.
        return allow()
    if operation != "CREATE":
        return allow()

    sa = _service_account(pod)
    if label is not None:
        return _validate_agent_pod(registry, now, namespace, name, label, sa)

    borrowed = agent_name_from_service_account(sa)
    if borrowed is not None and (
        registry.agent(namespace, borrowed) is not None
        or registry.invalid_reason("Agent", namespace, borrowed) is not None
    ):
        return deny(
            f'pod "{name}" uses ServiceAccount "{sa}" of agent "{borrowed}" without the label '
            f"{AGENT_LABEL}: {borrowed}; an agent's identity is not borrowed: add the label "
            "(the pod is then checked and gets the agent's token) or use another "
            "ServiceAccount",
            "ServiceAccountBorrowed",
            confirm=[("Agent", namespace, borrowed)],
        )

    if enforce == "deny":
        return deny(
            f'namespace "{namespace}" only runs registered agents ({ENFORCE_LABEL}=deny): pod '
            f'"{name}" has no {AGENT_LABEL} label; label it with the name of a registered, '
            f"Active Agent of this namespace, or run it in a namespace that does not enforce",
            "UnregisteredPod",
        )
    if enforce == "warn":
        return allow(
            "UnregisteredPodWarned",
            warnings=[
                f'pod "{name}" is not a registered agent (namespace "{namespace}" has '
                f"{ENFORCE_LABEL}=warn); label it {AGENT_LABEL}: <agent name> with a registered "
                "Agent"
            ],
        )
    if enforce == "audit":
        user = str((request.get("userInfo") or {}).get("username") or "")
        return allow(
            "UnregisteredPodAudited",
            audit=[
                audit.record(
                    "admission",
                    namespace=namespace,
                    actor=user,
                    outcome="audited",
                    reason="UnregisteredPod",
                    request_id=str(request.get("uid") or "") or None,
                    pod=name,
                    serviceAccount=sa or "default",
                    message=f'pod "{name}" is not a registered agent ({ENFORCE_LABEL}=audit)',
                )
            ],
        )
    return allow()


def _validate_agent_pod(
    registry: Registry, now: datetime, namespace: str, pod: str, label: str, sa: str
) -> Decision:
    confirm = [("Agent", namespace, label)]
    invalid = registry.invalid_reason("Agent", namespace, label)
    if invalid is not None:
        return deny(
            f'pod "{pod}": agent "{label}" in namespace "{namespace}" is not valid ({invalid}); '
            f"fix the Agent (kubectl edit agent {label} -n {namespace}) before starting its pods",
            "AgentInvalid",
            confirm=confirm,
        )
    agent = registry.agent(namespace, label)
    if agent is None:
        return deny(
            f'pod "{pod}" is labelled {AGENT_LABEL}: {label}, but no Agent "{label}" is '
            f'registered in namespace "{namespace}"; register it (kubectl apply an Agent with '
            "spec.owner) or correct the label",
            "AgentNotFound",
            confirm=confirm,
        )
    expected_sa = service_account_name(label)
    if sa not in ("", "default", expected_sa):
        return deny(
            f'pod "{pod}" of agent "{label}" names serviceAccountName "{sa}", but agent pods run '
            f'as their agent\'s ServiceAccount "{expected_sa}"; remove spec.serviceAccountName '
            "(the webhook sets it): a pod cannot borrow another identity",
            "ServiceAccountMismatch",
        )
    if agent.spec.platform.type == PlatformType.EXTERNAL:
        return deny(
            f'pod "{pod}": agent "{label}" is registered on the external platform '
            f'"{agent.spec.platform.provider}", so it does not run pods here; register a '
            "kubernetes Agent for this workload",
            "AgentExternal",
            confirm=confirm,
        )
    state = effective_state(agent, now)
    since = format_time(state.since)
    if state.phase == Phase.ACTIVE:
        return allow()
    if state.phase == Phase.DEPRECATED:
        sunset = format_time(agent.spec.lifecycle.sunset_at)
        return allow(
            "AgentDeprecated",
            warnings=[
                f'agent "{label}" is Deprecated since {since} and retires at {sunset}; its pods '
                "get the shortest token lifetime: move this workload to a successor Agent"
            ],
        )
    if state.phase == Phase.SUSPENDED:
        return deny(
            f'agent "{label}" is Suspended since {since}: its pods are blocked; resume it '
            f"(kubectl agent resume {label} -n {namespace}, i.e. spec.lifecycle.state: Active) "
            "and create the pod again",
            "AgentSuspended",
            confirm=confirm,
        )
    if state.phase == Phase.RETIRED:
        cause = {"expired": " (spec.lifecycle.expiresAt passed)", "sunset": " (sunsetAt passed)"}
        return deny(
            f'agent "{label}" is Retired since {since}{cause.get(state.why, "")}: Retired is '
            "terminal; register a new Agent and label the pod with its name",
            "AgentRetired",
            confirm=confirm,
        )
    return deny(
        f'agent "{label}" is not provisioned yet (phase {state.phase or "unknown"}): check '
        f"kubectl describe agent {label} -n {namespace} (a valid spec.owner and existing "
        "scopes are needed) and create the pod once it is Active",
        "AgentNotReady",
        confirm=confirm,
    )


# --- mutation -----------------------------------------------------------------------------


def mutate_pod(
    request: dict[str, Any],
    registry: Registry,
    now: datetime,
    decisions_url: str,
    decisions_ca: str | None = None,
) -> Decision:
    """The JSONPatch that turns an admitted agent pod into one running as its agent.

    ``decisions_ca``: the PEM CA bundle of the decision API's HTTPS certificate (None
    for plain HTTP), set beside its URL so the pod verifies whom it asks.
    """
    pod: dict[str, Any] = request.get("object") or {}
    label = _labels(pod).get(AGENT_LABEL)
    if request.get("operation") != "CREATE" or label is None:
        return allow()
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    # Refusals are the validating webhook's job; mutate only what it will admit.
    verdict = validate_pod(request, registry, now)
    if not verdict.allowed:
        return allow("NotMutated")
    agent = registry.agent(namespace, label)
    assert agent is not None
    scopes, _missing = registry.scopes_of(agent)
    volume, mount = token_volume(agent, scopes)
    ttl = token_ttl(agent, scopes)
    spec = pod.get("spec") or {}
    sa = service_account_name(label)

    removed = {
        str(v.get("name"))
        for v in spec.get("volumes") or []
        if str(v.get("name", "")).startswith(_API_TOKEN_VOLUME_PREFIX) and "projected" in v
    } | {TOKEN_VOLUME}
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in removed]
    volumes.append(volume)
    env = [{"name": DECISIONS_URL_ENV, "value": decisions_url}]
    if decisions_ca:
        env.append({"name": DECISIONS_CA_ENV, "value": decisions_ca})
    ours = {DECISIONS_URL_ENV, DECISIONS_CA_ENV}

    def with_token(container: dict[str, Any]) -> dict[str, Any]:
        out = dict(container)
        mounts = [
            m
            for m in container.get("volumeMounts") or []
            if m.get("name") not in removed and m.get("mountPath") != mount["mountPath"]
        ]
        out["volumeMounts"] = [*mounts, mount]
        envs = [e for e in container.get("env") or [] if e.get("name") not in ours]
        out["env"] = [*envs, *env]
        return out

    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/serviceAccountName", "value": sa},
        {"op": "add", "path": "/spec/automountServiceAccountToken", "value": False},
        {"op": "add", "path": "/spec/volumes", "value": volumes},
        {
            "op": "add",
            "path": "/spec/containers",
            "value": [with_token(c) for c in spec.get("containers") or []],
        },
    ]
    if "serviceAccount" in spec:
        patch.append({"op": "add", "path": "/spec/serviceAccount", "value": sa})
    if spec.get("initContainers"):
        patch.append(
            {
                "op": "add",
                "path": "/spec/initContainers",
                "value": [with_token(c) for c in spec["initContainers"]],
            }
        )
    # Warnings come from the validating webhook, once.
    return allow(verdict.reason, patch=patch, token_ttl=ttl)
