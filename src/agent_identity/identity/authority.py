"""The effective authority of an agent: the union of its scopes, as a digest and a summary."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from agent_identity.api import AuthorityScope, EffectiveAuthority
from agent_identity.identity.network import scope_egress
from agent_identity.identity.rbac import union_rules


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def canonical_authority(scopes: Iterable[AuthorityScope]) -> dict[str, Any]:
    """The union of what the scopes grant, in a canonical form (order-independent)."""
    scopes = list(scopes)
    constraints = {
        json.dumps(c.to_wire(), sort_keys=True): c.to_wire()
        for s in scopes
        for c in s.spec.constraints
    }
    ttls = [s.spec.max_token_ttl_seconds for s in scopes]
    return {
        "rules": union_rules(scopes),
        "tools": {
            "allow": sorted({p for s in scopes for p in s.spec.tools.allow}),
            "deny": sorted({p for s in scopes for p in s.spec.tools.deny}),
        },
        "sensitive": sorted({p for s in scopes for p in s.spec.sensitive}),
        "constraints": [constraints[k] for k in sorted(constraints)],
        "egress": scope_egress(scopes),
        "maxTokenTTLSeconds": min(ttls) if ttls else None,
    }


def effective_authority(scopes: Iterable[AuthorityScope]) -> EffectiveAuthority:
    """Digest (sha256 of the canonical JSON) and a one-line summary of the scopes' union."""
    scopes = list(scopes)
    canon = canonical_authority(scopes)
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    tools = canon["tools"]
    summary = (
        ", ".join(
            [
                _plural(len(canon["rules"]), "rule"),
                f"{len(tools['allow'])} allowed",
                f"{len(tools['deny'])} denied",
                f"{len(canon['sensitive'])} sensitive",
                _plural(len(canon["constraints"]), "constraint"),
                _plural(len(canon["egress"]), "egress rule"),
            ]
        )
        + f" from {_plural(len(scopes), 'scope')}"
    )
    return EffectiveAuthority(
        digest="sha256:" + hashlib.sha256(blob).hexdigest(),
        summary=summary,
        scopes=sorted({s.metadata.name for s in scopes}),
        max_token_ttl_seconds=canon["maxTokenTTLSeconds"],
    )
