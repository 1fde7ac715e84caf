"""ApprovalPolicy (who must approve which actions) and ApprovalRequest (one ask)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from agent_identity import API_VERSION
from agent_identity.api.common import (
    CEL_RULES,
    SET_LIST,
    Condition,
    LabelSelector,
    LocalObjectReference,
    Model,
    ObjectMeta,
    ToolPattern,
    cel,
    unique_items,
)

DEFAULT_MIN_APPROVALS = 1
DEFAULT_TIMEOUT_SECONDS = 3600
DEFAULT_GRANT_SECONDS = 900


class ApprovalMatch(Model):
    """Which requests a policy applies to; every set field must match."""

    actions: Annotated[list[ToolPattern], unique_items("spec.match.actions")] = Field(
        min_length=1,
        max_length=256,
        description="Patterns of the actions that need approval.",
        json_schema_extra=SET_LIST,
    )
    agent_selector: LabelSelector | None = Field(
        default=None, description="Agents by label; empty or absent matches every agent."
    )
    scopes: Annotated[list[str], unique_items("spec.match.scopes")] = Field(
        default_factory=list,
        max_length=32,
        description="Only agents bound to one of these AuthorityScopes; empty matches any.",
        json_schema_extra=SET_LIST,
    )
    when: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="CEL over subject, action, resource, context and request; the policy "
        "escalates only when it is true.",
    )


class Approvers(Model):
    """The people who may decide."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "(has(self.users) && self.users.size() > 0) || "
                    "(has(self.groups) && self.groups.size() > 0)",
                    "spec.approvers: name at least one user or group",
                )
            ]
        }
    }

    users: Annotated[list[str], unique_items("spec.approvers.users")] = Field(
        default_factory=list,
        max_length=64,
        description="Kubernetes user names.",
        json_schema_extra=SET_LIST,
    )
    groups: Annotated[list[str], unique_items("spec.approvers.groups")] = Field(
        default_factory=list,
        max_length=64,
        description="Kubernetes group names.",
        json_schema_extra=SET_LIST,
    )

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not self.users and not self.groups:
            raise ValueError("spec.approvers: name at least one user or group")
        return self


class ApprovalPolicySpec(Model):
    """Which actions need approval, who approves, the quorum and how long things last."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "(has(self.approvers.groups) && self.approvers.groups.size() > 0) || "
                    "self.minApprovals <= (has(self.approvers.users) ? "
                    "self.approvers.users.size() : 0)",
                    "spec.minApprovals is more than the number of approvers.users; lower it or "
                    "name more approvers",
                )
            ]
        }
    }

    match: ApprovalMatch = Field(description="Which requests need approval.")
    approvers: Approvers = Field(description="Who may approve or deny.")
    min_approvals: int = Field(
        default=DEFAULT_MIN_APPROVALS,
        ge=1,
        le=16,
        description="Quorum: approvals from distinct people needed (default 1).",
    )
    timeout_seconds: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=60,
        le=7 * 86400,
        description="How long a request waits for decisions before it expires (default 3600).",
    )
    grant_seconds: int = Field(
        default=DEFAULT_GRANT_SECONDS,
        ge=1,
        le=86400,
        description="How long an approval stays usable (default 900).",
    )

    @model_validator(mode="after")
    def _quorum_possible(self) -> ApprovalPolicySpec:
        if not self.approvers.groups and self.min_approvals > len(self.approvers.users):
            raise ValueError(
                "spec.minApprovals is more than the number of approvers.users; lower it or "
                "name more approvers"
            )
        return self


class ApprovalPolicyStatus(Model):
    """What the operator observed about the policy."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(default=None, description="Generation observed.")


class ApprovalPolicy(Model):
    """Which actions need which approvers."""

    KIND: ClassVar[str] = "ApprovalPolicy"
    PLURAL: ClassVar[str] = "approvalpolicies"
    ROOT_RULES: ClassVar[list[JsonDict]] = []

    api_version: Literal["agentidentity.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ApprovalPolicy"] = "ApprovalPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ApprovalPolicySpec
    status: ApprovalPolicyStatus = Field(default_factory=ApprovalPolicyStatus)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ApprovalPolicy:
        return cls.model_validate(body)


class ApprovalState(enum.StrEnum):
    """Where an ApprovalRequest stands."""

    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    EXPIRED = "Expired"


class Verdict(enum.StrEnum):
    """One approver's decision."""

    APPROVE = "Approve"
    DENY = "Deny"


class ResourceRef(Model):
    """The AuthZEN resource the action is on."""

    type: str = Field(min_length=1, max_length=253, description="Resource type, e.g. service.")
    id: str = Field(min_length=1, max_length=1024, description="Resource id, e.g. payments-api.")


class ApprovalRequestSpec(Model):
    """What was asked; written once by the decision API, never changed."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "self == oldSelf",
                    "spec of an ApprovalRequest is immutable; open a new request instead",
                )
            ]
        }
    }

    agent: LocalObjectReference = Field(description="The agent that asked.")
    agent_uid: str = Field(description="UID of the agent when it asked.")
    action: str = Field(
        min_length=1, max_length=253, description="The action, e.g. deploy.production."
    )
    resource: ResourceRef = Field(description="The resource the action is on.")
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="The request's context, as the caller sent it.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    requested_at: datetime = Field(description="When it was first asked.")
    requested_by: str = Field(description="The authenticated caller that asked.")
    policies: Annotated[list[str], unique_items("spec.policies")] = Field(
        default_factory=list,
        max_length=64,
        description="Matching ApprovalPolicies.",
        json_schema_extra=SET_LIST,
    )
    approvers: Approvers = Field(description="Who may decide (union of the matching policies).")
    min_approvals: int = Field(default=DEFAULT_MIN_APPROVALS, ge=1, description="Quorum.")
    expires_at: datetime = Field(description="After this the request can no longer be decided.")
    grant_seconds: int = Field(
        default=DEFAULT_GRANT_SECONDS, ge=1, description="How long an approval stays usable."
    )


class ApprovalDecision(Model):
    """One person's decision; appended, never rewritten."""

    approver: str = Field(description="Who decided, from the authenticated request.")
    verdict: Verdict = Field(description="Approve or Deny.")
    reason: str = Field(default="", max_length=1024, description="Why.")
    at: datetime = Field(description="When.")


class Grant(Model):
    """The time-boxed permission an approval mints."""

    expires_at: datetime = Field(description="Until when the approved action is allowed.")


class ApprovalRequestStatus(Model):
    """The decisions so far and the resulting state."""

    state: ApprovalState = Field(
        default=ApprovalState.PENDING, description="Pending, Approved, Denied or Expired."
    )
    decisions: list[ApprovalDecision] = Field(
        default_factory=list, description="Decisions in the order they were made."
    )
    grant: Grant | None = Field(default=None, description="Set once approved.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Approved.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ApprovalRequest(Model):
    """A request for a person to approve an agent's sensitive action."""

    KIND: ClassVar[str] = "ApprovalRequest"
    PLURAL: ClassVar[str] = "approvalrequests"
    ROOT_RULES: ClassVar[list[JsonDict]] = []
    # The decision API creates requests without status (the subresource drops it on
    # create); the schema's default makes every read say Pending until someone decides.
    STATUS_DEFAULTED: ClassVar[bool] = True

    api_version: Literal["agentidentity.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ApprovalRequest"] = "ApprovalRequest"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ApprovalRequestSpec
    status: ApprovalRequestStatus = Field(default_factory=ApprovalRequestStatus)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ApprovalRequest:
        return cls.model_validate(body)
