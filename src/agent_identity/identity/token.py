"""The projected, audience-bound token of an agent's pods (the admission webhook injects it)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

from agent_identity.api import Agent, AuthorityScope, LifecycleState, Phase
from agent_identity.api.agent import MAX_TOKEN_TTL, MIN_TOKEN_TTL
from agent_identity.api.common import TOKEN_MOUNT_PATH

TOKEN_VOLUME_NAME = "agentidentity-token"
TOKEN_FILE_NAME = "token"
# The file a container reads: <mount path>/<file>.
TOKEN_FILE_PATH = posixpath.join(TOKEN_MOUNT_PATH, TOKEN_FILE_NAME)


def is_deprecated(agent: Agent) -> bool:
    return (
        agent.spec.lifecycle.state == LifecycleState.DEPRECATED
        or agent.status.phase == Phase.DEPRECATED
    )


def token_ttl(agent: Agent, scopes: Iterable[AuthorityScope]) -> int:
    """Seconds a token lives: the agent's TTL capped by every scope; the minimum when Deprecated.

    Kubernetes refuses projected tokens shorter than 600 s, which is also our minimum.
    """
    if is_deprecated(agent):
        return MIN_TOKEN_TTL
    ttl = min(
        [agent.spec.token.ttl_seconds, *(s.spec.max_token_ttl_seconds for s in scopes)],
    )
    return max(MIN_TOKEN_TTL, min(ttl, MAX_TOKEN_TTL))


def token_volume(
    agent: Agent, scopes: Iterable[AuthorityScope]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod volume and the container volumeMount of the agent's token (pure).

    The kubelet refreshes a projected token before it expires, so a container
    re-reads ``TOKEN_FILE_PATH`` rather than caching it.
    """
    volume = {
        "name": TOKEN_VOLUME_NAME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": agent.spec.token.audience,
                        "expirationSeconds": token_ttl(agent, scopes),
                        "path": TOKEN_FILE_NAME,
                    }
                }
            ]
        },
    }
    mount = {"name": TOKEN_VOLUME_NAME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": True}
    return volume, mount
