"""Adapters against broken stand-ins: 5xx, timeouts, 429 + Retry-After, circuit breaker,
jobs vanishing mid-run and networks charging more than they quoted."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from hybridgpu.networks import (
    CircuitOpen,
    HttpPolicy,
    PriceAboveCap,
    RateLimited,
    Unavailable,
    make_adapter,
)
from hybridgpu.networks.gpu_names import vast_names
from hybridgpu.routing.snapshot import PerGPUHour
from hybridgpu.standins import Standins
from tests.contract.networks_helpers import (
    CONTAINER_NETWORKS,
    FAST,
    KEY,
    adapter_for,
    control,
    job_spec,
    product_for,
    provider_spec,
    record_sleeps,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
OFFER_NETWORKS = ("akash", "openai", "nosana", "vastai")  # list_offers calls the network


@pytest.mark.parametrize("network", OFFER_NETWORKS)
async def test_5xx_is_retried_for_idempotent_calls(standins: Standins, network: str) -> None:
    await control(standins, network, "/_faults", {"failNext": 2, "errorStatus": 502})
    adapter = adapter_for(standins, network)
    try:
        offers = await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert offers
    stats = await control(standins, network, "/_stats")
    # Vast.ai: one search per known GPU name, so data-centre GPUs are not crowded out.
    calls = len(vast_names()) if network == "vastai" else 1
    assert stats["requests"] == 2 + calls
    assert adapter.error_rate == pytest.approx(2 / (2 + calls))


@pytest.mark.parametrize("network", OFFER_NETWORKS)
async def test_timeouts_become_unavailable(standins: Standins, network: str) -> None:
    await control(standins, network, "/_faults", {"latencyMs": 1500})
    policy = HttpPolicy(
        read_timeout=0.2, connect_timeout=0.5, max_attempts=2, backoff_base=0.01, backoff_cap=0.01
    )
    adapter = make_adapter("slow", provider_spec(standins, network), KEY, http_policy=policy)
    try:
        with pytest.raises(Unavailable, match="timed out"):
            await adapter.list_offers()
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("network", OFFER_NETWORKS)
async def test_429_waits_as_long_as_retry_after_says(standins: Standins, network: str) -> None:
    await control(standins, network, "/_faults", {"rateLimitNext": 2, "retryAfterSeconds": 3})
    adapter = adapter_for(standins, network)
    waited = record_sleeps(adapter)
    try:
        assert await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert waited == [3.0, 3.0]
    assert adapter.circuit_state == "Closed"


async def test_429_beyond_the_retry_budget_raises_rate_limited(standins: Standins) -> None:
    await control(standins, "vastai", "/_faults", {"rateLimitNext": 10, "retryAfterSeconds": 120})
    adapter = adapter_for(standins, "vastai")
    try:
        with pytest.raises(RateLimited) as caught:
            await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert caught.value.retry_after == 120.0


async def test_429_without_retry_after_backs_off_with_jitter(standins: Standins) -> None:
    # Vast.ai answers 429 with no Retry-After header at all.
    await control(standins, "vastai", "/_faults", {"rateLimitNext": 2, "retryAfterSeconds": None})
    adapter = adapter_for(standins, "vastai")
    waited = record_sleeps(adapter)
    try:
        assert await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert len(waited) == 2
    assert 0 <= waited[0] <= FAST.backoff_base
    assert 0 <= waited[1] <= min(FAST.backoff_cap, FAST.backoff_base * 2)


@pytest.mark.parametrize("network", OFFER_NETWORKS)
async def test_circuit_opens_then_half_opens_and_recovers(standins: Standins, network: str) -> None:
    await control(standins, network, "/_faults", {"errorRate": 1.0})
    adapter = adapter_for(standins, network)
    try:
        with pytest.raises(Unavailable):
            await adapter.list_offers()  # three failed attempts: threshold reached
        assert adapter.circuit_state == "Open"
        before = (await control(standins, network, "/_stats"))["requests"]
        with pytest.raises(CircuitOpen):
            await adapter.list_offers()
        assert (await control(standins, network, "/_stats"))["requests"] == before
        await asyncio.sleep(FAST.open_seconds + 0.05)
        assert adapter.circuit_state == "HalfOpen"
        await control(standins, network, "/_faults", {})
        assert await adapter.list_offers()
        assert adapter.circuit_state == "Closed"
    finally:
        await adapter.aclose()


async def test_a_failed_half_open_probe_reopens_the_circuit(standins: Standins) -> None:
    await control(standins, "nosana", "/_faults", {"errorRate": 1.0})
    adapter = adapter_for(standins, "nosana")
    try:
        with pytest.raises(Unavailable):
            await adapter.list_offers()
        await asyncio.sleep(FAST.open_seconds + 0.05)
        with pytest.raises((Unavailable, CircuitOpen)):
            await adapter.list_offers()
        assert adapter.circuit_state == "Open"
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_a_job_vanishing_mid_run_is_lost(standins: Standins, network: str) -> None:
    adapter = adapter_for(standins, network)
    try:
        job = job_spec(network, estimatedDuration="10h")
        ref = await submit(adapter, network, "vanish", job=job)
        await wait_for(adapter, ref, {"Running"}, timeout=10)
        await control(standins, network, "/_faults", {"vanishRunning": True})
        status = await adapter.status(ref)
        await adapter.cancel(ref)  # cancelling a vanished job is fine
    finally:
        await adapter.aclose()
    assert status.state == "Lost"


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_a_price_jump_before_submission_is_refused(standins: Standins, network: str) -> None:
    adapter = adapter_for(standins, network)
    try:
        quoted = [o for o in await adapter.list_offers() if o.gpu_product == product_for(network)]
        price = min(o.pricing.usd for o in quoted if isinstance(o.pricing, PerGPUHour))
        await control(standins, network, "/_faults", {"priceFactor": "2"})
        with pytest.raises(PriceAboveCap) as caught:
            await submit(adapter, network, "jump", cap=price)
    finally:
        await adapter.aclose()
    assert caught.value.price > caught.value.cap == price
    stats = await control(standins, network, "/_stats")
    if network != "akash":  # Akash only learns the price from bids, after creating
        assert not stats["created"]
    assert all(phase in ("stopped",) for phase in stats["jobs"].values())


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_charging_more_than_quoted_is_caught_after_submission(
    standins: Standins, network: str
) -> None:
    await control(standins, network, "/_faults", {"silentPriceFactor": "3"})
    adapter = adapter_for(standins, network)
    try:
        quoted = [o for o in await adapter.list_offers() if o.gpu_product == product_for(network)]
        price = min(o.pricing.usd for o in quoted if isinstance(o.pricing, PerGPUHour))
        with pytest.raises(PriceAboveCap, match="after"):
            await submit(adapter, network, "silent", cap=max(price, Decimal("0.40")))
    finally:
        await adapter.aclose()
    stats = await control(standins, network, "/_stats")
    assert len(stats["created"]) == 1
    # Whatever was created was cancelled again: stopped, or destroyed outright.
    assert all(phase == "stopped" for phase in stats["jobs"].values())


async def test_livepeer_costs_come_from_static_prices_as_no_gateway_reports_one(
    standins: Standins,
) -> None:
    # A gateway that falls back to a dearer orchestrator says nothing about it (go-livepeer
    # sends no price with a response): the adapter can only cost the batch at the
    # ComputeProvider's static price, and says so in docs/networks.md.
    await control(standins, "livepeer", "/_faults", {"silentPriceFactor": "2"})
    adapter = adapter_for(standins, "livepeer")
    try:
        ref = await submit(adapter, "livepeer", "lp-jump", cap=Decimal("0.35"))
        status = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=5)
    finally:
        await adapter.aclose()
    assert status.state == "Succeeded", status.message
    assert status.price_per_gpu_hour == Decimal("0.30")  # the static price, not 0.60


async def test_livepeer_batch_survives_transient_5xx(standins: Standins) -> None:
    # Two failures stay below the breaker's threshold of three.
    await control(standins, "livepeer", "/_faults", {"failNext": 2})
    adapter = adapter_for(standins, "livepeer")
    try:
        ref = await submit(adapter, "livepeer", "lp-flaky")
        status = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=10)
    finally:
        await adapter.aclose()
    assert status.state == "Succeeded", status.message
    stats = await control(standins, "livepeer", "/_stats")
    # Retried requests carry the same idempotency key; each was *answered* once.
    assert len(stats["submissions"]) == 20
    assert set(stats["submissions"].values()) == {1}
    assert stats["requests"] == 22
