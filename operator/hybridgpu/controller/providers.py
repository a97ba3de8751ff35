"""ComputeProvider upkeep: build the adapter, refresh offers, report health in status.

Offers pass :func:`hybridgpu.networks.bounds.screen_offers` before they reach the registry;
the dropped ones are reported in ``status.droppedOffers``. Offers older than
``OFFER_TTL_INTERVALS`` refresh intervals are forgotten (:func:`fresh_offers`), so a network
whose refreshes keep failing stops being offered its old prices.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller import metrics
from hybridgpu.controller.registry import OFFER_TTL_INTERVALS, ProviderEntry, Registry, fresh_offers
from hybridgpu.controller.wakeup import Wakeup
from hybridgpu.jobs import conditions as cond
from hybridgpu.kube import Kube
from hybridgpu.networks import errors as neterr
from hybridgpu.networks.base import make_adapter
from hybridgpu.networks.bounds import DroppedOffer, screen_offers
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour, PerToken, PerUnit, Pricing
from hybridgpu.units import format_money

log = logging.getLogger(__name__)
MAX_OFFER_ROWS = 100
"""Offers listed in a ComputeProvider's status (all of them are used for routing)."""
MAX_DROPPED_ROWS = 32


class CredentialMissing(Exception):
    """The Secret named by spec.credentialsSecretRef is missing or lacks the key."""


def describe_price(pricing: Pricing) -> str:
    """The price in the network's own unit, for humans."""
    if isinstance(pricing, PerGPUHour):
        return f"{format_money(pricing.usd)} USD per GPU-hour"
    if isinstance(pricing, PerToken):
        return (
            f"{format_money(pricing.input_usd_per_million)}/"
            f"{format_money(pricing.output_usd_per_million)} USD per 1M input/output tokens"
        )
    assert isinstance(pricing, PerUnit)
    return f"{format_money(pricing.usd_per_unit, 12)} USD per {pricing.unit}"


def _no_dearer(old: Pricing, new: Pricing) -> bool:
    """Whether ``old`` is certainly at most ``new`` (prices in different units are not)."""
    if isinstance(old, PerGPUHour) and isinstance(new, PerGPUHour):
        return old.usd <= new.usd
    if isinstance(old, PerToken) and isinstance(new, PerToken):
        return (
            old.input_usd_per_million <= new.input_usd_per_million
            and old.output_usd_per_million <= new.output_usd_per_million
        )
    if isinstance(old, PerUnit) and isinstance(new, PerUnit):
        return old.unit == new.unit and old.usd_per_unit <= new.usd_per_unit
    return False


def improved_places(
    before: tuple[ExternalOffer, ...], after: tuple[ExternalOffer, ...]
) -> set[str]:
    """Candidate names whose offers grew or got cheaper from one refresh to the next.

    An offer counts unless an earlier one of the same product and region had at least its
    availability at no higher a price; a new product or region counts.
    """
    old: dict[tuple[str, str], list[ExternalOffer]] = {}
    for o in before:
        old.setdefault((o.gpu_product, o.region), []).append(o)
    return {
        f"{o.provider}/{o.gpu_product}"
        for o in after
        if o.available > 0
        and not any(
            p.available >= o.available and _no_dearer(p.pricing, o.pricing)
            for p in old.get((o.gpu_product, o.region), ())
        )
    }


def wake_for_refresh(
    wakeup: Wakeup, before: tuple[ExternalOffer, ...], after: tuple[ExternalOffer, ...]
) -> None:
    """Wake the deferred jobs a refresh may concern.

    Jobs await places by name, so a place no job can know yet (a provider that just became
    usable, a product or region it did not offer before) wakes every waiting job; an offer
    that only grew or got cheaper wakes those awaiting it.
    """
    places = improved_places(before, after)
    if not places:
        return
    known = {(o.gpu_product, o.region) for o in before}
    if not before or any((o.gpu_product, o.region) not in known for o in after):
        wakeup.notify_all()
    else:
        wakeup.notify(*sorted(places), repriced=True)


def offer_status(offer: ExternalOffer) -> dict[str, Any]:
    row: dict[str, Any] = {
        "gpuProduct": offer.gpu_product,
        "price": describe_price(offer.pricing),
        "available": offer.available,
        "region": offer.region,
    }
    if isinstance(offer.pricing, PerGPUHour):
        row["pricePerGPUHour"] = format_money(offer.pricing.usd, 6)
    return row


async def ensure_adapter(
    registry: Registry, kube: Kube, name: str, spec: ComputeProviderSpec, labels: dict[str, str]
) -> ProviderEntry:
    """The registry entry for this provider, rebuilt when its spec or its credential changed.

    The Secret is read at every refresh, so a rotated key is used from the next refresh on.
    """
    entry = registry.providers.get(name)
    credential = None
    ref = spec.credentials_secret_ref
    if ref is not None:
        credential = await kube.read_secret_key(ref.namespace, ref.name, ref.key)
        if credential is None:
            raise CredentialMissing(
                f"spec.credentialsSecretRef: Secret {ref.namespace}/{ref.name} has no key {ref.key}"
            )
    digest = hashlib.sha256(credential.encode()).hexdigest() if credential is not None else ""
    if entry is not None and entry.spec == spec and entry.credential_digest == digest:
        entry.labels = labels
        return entry
    adapter = make_adapter(name, spec, credential)
    if entry is not None:
        await entry.adapter.aclose()
        active = entry.active_jobs
        # The old adapter's client-driven batches stopped with it: their jobs' next steps
        # submit them again, from their checkpoints, to the new one.
        registry.submitted.clear()
    else:
        active = set()
    entry = ProviderEntry(
        name=name,
        spec=spec,
        adapter=adapter,
        labels=labels,
        active_jobs=active,
        credential_digest=digest,
    )
    registry.providers[name] = entry
    return entry


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What one refresh of a provider's offers found."""

    ready: bool
    message: str
    dropped: tuple[DroppedOffer, ...] = ()


async def refresh(entry: ProviderEntry, now: datetime) -> Refreshed:
    """Fetch offers, keep the sane ones; on failure, forget offers that are too old."""
    try:
        offers = await entry.adapter.list_offers()
    except neterr.NetworkError as exc:
        metrics.PROVIDER_ERRORS.labels(provider=entry.name).inc()
        entry.offers = fresh_offers(
            entry.offers, entry.refreshed, entry.spec.price_refresh_interval, now
        )
        last = entry.refreshed
        expired = last is not None and not entry.offers
        entry.ready = entry.ready and not expired and entry.adapter.circuit_state != "Open"
        if last is not None and expired:
            return Refreshed(
                False,
                f"{exc.message} (offers of {cond.timestamp(last)} expired: no refresh for "
                f"{OFFER_TTL_INTERVALS} refresh intervals)",
            )
        return Refreshed(False, exc.message)
    kept, dropped = screen_offers(offers)
    entry.offers = kept
    entry.refreshed = now
    entry.ready = True
    if dropped:
        return Refreshed(
            True, f"{len(kept)} offers, {len(dropped)} dropped (see droppedOffers)", dropped
        )
    return Refreshed(True, f"{len(kept)} offers", dropped)


def provider_status(
    entry: ProviderEntry | None,
    ready: bool,
    message: str,
    generation: int,
    conditions: list[dict[str, Any]],
    now: datetime,
    dropped: Sequence[DroppedOffer] = (),
) -> dict[str, Any]:
    """The ComputeProvider status after one refresh."""
    conditions = [dict(c) for c in conditions]
    reason = "OffersRefreshed" if ready else "Unreachable"
    cond.set_condition(conditions, "Ready", ready, reason, message, generation=generation, now=now)
    status: dict[str, Any] = {"conditions": conditions, "observedGeneration": generation}
    if entry is None:
        return status
    circuit = entry.adapter.circuit_state
    degraded = circuit != "Closed" or entry.adapter.error_rate > 0.2
    cond.set_condition(
        conditions,
        "Degraded",
        degraded,
        "CircuitOpen" if circuit == "Open" else ("Errors" if degraded else "Healthy"),
        f"circuit {circuit}, error rate {entry.adapter.error_rate:.0%}",
        generation=generation,
        now=now,
    )
    p50, p95 = entry.adapter.start_latency
    status.update(
        offers=[offer_status(o) for o in entry.offers[:MAX_OFFER_ROWS]],
        droppedOffers=[
            {"gpuProduct": d.gpu_product[:63], "reason": d.reason[:256]}
            for d in dropped[:MAX_DROPPED_ROWS]
        ],
        activeJobs=len(entry.active_jobs),
        circuit=circuit,
        errorRate=round(entry.adapter.error_rate, 4),
        latency={"p50Seconds": p50, "p95Seconds": p95},
    )
    if entry.refreshed is not None:
        status["lastRefreshTime"] = cond.timestamp(entry.refreshed)
    metrics.CIRCUIT_OPEN.labels(provider=entry.name).set(1 if circuit == "Open" else 0)
    metrics.PROVIDER_READY.labels(provider=entry.name).set(1 if ready else 0)
    return status
