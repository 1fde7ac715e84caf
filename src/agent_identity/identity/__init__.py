"""Pure builders of an Agent's children: ServiceAccount, RBAC, NetworkPolicy, token volume.

No I/O, no kopf, no Kubernetes client: (Agent, scopes) in, plain dicts out.
"""

from agent_identity.identity.authority import canonical_authority, effective_authority
from agent_identity.identity.meta import child_labels, owner_reference
from agent_identity.identity.network import network_policy
from agent_identity.identity.rbac import role, role_binding, union_rules
from agent_identity.identity.serviceaccount import service_account
from agent_identity.identity.token import TOKEN_FILE_PATH, token_ttl, token_volume

__all__ = [
    "TOKEN_FILE_PATH",
    "canonical_authority",
    "child_labels",
    "effective_authority",
    "network_policy",
    "owner_reference",
    "role",
    "role_binding",
    "service_account",
    "token_ttl",
    "token_volume",
    "union_rules",
]
