"""Authority arithmetic, pure: is one set of scopes within another, and what does a scope grant.

Used for sub-agents (a child's effective authority must be a subset of its
parent's) and for the RBAC escalation guard (the permissions a scope grants,
one SubjectAccessReview each).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from agent_identity.admission.review import Permission
from agent_identity.api import AuthorityScope, EgressPeer, EgressPort, EgressRule, PolicyRule
from agent_identity.api.patterns import covers

# (apiGroup, resource incl. "/subresource", verb, resourceName or "")
RuleTuple = tuple[str, str, str, str]


def expand_rule(rule: PolicyRule) -> list[RuleTuple]:
    names = rule.resource_names or [""]
    return [
        (g, r, v, n)
        for g, r, v, n in itertools.product(rule.api_groups, rule.resources, rule.verbs, names)
    ]


def _resource_matches(rule_resource: str, resource: str) -> bool:
    # RBAC: '*' matches everything, '*/sub' any resource's subresource 'sub'.
    if rule_resource in ("*", resource):
        return True
    if rule_resource.startswith("*/") and "/" in resource:
        return resource.split("/", 1)[1] == rule_resource[2:]
    return False


def rule_covers(rule: PolicyRule, wanted: RuleTuple) -> bool:
    group, resource, verb, name = wanted
    return (
        ("*" in rule.api_groups or group in rule.api_groups)
        and any(_resource_matches(r, resource) for r in rule.resources)
        and ("*" in rule.verbs or verb in rule.verbs)
        and (not rule.resource_names or (name != "" and name in rule.resource_names))
    )


def describe_tuple(t: RuleTuple) -> str:
    group, resource, verb, name = t
    named = f" named {name!r}" if name else ""
    return f"{verb} {resource}{named} (apiGroup {group or 'core'!r})"


def permissions(namespace: str, rules: Iterable[PolicyRule]) -> list[Permission]:
    """The SubjectAccessReviews that prove a user holds every permission of ``rules``."""
    out: dict[Permission, None] = {}
    for rule in rules:
        for group, resource, verb, name in expand_rule(rule):
            res, _, sub = resource.partition("/")
            out[Permission(namespace, verb, group, res, sub, name)] = None
    return list(out)


# --- tools ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a or not b:
        # only '**' tails can match zero segments
        return all(t == "**" for t in a) and all(t == "**" for t in b)
    if a[0] == "**":
        return _overlaps(a[1:], b) or _overlaps(a, b[1:])
    if b[0] == "**":
        return _overlaps(a, b[1:]) or _overlaps(a[1:], b)
    if a[0] == "*" or b[0] == "*" or a[0] == b[0]:
        return _overlaps(a[1:], b[1:])
    return False


def overlaps(a: str, b: str) -> bool:
    """Whether some action is matched by both patterns."""
    return _overlaps(tuple(a.split(".")), tuple(b.split(".")))


# --- network ----------------------------------------------------------------------------


def _net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def _peer_covers(parent: EgressPeer, child: EgressPeer) -> bool:
    if parent.cidr is not None:
        if child.cidr is None:
            return False
        c, p = _net(child.cidr), _net(parent.cidr)
        if c.version != p.version or not c.subnet_of(p):  # type: ignore[arg-type]
            return False
        # every hole the parent cuts must also be cut (or outside) for the child
        for hole in parent.except_:
            h = _net(hole)
            if h.version != c.version or not h.overlaps(c):
                continue
            if not any(
                h.subnet_of(_net(x))  # type: ignore[arg-type]
                for x in child.except_
                if _net(x).version == h.version
            ):
                return False
        return True
    return child.cidr is None and child.to_wire() == parent.to_wire()


def _port_covers(parent: EgressPort, child: EgressPort) -> bool:
    if parent.protocol != child.protocol:
        return False
    if parent.port is None:
        return True
    if child.port is None:
        return False
    p_end = parent.end_port or parent.port
    c_end = child.end_port or child.port
    return parent.port <= child.port and c_end <= p_end


def egress_rule_covers(parent: EgressRule, child: EgressRule) -> bool:
    if parent.to and (
        not child.to or not all(any(_peer_covers(p, c) for p in parent.to) for c in child.to)
    ):
        return False
    if parent.ports:
        return bool(child.ports) and all(
            any(_port_covers(p, c) for p in parent.ports) for c in child.ports
        )
    return True


# --- the subset check -------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """The union of some scopes' authority (what the decision engine and the Role see)."""

    rules: tuple[PolicyRule, ...]
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    sensitive: tuple[str, ...]
    egress: tuple[EgressRule, ...]
    max_ttl: int | None

    @classmethod
    def of(cls, scopes: Iterable[AuthorityScope]) -> Authority:
        scopes = list(scopes)
        return cls(
            rules=tuple(r for s in scopes for r in s.spec.rules),
            allow=tuple(p for s in scopes for p in s.spec.tools.allow),
            deny=tuple(p for s in scopes for p in s.spec.tools.deny),
            sensitive=tuple(p for s in scopes for p in s.spec.sensitive),
            egress=tuple(e for s in scopes for e in s.spec.network.egress),
            max_ttl=min((s.spec.max_token_ttl_seconds for s in scopes), default=None),
        )


def subset_violation(child: Authority, parent: Authority) -> str | None:
    """Why ``child`` is wider than ``parent`` (the first reason), or None when it is within."""
    for rule in child.rules:
        for t in expand_rule(rule):
            if not any(rule_covers(p, t) for p in parent.rules):
                return f"RBAC rule {describe_tuple(t)} is not granted to the parent"
    for pattern in child.allow:
        if not any(covers(p, pattern) for p in parent.allow):
            if any(covers(p, pattern) for p in parent.sensitive):
                return (
                    f"tool {pattern!r} is allowed freely, but the parent may use it only with "
                    "an approval (it is sensitive there); list it under sensitive"
                )
            return f"tool {pattern!r} is not allowed to the parent"
    for pattern in child.sensitive:
        if not any(covers(p, pattern) for p in (*parent.allow, *parent.sensitive)):
            return f"sensitive tool {pattern!r} is not allowed to the parent"
    for denied in parent.deny:
        for pattern in (*child.allow, *child.sensitive):
            if overlaps(denied, pattern) and not any(covers(d, denied) for d in child.deny):
                return (
                    f"tool pattern {pattern!r} reaches actions the parent denies ({denied!r}); "
                    f"add {denied!r} to a child scope's tools.deny or narrow the pattern"
                )
    for egress in child.egress:
        if not any(egress_rule_covers(p, egress) for p in parent.egress):
            return f"network egress {egress.to_wire()} is not allowed to the parent"
    return None
