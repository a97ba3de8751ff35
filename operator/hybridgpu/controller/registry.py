"""In-memory state the operator process keeps: adapters and offers.

Nothing here is the truth of a job (that is the InferenceJob status); it is a cache that a
restarted operator rebuilds from ComputeProviders and job statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller.wakeup import Wakeup
from hybridgpu.networks.base import NetworkAdapter
from hybridgpu.routing.snapshot import ExternalOffer


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

    def offers(self) -> tuple[ExternalOffer, ...]:
        """Every usable provider's offers, with live circuit, pause and load figures."""
        out: list[ExternalOffer] = []
        for entry in self.providers.values():
            if entry.draining or not entry.ready:
                continue
            circuit_open = entry.adapter.circuit_state == "Open"
            for offer in entry.offers:
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
