"""The AuthorityScope resource: what an agent bound to it may do."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.config import JsonDict

from agent_identity import API_VERSION
from agent_identity.api.agent import MAX_TOKEN_TTL, MIN_TOKEN_TTL
from agent_identity.api.common import (
    CEL_RULES,
    SET_LIST,
    Condition,
    LabelSelector,
    Model,
    ObjectMeta,
    ToolPattern,
    cel,
    unique_items,
)

DEFAULT_MAX_TOKEN_TTL = 3600
RBAC_VERBS = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
)


# A verb, resource, API group or name inside a PolicyRule: bounded so CEL rules stay cheap.
RuleItem = Annotated[str, Field(max_length=253)]
NonEmptyRuleItem = Annotated[str, Field(min_length=1, max_length=253)]
CIDR_MAX = 64  # the longest IPv6 CIDR is 43 characters


API_GROUPS_HELP = (
    'rules[].apiGroups must name at least one API group; use apiGroups: [""] for the core '
    "group (pods, configmaps, secrets...)"
)
RESOURCES_HELP = (
    "rules[].resources must name at least one resource, e.g. resources: [deployments] or [pods/log]"
)
VERBS_HELP = "rules[].verbs must name at least one verb, e.g. verbs: [get, list]"
# wire name, Python name, message: the lists Kubernetes needs in every Role rule
_RULE_LISTS = (
    ("apiGroups", "api_groups", API_GROUPS_HELP),
    ("resources", "resources", RESOURCES_HELP),
    ("verbs", "verbs", VERBS_HELP),
)


class PolicyRule(Model):
    """A Kubernetes RBAC PolicyRule, granted in the agent's namespace through a Role.

    apiGroups, resources and verbs each need at least one item: Kubernetes refuses a Role
    rule without an API group, and the core group is spelled "".
    """

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                # The schema's minItems says the same; this adds the fix to the message.
                cel("self.apiGroups.size() > 0", API_GROUPS_HELP),
                cel(
                    "self.verbs.all(v, v != '*' || self.verbs.size() == 1)",
                    "rules[].verbs: '*' already means every verb; list it alone",
                ),
            ]
        }
    }

    api_groups: list[RuleItem] = Field(
        min_length=1,
        max_length=32,
        description='API groups of the resources, at least one; "" is the core group '
        '(apiGroups: [""] for pods, configmaps, secrets...).',
    )
    resources: list[NonEmptyRuleItem] = Field(
        min_length=1,
        max_length=64,
        description="Resources the rule applies to, e.g. deployments or pods/log.",
    )
    verbs: list[NonEmptyRuleItem] = Field(
        min_length=1,
        max_length=16,
        description="Verbs allowed on the resources, e.g. get, list, patch.",
    )
    resource_names: list[RuleItem] = Field(
        default_factory=list, max_length=64, description="Optional allow-list of object names."
    )

    @model_validator(mode="before")
    @classmethod
    def _lists_named(cls, data: Any) -> Any:
        """A missing or empty apiGroups, resources or verbs, with how to fix it."""
        if isinstance(data, dict):
            problems = []
            for wire, python, help_ in _RULE_LISTS:
                value = data.get(wire, data.get(python))
                if value is None or (isinstance(value, list | tuple) and not value):
                    problems.append(help_)
            if problems:
                raise ValueError("; ".join(problems))
        return data

    @field_validator("verbs")
    @classmethod
    def _verbs_non_empty(cls, verbs: list[str]) -> list[str]:
        if any(not v for v in verbs):
            raise ValueError("rules[].verbs must not contain empty strings")
        if "*" in verbs and len(verbs) > 1:
            raise ValueError("rules[].verbs: '*' already means every verb; list it alone")
        return verbs

    @field_validator("resources")
    @classmethod
    def _resources_non_empty(cls, resources: list[str]) -> list[str]:
        if any(not r for r in resources):
            raise ValueError("rules[].resources must not contain empty strings")
        return resources


class ToolRules(Model):
    """Tool/action patterns: deny always wins over allow."""

    allow: Annotated[list[ToolPattern], unique_items("spec.tools.allow")] = Field(
        default_factory=list,
        max_length=256,
        description="Patterns of actions the agent may take, e.g. github.pulls.*.",
        json_schema_extra=SET_LIST,
    )
    deny: Annotated[list[ToolPattern], unique_items("spec.tools.deny")] = Field(
        default_factory=list,
        max_length=256,
        description="Patterns of actions that are always denied, e.g. github.admin.**.",
        json_schema_extra=SET_LIST,
    )


class Constraint(Model):
    """A CEL condition that must hold for the named tools to be allowed."""

    tools: Annotated[list[ToolPattern], unique_items("spec.constraints[].tools")] = Field(
        min_length=1,
        max_length=64,
        description="Patterns of the actions this constraint guards.",
        json_schema_extra=SET_LIST,
    )
    when: str = Field(
        min_length=1,
        max_length=4096,
        description="CEL over subject, action, resource, context and request; must be true.",
    )
    message: str | None = Field(
        default=None, max_length=1024, description="Shown to the caller when the constraint fails."
    )


class EgressPeer(Model):
    """A destination agents may reach: a CIDR, or pods/namespaces by label."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "network.egress[].to[]: set either cidr or namespaceSelector/podSelector",
                ),
                cel(
                    "!has(self.except) || self.except.size() == 0 || has(self.cidr)",
                    "network.egress[].to[].except needs a cidr to carve out of",
                ),
            ]
        }
    }

    cidr: str | None = Field(
        default=None,
        max_length=CIDR_MAX,
        description="An IP block, e.g. 10.20.0.0/16.",
        json_schema_extra={
            CEL_RULES: [
                cel(
                    "isCIDR(self)",
                    "network.egress[].to[].cidr must be a CIDR such as 10.20.0.0/16",
                )
            ]
        },
    )
    except_: list[
        Annotated[
            str,
            Field(
                max_length=CIDR_MAX,
                json_schema_extra={
                    CEL_RULES: [
                        cel(
                            "isCIDR(self)",
                            "network.egress[].to[].except[] must be a CIDR such as 10.20.1.0/24",
                        )
                    ]
                },
            ),
        ]
    ] = Field(
        default_factory=list,
        alias="except",
        max_length=64,
        description="CIDRs inside cidr to exclude.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may be reached."
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Pods that may be reached."
    )

    @field_validator("cidr")
    @classmethod
    def _cidr_valid(cls, value: str | None) -> str | None:
        if value is not None and not _is_cidr(value):
            raise ValueError(
                f"network.egress[].to[].cidr {value!r} is not a CIDR such as 10.20.0.0/16"
            )
        return value

    @field_validator("except_")
    @classmethod
    def _except_valid(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _is_cidr(value):
                raise ValueError(
                    f"network.egress[].to[].except[] {value!r} is not a CIDR such as 10.20.1.0/24"
                )
        return values

    @model_validator(mode="after")
    def _one_kind(self) -> EgressPeer:
        if (self.cidr is not None) == (
            self.namespace_selector is not None or self.pod_selector is not None
        ):
            raise ValueError(
                "network.egress[].to[]: set either cidr or namespaceSelector/podSelector"
            )
        if self.except_ and self.cidr is None:
            raise ValueError("network.egress[].to[].except needs a cidr to carve out of")
        return self


def _is_cidr(value: str) -> bool:
    """An address with a prefix length (as NetworkPolicy ipBlock and CEL isCIDR want)."""
    if "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class EgressPort(Model):
    """A port (or range) agents may reach."""

    model_config = {
        "json_schema_extra": {
            CEL_RULES: [
                cel(
                    "!has(self.endPort) || (has(self.port) && self.endPort >= self.port)",
                    "network.egress[].ports[].endPort needs a port and must not be below it",
                )
            ]
        }
    }

    port: int | None = Field(default=None, ge=1, le=65535, description="Port number.")
    end_port: int | None = Field(
        default=None, ge=1, le=65535, description="End of a port range starting at port."
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="TCP, UDP or SCTP.")

    @model_validator(mode="after")
    def _range(self) -> EgressPort:
        if self.end_port is not None and (self.port is None or self.end_port < self.port):
            raise ValueError(
                "network.egress[].ports[].endPort needs a port and must not be below it"
            )
        return self


class EgressRule(Model):
    """Destinations and ports reachable together."""

    to: list[EgressPeer] = Field(
        default_factory=list, max_length=64, description="Destinations; empty means anywhere."
    )
    ports: list[EgressPort] = Field(
        default_factory=list, max_length=64, description="Ports; empty means every port."
    )


class NetworkSpec(Model):
    """Network egress the agent's pods may use besides DNS and the decision API."""

    egress: list[EgressRule] = Field(
        default_factory=list, max_length=64, description="Allowed egress; empty allows none."
    )


class AuthorityScopeSpec(Model):
    """A reusable grant of authority; every field is optional and empty grants nothing."""

    rules: list[PolicyRule] = Field(
        default_factory=list, max_length=64, description="Kubernetes RBAC rules, via a Role."
    )
    tools: ToolRules = Field(default_factory=ToolRules, description="Tool allow/deny patterns.")
    sensitive: Annotated[list[ToolPattern], unique_items("spec.sensitive")] = Field(
        default_factory=list,
        max_length=256,
        description="Actions allowed only with a live approval, e.g. deploy.production.",
        json_schema_extra=SET_LIST,
    )
    constraints: list[Constraint] = Field(
        default_factory=list,
        max_length=64,
        description="CEL conditions an allowed tool must also meet.",
    )
    network: NetworkSpec = Field(default_factory=NetworkSpec, description="Network egress.")
    max_token_ttl_seconds: int = Field(
        default=DEFAULT_MAX_TOKEN_TTL,
        ge=MIN_TOKEN_TTL,
        le=MAX_TOKEN_TTL,
        alias="maxTokenTTLSeconds",
        description="Longest token lifetime an agent bound to this scope gets (default 3600).",
    )


class AuthorityScopeStatus(Model):
    """Which agents are bound, and whether the scope is usable."""

    bound_agents: list[str] = Field(
        default_factory=list, description="Names of the Agents bound to this scope."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )


class AuthorityScope(Model):
    """Authority an Agent can be bound to."""

    KIND: ClassVar[str] = "AuthorityScope"
    PLURAL: ClassVar[str] = "authorityscopes"
    ROOT_RULES: ClassVar[list[JsonDict]] = []

    api_version: Literal["agentidentity.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["AuthorityScope"] = "AuthorityScope"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AuthorityScopeSpec = Field(default_factory=AuthorityScopeSpec)
    status: AuthorityScopeStatus = Field(default_factory=AuthorityScopeStatus)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> AuthorityScope:
        return cls.model_validate(body)
