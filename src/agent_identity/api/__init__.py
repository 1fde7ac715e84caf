"""The resources of agentidentity.io/v1alpha1 as pydantic models: the single source of truth.

The CRD generator, the admission webhooks and the reconciler all parse with
these models, so admission and reconcile can never disagree.
"""

from agent_identity.api.agent import (
    Agent,
    AgentIdentity,
    AgentSpec,
    AgentStatus,
    EffectiveAuthority,
    HistoryEntry,
    Lifecycle,
    Platform,
    PlatformType,
    TokenSpec,
)
from agent_identity.api.approval import (
    ApprovalDecision,
    ApprovalMatch,
    ApprovalPolicy,
    ApprovalPolicySpec,
    ApprovalRequest,
    ApprovalRequestSpec,
    ApprovalRequestStatus,
    ApprovalState,
    Approvers,
    Grant,
    ResourceRef,
    Verdict,
)
from agent_identity.api.common import (
    ADMITTING_PHASES,
    Condition,
    LabelSelector,
    LifecycleState,
    LocalObjectReference,
    ObjectMeta,
    Phase,
)
from agent_identity.api.scope import (
    AuthorityScope,
    AuthorityScopeSpec,
    AuthorityScopeStatus,
    Constraint,
    EgressPeer,
    EgressPort,
    EgressRule,
    NetworkSpec,
    PolicyRule,
    ToolRules,
)

RESOURCE_MODELS = (Agent, AuthorityScope, ApprovalPolicy, ApprovalRequest)

__all__ = [
    "ADMITTING_PHASES",
    "RESOURCE_MODELS",
    "Agent",
    "AgentIdentity",
    "AgentSpec",
    "AgentStatus",
    "ApprovalDecision",
    "ApprovalMatch",
    "ApprovalPolicy",
    "ApprovalPolicySpec",
    "ApprovalRequest",
    "ApprovalRequestSpec",
    "ApprovalRequestStatus",
    "ApprovalState",
    "Approvers",
    "AuthorityScope",
    "AuthorityScopeSpec",
    "AuthorityScopeStatus",
    "Condition",
    "Constraint",
    "EffectiveAuthority",
    "EgressPeer",
    "EgressPort",
    "EgressRule",
    "Grant",
    "HistoryEntry",
    "LabelSelector",
    "Lifecycle",
    "LifecycleState",
    "LocalObjectReference",
    "NetworkSpec",
    "ObjectMeta",
    "Phase",
    "Platform",
    "PlatformType",
    "PolicyRule",
    "ResourceRef",
    "TokenSpec",
    "ToolRules",
    "Verdict",
]
