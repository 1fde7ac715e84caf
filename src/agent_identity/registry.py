"""The in-memory registry the admission webhooks and the decision API answer from.

Fed by watches (the shell in ``admission/`` calls ``upsert``/``delete`` on every
event); read on every request with no API call. Pure: it holds parsed models
and answers lookups, no I/O. An object that does not parse is kept as
``invalid`` with the reason, so a request about it is refused with that reason
rather than treated as missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent_identity.api import Agent, ApprovalPolicy, ApprovalRequest, AuthorityScope

Key = tuple[str, str]  # (namespace, name)
KINDS = ("Agent", "AuthorityScope", "ApprovalPolicy", "ApprovalRequest")
_MODELS: dict[str, Any] = {
    "Agent": Agent,
    "AuthorityScope": AuthorityScope,
    "ApprovalPolicy": ApprovalPolicy,
    "ApprovalRequest": ApprovalRequest,
}


def _key(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@dataclass
class Registry:
    agents: dict[Key, Agent] = field(default_factory=dict)
    scopes: dict[Key, AuthorityScope] = field(default_factory=dict)
    policies: dict[Key, ApprovalPolicy] = field(default_factory=dict)
    approvals: dict[Key, ApprovalRequest] = field(default_factory=dict)
    # objects that exist but do not parse: (kind, ns, name) -> the validation error
    invalid: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # kinds whose initial list has been loaded
    synced: set[str] = field(default_factory=set)
    # scope key -> agent names bound to it, kept in step with ``agents``
    _bound: dict[Key, set[str]] = field(default_factory=dict)

    def _store(self, kind: str) -> dict[Key, Any]:
        stores: dict[str, dict[Key, Any]] = {
            "Agent": self.agents,
            "AuthorityScope": self.scopes,
            "ApprovalPolicy": self.policies,
            "ApprovalRequest": self.approvals,
        }
        return stores[kind]

    def upsert(self, body: dict[str, Any]) -> None:
        """Add or replace one object from a watch event (a raw Kubernetes dict)."""
        kind = str(body.get("kind") or "")
        if kind not in _MODELS:
            raise ValueError(f"the registry does not hold {kind!r}")
        key = _key(body)
        try:
            model = _MODELS[kind].model_validate(body)
        except ValidationError as exc:
            self.delete(kind, *key)
            self.invalid[(kind, *key)] = _first_error(exc)
            return
        self.invalid.pop((kind, *key), None)
        if kind == "Agent":
            self._unbind(key)
            for ref in model.spec.scope_refs:
                self._bound.setdefault((key[0], ref.name), set()).add(key[1])
        self._store(kind)[key] = model

    def delete(self, kind: str, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.invalid.pop((kind, namespace, name), None)
        if kind == "Agent":
            self._unbind(key)
        self._store(kind).pop(key, None)

    def replace_all(self, kind: str, bodies: Iterable[dict[str, Any]]) -> None:
        """Load a full list (after a watch (re)starts) and mark the kind synced."""
        for key in list(self._store(kind)):
            self.delete(kind, *key)
        for k, ns, name in [i for i in self.invalid if i[0] == kind]:
            self.invalid.pop((k, ns, name), None)
        for body in bodies:
            self.upsert({**body, "kind": kind})
        self.synced.add(kind)

    def _unbind(self, key: Key) -> None:
        old = self.agents.get(key)
        if old is None:
            return
        for ref in old.spec.scope_refs:
            names = self._bound.get((key[0], ref.name))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._bound[(key[0], ref.name)]

    # lookups ---------------------------------------------------------------

    def is_synced(self) -> bool:
        return all(kind in self.synced for kind in KINDS)

    def agent(self, namespace: str, name: str) -> Agent | None:
        return self.agents.get((namespace, name))

    def invalid_reason(self, kind: str, namespace: str, name: str) -> str | None:
        return self.invalid.get((kind, namespace, name))

    def scope(self, namespace: str, name: str) -> AuthorityScope | None:
        return self.scopes.get((namespace, name))

    def scopes_of(self, agent: Agent) -> tuple[list[AuthorityScope], list[str]]:
        """The agent's bound scopes that exist, and the names of those that do not."""
        namespace = agent.metadata.namespace or ""
        found: list[AuthorityScope] = []
        missing: list[str] = []
        for ref in agent.spec.scope_refs:
            scope = self.scopes.get((namespace, ref.name))
            if scope is None:
                missing.append(ref.name)
            else:
                found.append(scope)
        return found, missing

    def agents_bound_to(self, namespace: str, scope_name: str) -> list[str]:
        return sorted(self._bound.get((namespace, scope_name), ()))

    def policies_in(self, namespace: str) -> list[ApprovalPolicy]:
        return [p for (ns, _), p in sorted(self.policies.items()) if ns == namespace]

    def approvals_of(self, namespace: str, agent_name: str) -> list[ApprovalRequest]:
        return [
            r
            for (ns, _), r in sorted(self.approvals.items())
            if ns == namespace and r.spec.agent.name == agent_name
        ]

    def approval(self, namespace: str, name: str) -> ApprovalRequest | None:
        return self.approvals.get((namespace, name))

    def sub_agents(self, namespace: str, parent: str | None = None) -> list[Agent]:
        """Agents of ``namespace`` with a parentRef (to ``parent`` only, when given), by name."""
        return [
            a
            for (ns, _), a in sorted(self.agents.items())
            if ns == namespace
            and a.spec.parent_ref is not None
            and (parent is None or a.spec.parent_ref.name == parent)
        ]

    def all_agents(self) -> list[Agent]:
        return [a for _, a in sorted(self.agents.items())]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))
