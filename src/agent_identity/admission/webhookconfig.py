"""Our own Validating/MutatingWebhookConfiguration, built as plain dicts (pure).

Why not kopf's: it hard-codes a 30 s timeout and has no namespaceSelector.

Which pods are checked, and what happens when the webhook is down
-----------------------------------------------------------------
``kube-system`` and the operator's namespace are never sent to us (the
admission pods must be able to start while it is down). Elsewhere:

==========================  =========================================  =========  ========
webhook                     selects                                    path       failure
==========================  =========================================  =========  ========
agent-pods (V + M)          pods labelled ``agentidentity.io/agent``   /…/pods    Fail
                            (old *or* new object: catches label
                            removal and addition on UPDATE)
agent-sa-pods (V)           unlabelled pods whose serviceAccountName   /…/pods    Fail
                            starts with ``agent-`` (matchConditions,
                            CEL): the borrowing check, fail closed
                            without sending every pod of the cluster
enforce-deny (V)            unlabelled pods in namespaces labelled     …/deny     Fail
                            ``agentidentity.io/enforce`` with any
                            value but warn/audit (a typo enforces)
enforce-warn / -audit (V)   the same for ``warn`` / ``audit``          …/warn     Ignore
                                                                       …/audit
resources (V)               Agents, AuthorityScopes, ApprovalPolicies  …           Fail
provenance (M)              the same                                   …           Fail
approvals (M)               approvalrequests/status UPDATE             …           Fail
==========================  =========================================  =========  ========

So an outage blocks agent pods, borrowing attempts and every pod of a
``deny`` namespace (fail closed), while ``warn``/``audit`` namespaces and
ordinary pods elsewhere keep working: warn and audit are meant never to block.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from agent_identity import GROUP, VERSION
from agent_identity.api.common import AGENT_LABEL, ENFORCE_LABEL
from agent_identity.identity.names import PREFIX

DEFAULT_NAME = "agent-identity"
OPERATOR_NAMESPACE = "agent-identity-system"
TIMEOUT_SECONDS = 5

PATH_VALIDATE_PODS = "/validate/pods"
PATH_VALIDATE_PODS_ENFORCE = "/validate/pods/{mode}"
PATH_MUTATE_PODS = "/mutate/pods"
PATH_VALIDATE_RESOURCES = "/validate/resources"
PATH_MUTATE_PROVENANCE = "/mutate/provenance"
PATH_MUTATE_APPROVAL_STATUS = "/mutate/approvalrequests-status"
PATH_VALIDATE_APPROVAL_REQUESTS = "/validate/approvalrequests"

OUR_RESOURCES = ["agents", "authorityscopes", "approvalpolicies"]


@dataclass(frozen=True)
class ServiceRef:
    name: str
    namespace: str
    port: int = 443


def _client(
    path: str, ca_bundle: bytes, url: str | None, service: ServiceRef | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if service is not None:
        out["service"] = {
            "name": service.name,
            "namespace": service.namespace,
            "port": service.port,
            "path": path,
        }
    elif url is not None:
        out["url"] = url.rstrip("/") + path
    else:
        raise ValueError("a webhook needs a url or a service")
    return out


def _pod_rule(operations: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": operations,
        "resources": ["pods"],
        "scope": "Namespaced",
    }


def _our_rule(resources: list[str], operations: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [GROUP],
        "apiVersions": [VERSION],
        "operations": operations,
        "resources": resources,
        "scope": "Namespaced",
    }


def _excluded(operator_namespace: str) -> dict[str, Any]:
    return {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": sorted({"kube-system", operator_namespace}),
    }


def webhook_configurations(
    *,
    ca_bundle: bytes,
    url: str | None = None,
    service: ServiceRef | None = None,
    name: str = DEFAULT_NAME,
    operator_namespace: str = OPERATOR_NAMESPACE,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ValidatingWebhookConfiguration, MutatingWebhookConfiguration) named ``name``.

    ``url`` (development: the process on 127.0.0.1) or ``service`` (in a
    cluster) says where the API server sends reviews; ``ca_bundle`` is the PEM
    CA that signed the serving certificate.
    """
    excluded = _excluded(operator_namespace)
    labelled = {"matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}]}
    unlabelled = {"matchExpressions": [{"key": AGENT_LABEL, "operator": "DoesNotExist"}]}

    def hook(
        short: str,
        path: str,
        rules: list[dict[str, Any]],
        failure: str,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "name": f"{short}.{GROUP}",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "clientConfig": _client(path, ca_bundle, url, service),
            "rules": rules,
            **extra,
        }

    def pods_in(*expressions: dict[str, Any]) -> dict[str, Any]:
        return {"matchExpressions": [excluded, *expressions]}

    enforce = {"key": ENFORCE_LABEL, "operator": "Exists"}
    validating = [
        hook(
            "agent-pods",
            PATH_VALIDATE_PODS,
            [_pod_rule(["CREATE", "UPDATE"])],
            "Fail",
            namespaceSelector=pods_in(),
            objectSelector=labelled,
        ),
        hook(
            "agent-sa-pods",
            PATH_VALIDATE_PODS,
            [_pod_rule(["CREATE"])],
            "Fail",
            namespaceSelector=pods_in(),
            objectSelector=unlabelled,
            matchConditions=[
                {
                    "name": "uses-an-agent-service-account",
                    "expression": "has(object.spec.serviceAccountName) && "
                    f"object.spec.serviceAccountName.startsWith('{PREFIX}')",
                }
            ],
        ),
        hook(
            "enforce-deny",
            PATH_VALIDATE_PODS_ENFORCE.format(mode="deny"),
            [_pod_rule(["CREATE"])],
            "Fail",
            namespaceSelector=pods_in(
                enforce, {"key": ENFORCE_LABEL, "operator": "NotIn", "values": ["warn", "audit"]}
            ),
            objectSelector=unlabelled,
        ),
        *(
            hook(
                f"enforce-{mode}",
                PATH_VALIDATE_PODS_ENFORCE.format(mode=mode),
                [_pod_rule(["CREATE"])],
                "Ignore",
                namespaceSelector=pods_in(
                    {"key": ENFORCE_LABEL, "operator": "In", "values": [mode]}
                ),
                objectSelector=unlabelled,
            )
            for mode in ("warn", "audit")
        ),
        hook(
            "resources",
            PATH_VALIDATE_RESOURCES,
            [_our_rule(OUR_RESOURCES, ["CREATE", "UPDATE"])],
            "Fail",
        ),
        # Only the decision API opens ApprovalRequests (it fills in who may approve).
        hook(
            "approval-requests",
            PATH_VALIDATE_APPROVAL_REQUESTS,
            [_our_rule(["approvalrequests"], ["CREATE"])],
            "Fail",
        ),
    ]
    mutating = [
        hook(
            "agent-pods",
            PATH_MUTATE_PODS,
            [_pod_rule(["CREATE"])],
            "Fail",
            namespaceSelector=pods_in(),
            objectSelector=labelled,
            reinvocationPolicy="Never",
        ),
        hook(
            "provenance",
            PATH_MUTATE_PROVENANCE,
            [_our_rule(OUR_RESOURCES, ["CREATE", "UPDATE"])],
            "Fail",
            reinvocationPolicy="Never",
        ),
        hook(
            "approvals",
            PATH_MUTATE_APPROVAL_STATUS,
            [_our_rule(["approvalrequests/status"], ["UPDATE"])],
            "Fail",
            reinvocationPolicy="Never",
        ),
    ]
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "agent-identity"}}
    return (
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": validating,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": dict(meta),
            "webhooks": mutating,
        },
    )
