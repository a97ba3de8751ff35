"""In-memory state the operator process keeps: adapters and offers.

Nothing here is the truth of a job (that is the InferenceJob status); it is a cache that a
restarted operator rebuilds from ComputeProviders and job statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller.wakeup import Wakeup
from hybridgpu.networks.base import NetworkAdapter
from hybridgpu.routing.snapshot import ExternalOffer

OFFER_TTL_INTERVALS = 3
"""Refresh intervals after which offers that could not be refreshed are no longer used."""


def fresh_offers(
    offers: tuple[ExternalOffer, ...],
    refreshed: datetime | None,
    interval: timedelta,
    now: datetime,
    intervals: int = OFFER_TTL_INTERVALS,
) -> tuple[ExternalOffer, ...]:
    """``offers`` if they were refreshed within ``intervals`` refresh intervals, else none."""
    if refreshed is None or now - refreshed > interval * intervals:
        return ()
    return offers


@dataclass
class ProviderEntry:
    """One ComputeProvider as the operator knows it now."""

    name: str
    spec: ComputeProviderSpec
    adapter: NetworkAdapter
    labels: dict[str, str] = field(default_factory=dict)
    offers: tuple[ExternalOffer, ...] = ()
    refreshed: datetime | None = None
    ready: bool = False
    draining: bool = False
    """Set when the ComputeProvider is being deleted: its jobs fail over, no new ones go."""
    active_jobs: set[str] = field(default_factory=set)
    """UIDs of InferenceJobs with work on this network now."""
    credential_digest: str = ""
    """SHA-256 of the credential the adapter was built with (never the credential itself):
    a rotated Secret rebuilds the adapter."""


class Registry:
    """Adapters by provider name (what jobs hold is derived from their statuses: claims.py)."""

    def __init__(self) -> None:
        self.providers: dict[str, ProviderEntry] = {}
        # Idempotency keys this process has submitted. Client-driven batches (Livepeer,
        # OpenAI-compatible) run inside the operator: after a restart they are submitted again,
        # with their checkpoint, before their status means anything.
        self.submitted: set[str] = set()
        # Jobs deferred for price sleep on this; whatever may free capacity notifies it.
        self.wakeup = Wakeup()
        self.runner_urls: dict[str, tuple[dict[str, str], float]] = {}
        """idempotency key -> (HYBRIDGPU_* URL variables, when signed) of container attempts."""
        self.progress_written: dict[str, float] = {}
        """uid -> monotonic time of the job's last status write from a routine poll."""

    def offers(self, now: datetime | None = None) -> tuple[ExternalOffer, ...]:
        """Every usable provider's offers, with live circuit, pause and load figures; offers
        not refreshed for a few intervals are left out (a stuck refresh loop sells nothing)."""
        now = now or datetime.now(UTC)
        out: list[ExternalOffer] = []
        for entry in self.providers.values():
            if entry.draining or not entry.ready:
                continue
            circuit_open = entry.adapter.circuit_state == "Open"
            fresh = fresh_offers(
                entry.offers, entry.refreshed, entry.spec.price_refresh_interval, now
            )
            for offer in fresh:
                out.append(
                    replace(
                        offer,
                        circuit_open=circuit_open,
                        paused=entry.spec.paused,
                        active_jobs=len(entry.active_jobs),
                        max_concurrent_jobs=entry.spec.max_concurrent_jobs,
                        labels=entry.labels,
                        trust_tier=entry.spec.trust_tier,
                        region=offer.region or entry.spec.region,
                        carbon_intensity=(
                            offer.carbon_intensity
                            if offer.carbon_intensity is not None
                            else entry.spec.carbon_intensity
                        ),
                    )
                )
        return tuple(out)
