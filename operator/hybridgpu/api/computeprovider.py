"""The ComputeProvider kind: one external GPU network account, created by cluster admins."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from hybridgpu.api.common import (
    ApiModel,
    Condition,
    Duration,
    GPUPrice,
    GPUProduct,
    Money,
    Name,
    ObjectMeta,
    StatusModel,
    conditions_field,
)

# https anywhere; plain http only on loopback, where the stand-in networks listen.
ENDPOINT_PATTERN = r"^(https://[^\s/]+|http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?)(/\S*)?$"


class ProviderType(StrEnum):
    LIVEPEER = "livepeer"
    AKASH = "akash"
    OPENAI = "openai"
    NOSANA = "nosana"
    VASTAI = "vastai"


CANCELLABLE_TYPES: frozenset[ProviderType] = frozenset(
    {
        ProviderType.AKASH,  # closes the deployment (the escrow is refunded)
        ProviderType.NOSANA,  # stops the deployment
        ProviderType.VASTAI,  # destroys the instance
        ProviderType.LIVEPEER,  # stops sending the batch's requests (client-driven)
        ProviderType.OPENAI,  # the same
    }
)
"""Networks whose adapter's ``cancel`` stops the remote work and its bill, so preemption may
evict preemptible work there (``routing.preemption`` takes the set as data). A network added
without a working cancel stays out; tests/unit/test_preemption_external.py checks each listed
adapter overrides ``cancel``."""


class TrustTier(StrEnum):
    COMMUNITY = "community"
    VERIFIED = "verified"
    AUDITED = "audited"

    @property
    def rank(self) -> int:
        return list(TrustTier).index(self)


class SecretKeyRef(ApiModel):
    """A key of a Secret holding the provider's credential."""

    namespace: Name
    """Namespace of the Secret."""
    name: Name
    """Name of the Secret."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = "apiKey"
    """Key in the Secret whose value is the credential."""


class TokenPrice(ApiModel):
    """Per-token prices of a model on an OpenAI-compatible endpoint."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Model id."""
    input_per_million: Money
    """US dollars per million prompt tokens."""
    output_per_million: Money
    """US dollars per million generated tokens."""


class ComputeProviderSpec(ApiModel):
    """How to reach one external GPU network and what to trust it with."""

    type: ProviderType
    """livepeer, akash, openai, nosana or vastai."""
    endpoint: Annotated[str, StringConstraints(pattern=ENDPOINT_PATTERN, max_length=2048)]
    """Base URL of the network's API (https; http only on loopback for local stand-ins)."""
    credentials_secret_ref: SecretKeyRef | None = None
    """Secret holding the API key; none for networks that need no credential."""
    region: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "global"
    """Where the network's GPUs are, for spec.regions of InferenceJobs."""
    trust_tier: TrustTier = TrustTier.COMMUNITY
    """community, verified or audited: how far the operators of the network are trusted."""
    max_concurrent_jobs: int = Field(default=10, ge=0, le=10_000)
    """Most jobs hybridgpu runs on this network at once."""
    price_refresh_interval: Duration = timedelta(seconds=60)
    """How often offers are refreshed."""
    carbon_intensity: int | None = Field(default=None, ge=0, le=2000)
    """Grid carbon intensity where the GPUs run, gCO2/kWh."""
    static_prices: list[GPUPrice] = Field(default_factory=list, max_length=64)
    """Prices per GPU-hour for networks without a price API."""
    token_prices: list[TokenPrice] = Field(default_factory=list, max_length=256)
    """Per-token prices for OpenAI-compatible endpoints that do not publish them."""
    paused: bool = False
    """When true, no new job is sent to this network."""


class Offer(StatusModel):
    """A GPU product the network currently offers."""

    gpu_product: GPUProduct
    """GPU Feature Discovery product name."""
    price_per_gpu_hour: Money | None = None
    """US dollars per GPU-hour, for networks that price by the GPU-hour."""
    price: str = ""
    """The price in the network's own unit, e.g. '0.13/0.38 USD per 1M tokens'."""
    available: int = 0
    """GPUs (or concurrent slots) available now."""
    region: str = ""
    """Where the offer runs."""


class DroppedOffer(StatusModel):
    """An offer the network made that hybridgpu refused to use."""

    gpu_product: Annotated[str, StringConstraints(max_length=63)] = ""
    """The GPU name as the network gave it (cut to 63 characters)."""
    reason: Annotated[str, StringConstraints(max_length=256)] = ""
    """Why: a price or capacity that is not finite, negative or above hybridgpu's ceiling,
    or a name that is not a GPU Feature Discovery product name."""


class Latency(StatusModel):
    """Observed time from submission to running."""

    p50_seconds: float | None = None
    """Median seconds."""
    p95_seconds: float | None = None
    """95th percentile seconds."""


class ComputeProviderStatus(StatusModel):
    """What the network offers and how healthy it is."""

    conditions: list[Condition] = conditions_field()
    """Ready and Degraded."""
    offers: list[Offer] = Field(default_factory=list)
    """Current offers."""
    dropped_offers: list[DroppedOffer] = Field(default_factory=list, max_length=32)
    """Offers of the last refresh that were not used, with the reason (at most 32 shown)."""
    latency: Latency | None = None
    """Observed start latency."""
    active_jobs: int = 0
    """Jobs hybridgpu runs there now."""
    last_refresh_time: datetime | None = None
    """When offers were last refreshed."""
    circuit: str = ""
    """Closed, Open or HalfOpen: the circuit breaker in front of the network."""
    error_rate: float | None = None
    """Share of recent calls that failed."""
    observed_generation: int | None = None
    """The generation of the spec this status describes."""


class ComputeProvider(ApiModel):
    """An external GPU network that InferenceJobs may be sent to (cluster-scoped)."""

    model_config = {"extra": "ignore"}

    api_version: str = "hybridgpu.dev/v1alpha1"
    """hybridgpu.dev/v1alpha1"""
    kind: str = "ComputeProvider"
    """ComputeProvider"""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: ComputeProviderSpec
    """How to reach the network."""
    status: ComputeProviderStatus = Field(default_factory=ComputeProviderStatus)
    """Offers and health, written by the operator."""


__all__ = ["ComputeProvider", "ComputeProviderSpec", "Money", "Offer", "ProviderType", "TrustTier"]
