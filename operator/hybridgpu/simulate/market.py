"""External offers for the replay: the price book's rows with start latency, capacity and trust.

The price book has prices only. What each kind of provider adds below is an ASSUMPTION of this
simulator (documented in docs/simulate.md), except where a source is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.simulate.inputs import PriceRow, latest_offers

NETWORK_KINDS = frozenset({"depin", "marketplace"})
CLOUD_KINDS = frozenset({"cloud"})

# Seconds from submission to running. io.net's FAQ reports 32-52 s spin-up with cached images
# and 60-120 s uncached (reference providers.md, S53); the others are assumptions of the same
# order: a lease or bid round plus an image pull for networks, a VM boot for clouds.
START_LATENCY_SECONDS: dict[str, float] = {
    "akash": 180.0,
    "nosana": 120.0,
    "vastai": 120.0,
    "runpod": 60.0,
    "lambda": 300.0,
    "coreweave": 180.0,
    "aws": 300.0,
    "azure": 300.0,
    "gcp": 300.0,
}
DEFAULT_START_LATENCY_SECONDS = 180.0
# GPUs one offer can give us at once (assumption): networks are thin, clouds deep.
CAPACITY_BY_KIND = {"depin": 16, "marketplace": 32, "cloud": 256}
ERROR_RATE_BY_KIND = {"depin": 0.05, "marketplace": 0.03, "cloud": 0.01}
TRUST_BY_KIND = {"depin": TrustTier.COMMUNITY, "marketplace": TrustTier.VERIFIED}


@dataclass(frozen=True, slots=True)
class MarketOffer:
    """One external (provider, product) the replay may use, with its static properties."""

    provider: str
    kind: str
    gpu_product: str
    memory_bytes: int
    usd_per_gpu_hour: Decimal
    start_latency_seconds: float
    capacity: int
    error_rate: float
    trust_tier: TrustTier
    provider_type: ProviderType | None
    """Set when hybridgpu has an adapter for the network (the policies may use it)."""

    @property
    def name(self) -> str:
        """The routing engine's candidate name."""
        return f"{self.provider}/{self.gpu_product}"


def build_market(
    prices: tuple[PriceRow, ...], *, capacity_factor: float = 1.0
) -> tuple[MarketOffer, ...]:
    """Every external offer of the price book (networks, marketplaces and clouds)."""
    out: list[MarketOffer] = []
    for row in latest_offers(prices, NETWORK_KINDS | CLOUD_KINDS):
        try:
            provider_type: ProviderType | None = ProviderType(row.provider)
        except ValueError:
            provider_type = None
        out.append(
            MarketOffer(
                provider=row.provider,
                kind=row.kind,
                gpu_product=row.gpu_product,
                memory_bytes=row.memory_bytes,
                usd_per_gpu_hour=row.usd_per_gpu_hour,
                start_latency_seconds=START_LATENCY_SECONDS.get(
                    row.provider, DEFAULT_START_LATENCY_SECONDS
                ),
                capacity=max(1, round(CAPACITY_BY_KIND.get(row.kind, 16) * capacity_factor)),
                error_rate=ERROR_RATE_BY_KIND.get(row.kind, 0.05),
                trust_tier=TRUST_BY_KIND.get(row.kind, TrustTier.AUDITED),
                provider_type=provider_type,
            )
        )
    return tuple(out)
