"""Shared building blocks of the hybridgpu.dev/v1alpha1 API models."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from hybridgpu.units import (
    DURATION_PATTERN,
    MONEY_PATTERN,
    QUANTITY_PATTERN,
    format_duration,
    format_money,
    parse_duration,
    parse_money,
)

GROUP = "hybridgpu.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _alias(name: str) -> str:
    # Kubernetes spells acronyms in capitals inside field names (pricePerGPUHour).
    return to_camel(name).replace("PerGpuHour", "PerGPUHour")


def _duration_in(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '90s', '5m' or '1h30m'")
    return parse_duration(value)


Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(lambda d: format_money(d, 8), return_type=str),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN}),
]
"""US dollars as a decimal string in the API and ``Decimal`` in code."""

Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_in),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 64}),
]
"""A Go-style duration string in the API and ``timedelta`` in code."""

Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
"""A Kubernetes quantity such as ``24Gi``."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
GPUProduct = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=_alias,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
        ser_json_timedelta="iso8601",
    )

    def to_api(self) -> dict[str, Any]:
        """The object as it is written to the Kubernetes API."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Base of status models: tolerant of fields written by newer operator versions."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, StringConstraints(max_length=316)]
    """Type of condition in CamelCase, e.g. Routed, Running, Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = ""
    """A CamelCase, machine-readable reason for the last transition."""
    message: str = ""
    """A human-readable message about the last transition."""
    last_transition_time: datetime | None = None
    """When the condition last changed status."""
    observed_generation: int | None = None
    """The .metadata.generation the condition was set for."""


def conditions_field() -> Any:
    """A conditions list, keyed by type for server-side apply like metav1.Condition lists."""
    return Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class GPUPrice(ApiModel):
    """A price per GPU-hour for one GPU product."""

    gpu_product: GPUProduct
    """GPU Feature Discovery product name (nvidia.com/gpu.product), or 'default' for any."""
    price_per_gpu_hour: Money
    """US dollars per GPU-hour, as a decimal string such as "2.50"."""


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector."""

    key: str
    """The label key the selector applies to."""
    operator: Annotated[str, StringConstraints(pattern=r"^(In|NotIn|Exists|DoesNotExist)$")]
    """In, NotIn, Exists or DoesNotExist."""
    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must all match exactly."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements that must all hold."""

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an object with ``labels`` is selected."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            value = labels.get(req.key)
            ok = {
                "In": present and value in req.values,
                "NotIn": not present or value not in req.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[req.operator]
            if not ok:
                return False
        return True


class ObjectMeta(StatusModel):
    """The parts of metadata the operator reads."""

    name: str = ""
    """Name of the object."""
    namespace: str | None = None
    """Namespace of the object, if namespaced."""
    uid: str = ""
    """Unique id assigned by the API server."""
    generation: int = 0
    """Generation of the spec."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""
    creation_timestamp: datetime | None = None
    """When the object was created."""
