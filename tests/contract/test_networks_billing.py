"""Container stand-ins bill simulated time: a 1-hour job at 0.29 USD/h costs about 0.29 USD,
though at timeScale 3600 it runs for one real second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime

import httpx
import pytest

from hybridgpu.networks import NetworkAdapter, RemoteRef, RemoteStatus
from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import StandinConfig
from tests.contract.networks_helpers import (
    CONTAINER_NETWORKS,
    KEY,
    PRODUCT,
    adapter_for,
    standin_config,
    submit,
    wait_for,
)

SCALE = 3600.0
PRICE = Decimal("0.29")


def one_price_config() -> StandinConfig:
    """A 4090 at 0.29 USD/GPU-hour on every container network, an hour per real second."""
    offers = [
        {
            "network": network,
            "gpuProduct": PRODUCT,
            "memoryGiB": 24,
            "usdPerGpuHour": str(PRICE),
            "available": 8,
        }
        for network in CONTAINER_NETWORKS
    ]
    base = standin_config(time_scale=SCALE)
    return StandinConfig.model_validate(
        {**base.model_dump(by_alias=True), "offers": offers, "tokenPrices": []}
    )


@pytest.fixture
async def priced() -> AsyncIterator[Standins]:
    running = await start_standins(one_price_config())
    try:
        yield running
    finally:
        await running.close()


async def run(
    running: Standins, network: str, duration: str, until: set[str]
) -> tuple[NetworkAdapter, RemoteRef, RemoteStatus]:
    """Submit a ``duration`` job at 0.29/GPU-hour and poll it until a state in ``until``."""
    adapter = adapter_for(
        running, network, staticPrices=[{"gpuProduct": PRODUCT, "pricePerGPUHour": str(PRICE)}]
    )
    ref = await submit(
        adapter, network, f"bill-{duration}", product=PRODUCT, estimatedDuration=duration
    )
    return adapter, ref, await wait_for(adapter, ref, until, timeout=20)


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_a_finished_hour_bills_an_hour(priced: Standins, network: str) -> None:
    adapter, _, final = await run(priced, network, "1h", {"Succeeded", "Failed", "Lost"})
    await adapter.aclose()
    assert final.state == "Succeeded", final.message
    if network == "akash":
        # Akash bills every block until the deployment is closed, and the adapter closes it
        # at the first poll after the runtime limit (here 0.02 s real = 72 s simulated).
        assert PRICE <= final.accrued_usd <= PRICE * Decimal("1.2"), final.accrued_usd
    else:
        assert abs(final.accrued_usd - PRICE) <= Decimal("0.003"), final.accrued_usd
    assert final.price_per_gpu_hour == PRICE


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_a_running_job_accrues_by_the_simulated_clock(priced: Standins, network: str) -> None:
    adapter, ref, _ = await run(priced, network, "10h", {"Running"})
    try:
        await asyncio.sleep(1.2)  # more than one simulated hour
        running = await adapter.status(ref)
        await adapter.cancel(ref)
    finally:
        await adapter.aclose()
    assert running.state == "Running"
    # At least an hour at 0.29, and far less than the whole 10 h (2.90).
    assert PRICE <= running.accrued_usd < Decimal("1.5"), running.accrued_usd


async def test_responses_carry_the_simulated_date(priced: Standins) -> None:
    async with httpx.AsyncClient(base_url=priced.base_url("nosana")) as client:
        first = await client.get("/api/markets/")
        await asyncio.sleep(1.0)
        second = await client.get("/api/markets/", headers={"Authorization": f"Bearer {KEY}"})
    elapsed = parsedate_to_datetime(second.headers["Date"]) - parsedate_to_datetime(
        first.headers["Date"]
    )
    # One real second is an hour of simulated time (give or take the header's whole seconds).
    assert 3500 <= elapsed.total_seconds() <= 4000, elapsed
    assert isinstance(parsedate_to_datetime(first.headers["Date"]), datetime)
