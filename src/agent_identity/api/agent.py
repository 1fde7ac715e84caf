"""The Agent resource: a registered AI agent with an owner, scopes and a lifecycle."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.config import JsonDict

from agent_identity import API_VERSION
from agent_identity.api.common import (
    CEL_RULES,
    DEFAULT_AUDIENCE,
    Condition,
    LifecycleState,
    LocalObjectReference,
    Model,
    ObjectMeta,
    Phase,
    cel,
    map_list,
    unique_items,
)

MAX_AGENT_NAME = 63  # Agent names become label values on their children.
MIN_TOKEN_TTL = 600
MAX_TOKEN_TTL = 86400
DEFAULT_TOKEN_TTL = 900
HISTORY_LIMIT = 20

OWNER_REGEX = r"^[A-Za-z0-9]([A-Za-z0-9._@+:/-]*[A-Za-z0-9])?$"
_OWNER_RE = re.compile(OWNER_REGEX)
OWNER_HELP = (
    "spec.owner must name the accountable person or team (letters, digits and . _ @ + : / -, "
    "e.g. 'team-payments' or 'alice@example.com')"
)


class PlatformType(enum.StrEnum):
    """Where an agent runs."""

    KUBERNETES = "kubernetes"
    EXTERNAL = "external"


class Platform(Model):
    """Where the agent runs: in this cluster, or on an external platform."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "self.type != 'external' || has(self.provider)",
                    "spec.platform.provider is required when spec.platform.type is external "
                    "(e.g. provider: openai)",
                )
            ]
        }
    }

    type: PlatformType = Field(
        default=PlatformType.KUBERNETES,
        description="kubernetes (pods in this cluster; the default) or external.",
    )
    provider: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="The external platform, e.g. openai or bedrock; required when type is "
        "external.",
    )
    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The agent's identifier on the external platform, e.g. asst_123.",
    )

    @model_validator(mode="after")
    def _external_needs_provider(self) -> Platform:
        if self.type == PlatformType.EXTERNAL and not self.provider:
            raise ValueError(
                "spec.platform.provider is required when spec.platform.type is external "
                "(e.g. provider: openai)"
            )
        return self


class Lifecycle(Model):
    """The lifecycle a person asks for; the effective phase is in status."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "!has(self.sunsetAt) || self.state in ['Deprecated', 'Retired']",
                    "spec.lifecycle.sunsetAt is only allowed with state Deprecated or Retired; "
                    "remove sunsetAt or set state: Deprecated",
                ),
                cel(
                    "self.state != 'Deprecated' || has(self.sunsetAt)",
                    "spec.lifecycle.sunsetAt is required with state Deprecated: say when the "
                    "agent retires",
                ),
                cel(
                    "oldSelf.state != 'Retired' || self.state == 'Retired'",
                    "spec.lifecycle.state: a Retired agent cannot be revived (Retired is "
                    "terminal); register a new Agent instead",
                ),
                cel(
                    "oldSelf.state != 'Deprecated' || self.state != 'Suspended'",
                    "spec.lifecycle.state: a Deprecated agent cannot be Suspended; set it "
                    "Active (before sunsetAt) or Retired",
                ),
            ]
        }
    }

    state: LifecycleState = Field(
        default=LifecycleState.ACTIVE,
        description="Active (default), Suspended, Deprecated (needs sunsetAt) or Retired "
        "(terminal). Allowed changes: Active<->Suspended; Active or Suspended -> Deprecated; "
        "Deprecated -> Active before sunsetAt; any -> Retired.",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="When the agent retires by itself (RFC 3339, e.g. 2027-06-30T00:00:00Z).",
    )
    sunset_at: datetime | None = Field(
        default=None,
        description="With Deprecated: when the deprecated agent is retired (RFC 3339).",
    )

    @model_validator(mode="after")
    def _sunset_rules(self) -> Lifecycle:
        if self.sunset_at is not None and self.state not in (
            LifecycleState.DEPRECATED,
            LifecycleState.RETIRED,
        ):
            raise ValueError(
                "spec.lifecycle.sunsetAt is only allowed with state Deprecated or Retired; "
                "remove sunsetAt or set state: Deprecated"
            )
        if self.state == LifecycleState.DEPRECATED and self.sunset_at is None:
            raise ValueError(
                "spec.lifecycle.sunsetAt is required with state Deprecated: say when the agent "
                "retires"
            )
        return self


class TokenSpec(Model):
    """The agent's short-lived, audience-bound tokens."""

    audience: str = Field(
        default=DEFAULT_AUDIENCE,
        min_length=1,
        max_length=253,
        description="Audience of the agent's projected tokens (default agentidentity.io).",
    )
    ttl_seconds: int = Field(
        default=DEFAULT_TOKEN_TTL,
        ge=MIN_TOKEN_TTL,
        le=MAX_TOKEN_TTL,
        description="Token lifetime in seconds, 600..86400 (default 900); never above the "
        "bound scopes' maxTokenTTLSeconds.",
    )


class AgentSpec(Model):
    """What a platform team declares about an agent."""

    owner: str = Field(
        min_length=1,
        max_length=253,
        description="Required: the accountable person or team, e.g. team-payments.",
        json_schema_extra={CEL_RULES: [cel(f"self.matches('{OWNER_REGEX}')", OWNER_HELP)]},
    )
    description: str | None = Field(
        default=None, max_length=1024, description="What the agent does, for people."
    )
    platform: Platform = Field(
        default_factory=Platform, description="Where the agent runs (default kubernetes)."
    )
    scope_refs: Annotated[
        list[LocalObjectReference],
        unique_items("spec.scopeRefs", key=lambda ref: ref.name, what="AuthorityScope "),
    ] = Field(
        default_factory=list,
        max_length=32,
        description="AuthorityScopes (same namespace) whose authority the agent holds; each "
        "name once.",
        json_schema_extra=map_list("name"),
    )
    parent_ref: LocalObjectReference | None = Field(
        default=None,
        description="The agent that spawned this one; its authority must be a subset of the "
        "parent's.",
    )
    lifecycle: Lifecycle = Field(
        default_factory=Lifecycle, description="Requested lifecycle state and dates."
    )
    token: TokenSpec = Field(default_factory=TokenSpec, description="Token audience and TTL.")

    @field_validator("owner")
    @classmethod
    def _owner_valid(cls, value: str) -> str:
        if not _OWNER_RE.match(value):
            raise ValueError(OWNER_HELP)
        return value


class HistoryEntry(Model):
    """One lifecycle transition."""

    from_: str | None = Field(default=None, alias="from", description="Phase before.")
    to: str = Field(description="Phase after.")
    actor: str = Field(description="Who caused it: a user, or system:agent-identity-operator.")
    at: datetime = Field(description="When it happened.")
    reason: str = Field(description="CamelCase reason, e.g. Expired or SpecChanged.")
    message: str = Field(default="", description="Details for people.")


class AgentIdentity(Model):
    """The identity the operator provisioned."""

    uri: str = Field(description="agent://<cluster>/<namespace>/<name>.")
    service_account: str | None = Field(
        default=None, description="The agent's ServiceAccount (none once Retired)."
    )
    uid: str = Field(description="The Agent's UID.")


class EffectiveAuthority(Model):
    """What the bound scopes grant, summarised."""

    digest: str = Field(description="sha256 of the effective authority; changes when it does.")
    summary: str = Field(description="One line for people, e.g. '3 rules, 2 tools, 1 sensitive'.")
    scopes: list[str] = Field(default_factory=list, description="Bound scopes found.")
    max_token_ttl_seconds: int | None = Field(
        default=None, description="The shortest maxTokenTTLSeconds of the bound scopes."
    )


class AgentStatus(Model):
    """What the operator observed and did."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    scopes: str | None = Field(
        default=None,
        max_length=4096,
        description="The bound scopes, comma-separated (printer columns show one list item only).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, IdentityProvisioned, AuthorityBound, NetworkIsolated, Deprecated, "
        "Expired.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    identity: AgentIdentity | None = Field(default=None, description="The provisioned identity.")
    effective_authority: EffectiveAuthority | None = Field(
        default=None, description="Digest and summary of the bound scopes' authority."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} lifecycle transitions, oldest first.",
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )


class Agent(Model):
    """An AI agent registered as a governed identity."""

    KIND: ClassVar[str] = "Agent"
    PLURAL: ClassVar[str] = "agents"
    ROOT_RULES: ClassVar[list[JsonDict]] = [
        cel(
            f"self.metadata.name.size() <= {MAX_AGENT_NAME}",
            f"metadata.name of an Agent must be at most {MAX_AGENT_NAME} characters (it becomes "
            "a label value); choose a shorter name",
        )
    ]

    api_version: Literal["agentidentity.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentSpec
    status: AgentStatus = Field(default_factory=AgentStatus)

    @model_validator(mode="after")
    def _name_fits_label(self) -> Agent:
        if len(self.metadata.name) > MAX_AGENT_NAME:
            raise ValueError(
                f"metadata.name of an Agent must be at most {MAX_AGENT_NAME} characters (it "
                "becomes a label value); choose a shorter name"
            )
        return self

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Agent:
        return cls.model_validate(body)
