"""Types shared by every resource: the base model, conditions, references, selectors.

Wire names are camelCase (Kubernetes convention), Python names snake_case.
Each model may carry CRD-only CEL rules in ``model_config["json_schema_extra"]``
under ``x-kubernetes-validations``; they state the same one-object checks as
the pydantic validators beside them, so the API server and our code agree.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from agent_identity import GROUP
from agent_identity.api.patterns import PATTERN_REGEX, pattern_error

# Labels and annotations fixed by the design.
AGENT_LABEL = f"{GROUP}/agent"
ENFORCE_LABEL = f"{GROUP}/enforce"
CREATED_BY_ANNOTATION = f"{GROUP}/created-by"
LAST_MODIFIED_BY_ANNOTATION = f"{GROUP}/last-modified-by"
PROVENANCE_ANNOTATIONS = (CREATED_BY_ANNOTATION, LAST_MODIFIED_BY_ANNOTATION)
DEFAULT_AUDIENCE = GROUP
TOKEN_MOUNT_PATH = f"/var/run/secrets/{GROUP}/token"
DECISIONS_URL_ENV = "AGENT_IDENTITY_DECISIONS_URL"
# The CA (PEM) that verifies the decision API's HTTPS certificate, injected beside the URL.
DECISIONS_CA_ENV = "AGENT_IDENTITY_DECISIONS_CA"
OPERATOR_ACTOR = "system:agent-identity-operator"

CEL_RULES = "x-kubernetes-validations"
LIST_TYPE = "x-kubernetes-list-type"
LIST_MAP_KEYS = "x-kubernetes-list-map-keys"

# A list of scalars the API server keeps as a set (duplicates refused, server-side apply
# merges items); pair it with ``unique_items`` so our code refuses the same lists.
SET_LIST: JsonDict = {LIST_TYPE: "set"}


def map_list(*keys: str) -> JsonDict:
    """A list of objects the API server keys by ``keys`` (duplicates refused, items merged)."""
    return {LIST_TYPE: "map", LIST_MAP_KEYS: list(keys)}


def unique_items(
    field: str, key: Callable[[Any], Hashable] | None = None, what: str = ""
) -> AfterValidator:
    """A validator refusing a list that repeats an item (by ``key``, if given).

    The same check the API server makes for ``x-kubernetes-list-type: set`` (or ``map``
    by its keys), so the webhook and the reconciler refuse what the API server refuses;
    the message names the field and the repeated value.
    """

    def check(values: list[Any]) -> list[Any]:
        seen: set[Hashable] = set()
        for value in values:
            ident: Hashable = key(value) if key is not None else value
            if ident in seen:
                raise ValueError(
                    f"{field} lists {what}{ident!r} more than once; remove the duplicate"
                )
            seen.add(ident)
        return values

    return AfterValidator(check)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL validation rule for the CRD schema."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Model(BaseModel):
    """Base of every wire model: camelCase aliases, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _check_pattern(value: str) -> str:
    error = pattern_error(value)
    if error:
        raise ValueError(error)
    return value


ToolPattern = Annotated[
    str,
    Field(
        pattern=PATTERN_REGEX,
        min_length=1,
        max_length=253,
        json_schema_extra={
            CEL_RULES: [
                cel(
                    "!self.contains('**.**')",
                    "a tool pattern must not contain '**.**': one '**' already matches any depth",
                )
            ]
        },
    ),
    AfterValidator(_check_pattern),
]


class LifecycleState(enum.StrEnum):
    """The lifecycle state a person asks for in ``spec.lifecycle.state``."""

    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    DEPRECATED = "Deprecated"
    RETIRED = "Retired"


class Phase(enum.StrEnum):
    """The effective phase in ``status.phase``, derived from conditions.

    ``Pending`` means not provisioned yet (or refused: no valid owner, a
    missing scope); the others mirror the lifecycle, with expiry and sunset
    applied.
    """

    PENDING = "Pending"
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    DEPRECATED = "Deprecated"
    RETIRED = "Retired"


ADMITTING_PHASES = frozenset({Phase.ACTIVE, Phase.DEPRECATED})

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A condition per the Kubernetes API conventions (metav1.Condition)."""

    type: str = Field(
        description="Type of the condition in CamelCase, e.g. Ready.",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase, machine-readable reason for the last transition.",
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        min_length=1,
        max_length=1024,
    )
    message: str = Field(
        default="", description="A human-readable message about the transition.", max_length=32768
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status (not when it was last checked)."
    )


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: str = Field(
        description="Name of the referenced object in this namespace.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )


class LabelSelectorRequirement(Model):
    """A label selector requirement (metav1.LabelSelectorRequirement)."""

    key: str = Field(description="The label key the selector applies to.", min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(Model):
    """A label selector (metav1.LabelSelector); empty selects everything."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an object with ``labels`` is selected."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class ObjectMeta(Model):
    """The part of metav1.ObjectMeta our code reads (the CRD does not redefine it)."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
