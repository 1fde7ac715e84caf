"""Apply an Agent's children idempotently (server-side apply of the fields we own) or delete them.

Server-side apply with our field manager changes only the fields we set, so a
label or annotation a person adds is left alone, and applying an unchanged
object is a no-op (no new resourceVersion, no watch event). Deletion checks
that the child is really owned by this Agent (UID), so we never delete an
object someone else created under the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agent_identity.api import Agent, AuthorityScope
from agent_identity.identity import names
from agent_identity.identity.network import (
    DECISION_API_LABELS,
    DECISION_API_NAMESPACE,
    network_policy,
)
from agent_identity.identity.rbac import role, role_binding
from agent_identity.identity.serviceaccount import service_account
from agent_identity.lifecycle import Child, Desired

FIELD_MANAGER = "agent-identity-operator"
APPLY = "application/apply-patch+yaml"

# Apply order: isolate the network first; delete order: authority before identity.
APPLY_ORDER = (Child.NETWORK_POLICY, Child.SERVICE_ACCOUNT, Child.ROLE, Child.ROLE_BINDING)
DELETE_ORDER = (Child.ROLE_BINDING, Child.ROLE, Child.SERVICE_ACCOUNT, Child.NETWORK_POLICY)

CHILD_NAMES: dict[Child, Callable[[str], str]] = {
    Child.SERVICE_ACCOUNT: names.service_account_name,
    Child.ROLE: names.role_name,
    Child.ROLE_BINDING: names.role_binding_name,
    Child.NETWORK_POLICY: names.network_policy_name,
}


@dataclass
class ApplyOutcome:
    present: frozenset[Child]
    errors: dict[Child, str] = field(default_factory=dict)


class NamespaceTerminating(RuntimeError):
    """The namespace is being deleted: nothing can be created in it, nothing needs to be."""


def _raise_if_terminating(exc: ApiException) -> None:
    if exc.status == 403 and "NamespaceTerminating" in str(exc.body or ""):
        raise NamespaceTerminating(str(exc.reason)) from exc


def not_found(exc: ApiException) -> bool:
    return bool(exc.status == 404)


@dataclass
class ChildApplier:
    api: Any  # kubernetes.client.ApiClient
    decision_namespace: str = DECISION_API_NAMESPACE
    decision_labels: Mapping[str, str] = field(default_factory=lambda: dict(DECISION_API_LABELS))

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)

    def manifest(
        self, child: Child, agent: Agent, scopes: list[AuthorityScope], desired: Desired
    ) -> dict[str, Any]:
        if child == Child.SERVICE_ACCOUNT:
            return service_account(agent)
        if child == Child.ROLE:
            return role(agent, scopes)
        if child == Child.ROLE_BINDING:
            return role_binding(agent)
        return network_policy(
            agent,
            scopes,
            deny_all=desired.network == "deny-all",
            decision_namespace=self.decision_namespace,
            decision_labels=self.decision_labels,
        )

    def _patch(self, child: Child) -> Callable[..., Any]:
        return {
            Child.SERVICE_ACCOUNT: self.core.patch_namespaced_service_account,
            Child.ROLE: self.rbac.patch_namespaced_role,
            Child.ROLE_BINDING: self.rbac.patch_namespaced_role_binding,
            Child.NETWORK_POLICY: self.net.patch_namespaced_network_policy,
        }[child]

    def _read(self, child: Child) -> Callable[..., Any]:
        return {
            Child.SERVICE_ACCOUNT: self.core.read_namespaced_service_account,
            Child.ROLE: self.rbac.read_namespaced_role,
            Child.ROLE_BINDING: self.rbac.read_namespaced_role_binding,
            Child.NETWORK_POLICY: self.net.read_namespaced_network_policy,
        }[child]

    def _delete(self, child: Child) -> Callable[..., Any]:
        return {
            Child.SERVICE_ACCOUNT: self.core.delete_namespaced_service_account,
            Child.ROLE: self.rbac.delete_namespaced_role,
            Child.ROLE_BINDING: self.rbac.delete_namespaced_role_binding,
            Child.NETWORK_POLICY: self.net.delete_namespaced_network_policy,
        }[child]

    def apply(self, agent: Agent, scopes: list[AuthorityScope], desired: Desired) -> ApplyOutcome:
        """Make the children match ``desired``; what exists afterwards, and what failed."""
        namespace = agent.metadata.namespace
        present: set[Child] = set()
        errors: dict[Child, str] = {}
        wanted = desired.present()
        for child in APPLY_ORDER:
            if child not in wanted:
                continue
            body = self.manifest(child, agent, scopes, desired)
            try:
                self._patch(child)(
                    body["metadata"]["name"],
                    namespace,
                    body,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY,
                )
                present.add(child)
            except ApiException as exc:
                _raise_if_terminating(exc)
                errors[child] = f"applying {child.value}: {exc.status} {exc.reason}"
        for child in DELETE_ORDER:
            if child in wanted:
                continue
            try:
                if self.delete_owned(child, agent):
                    continue
            except ApiException as exc:
                errors[child] = f"deleting {child.value}: {exc.status} {exc.reason}"
                present.add(child)
        return ApplyOutcome(frozenset(present), errors)

    def delete_owned(self, child: Child, agent: Agent) -> bool:
        """Delete the child if this Agent owns it; True when it is gone (or not ours)."""
        name = CHILD_NAMES[child](agent.metadata.name)
        namespace = agent.metadata.namespace
        try:
            obj = self._read(child)(name, namespace)
        except ApiException as exc:
            if not_found(exc):
                return True
            raise
        owners = obj.metadata.owner_references or []
        if not any(o.uid == agent.metadata.uid for o in owners):
            return True  # not ours: leave it alone
        try:
            self._delete(child)(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=obj.metadata.uid),
                    propagation_policy="Background",
                ),
            )
        except ApiException as exc:
            if not not_found(exc):
                raise
        return True
