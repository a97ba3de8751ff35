"""Vast.ai capacity: offers are per bundle (``num_gpus``) on machines that hold several GPUs.

Reproduces the failover defect: after a Nosana job vanished, submitting the same 1-GPU 4090
job to Vast.ai (key ``<uid>-2``) found "no rentable offer" although 8 GPUs were listed,
because an instance rented earlier held the only 1-GPU offer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from hybridgpu.networks import NetworkAdapter
from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import StandinConfig
from tests.contract.networks_helpers import (
    PRODUCT,
    adapter_for,
    control,
    job_spec,
    standin_config,
    wait_for,
)

PRICES = {"nosana": "0.29", "vastai": "0.34", "akash": "0.39"}


def failover_config() -> StandinConfig:
    """The e2e offers: a 4090 on nosana (0.29), vastai (0.34) and akash (0.39), 8 each."""
    offers = [
        {
            "network": network,
            "gpuProduct": PRODUCT,
            "memoryGiB": 24,
            "usdPerGpuHour": price,
            "available": 8,
        }
        for network, price in PRICES.items()
    ]
    base = standin_config(time_scale=600.0)
    return StandinConfig.model_validate(
        {**base.model_dump(by_alias=True), "offers": offers, "tokenPrices": []}
    )


@pytest.fixture
async def markets() -> AsyncIterator[Standins]:
    running = await start_standins(failover_config())
    try:
        yield running
    finally:
        await running.close()


async def free_4090s(adapter: NetworkAdapter) -> int:
    return sum(o.available for o in await adapter.list_offers() if o.gpu_product == PRODUCT)


async def test_failing_over_to_vastai_rents_though_an_earlier_instance_runs(
    markets: Standins,
) -> None:
    nosana = adapter_for(markets, "nosana")
    vast = adapter_for(markets, "vastai")
    job = job_spec("nosana", gpu={"count": 1, "products": [PRODUCT]}, estimatedDuration="10h")
    try:
        # An earlier job still runs on Vast.ai, on one GPU of the 8-GPU machine.
        earlier = await vast.submit(
            job, idempotency_key="earlier-1", gpu_product=PRODUCT, max_price_per_gpu_hour=None
        )
        await control(markets, "nosana", "/_faults", {"vanishRunning": True})
        first = await nosana.submit(
            job, idempotency_key="uid-1", gpu_product=PRODUCT, max_price_per_gpu_hour=None
        )
        lost = await wait_for(nosana, first, {"Lost", "Failed", "Succeeded"}, timeout=10)
        assert lost.state == "Lost"
        second = await vast.submit(
            job, idempotency_key="uid-2", gpu_product=PRODUCT, max_price_per_gpu_hour=None
        )
        running = await wait_for(vast, second, {"Running", "Failed", "Lost"}, timeout=10)
        assert await free_4090s(vast) == 6
        await vast.cancel(second)
        await vast.cancel(earlier)
        assert await free_4090s(vast) == 8
    finally:
        await nosana.aclose()
        await vast.aclose()
    assert running.state == "Running", running.message
    assert running.price_per_gpu_hour == Decimal(PRICES["vastai"])


async def test_free_gpus_count_each_machine_once_and_come_back(markets: Standins) -> None:
    vast = adapter_for(markets, "vastai")
    try:
        before = await free_4090s(vast)
        done = await vast.submit(
            job_spec("vastai", estimatedDuration="10m"),
            idempotency_key="short",
            gpu_product=PRODUCT,
            max_price_per_gpu_hour=None,
        )
        pair = await vast.submit(
            job_spec("vastai", gpu={"count": 2}, estimatedDuration="10h"),
            idempotency_key="pair",
            gpu_product=PRODUCT,
            max_price_per_gpu_hour=None,
        )
        during = await free_4090s(vast)
        await wait_for(vast, done, {"Succeeded"}, timeout=10)
        # The finished instance is not destroyed yet, but its container exited: GPUs free.
        after_exit = await free_4090s(vast)
        pair_status = await vast.status(pair)
        await vast.cancel(pair)
        after_destroy = await free_4090s(vast)
    finally:
        await vast.aclose()
    assert before == 8  # one machine of 8 GPUs, listed as 1-, 2-, 4- and 8-GPU bundles
    assert during == 5
    assert after_exit == 6
    assert after_destroy == 8
    assert pair_status.price_per_gpu_hour == Decimal(PRICES["vastai"])


async def test_a_bundle_larger_than_the_free_gpus_is_refused(markets: Standins) -> None:
    vast = adapter_for(markets, "vastai")
    try:
        eight = await vast.submit(
            job_spec("vastai", gpu={"count": 8}, estimatedDuration="10h"),
            idempotency_key="all",
            gpu_product=PRODUCT,
            max_price_per_gpu_hour=None,
        )
        assert await free_4090s(vast) == 0
        with pytest.raises(Exception, match="no rentable NVIDIA-GeForce-RTX-4090 offer"):
            await vast.submit(
                job_spec("vastai", estimatedDuration="10h"),
                idempotency_key="one-more",
                gpu_product=PRODUCT,
                max_price_per_gpu_hour=None,
            )
        await vast.cancel(eight)
    finally:
        await vast.aclose()


async def test_offers_say_how_many_gpus_one_job_can_have(markets: Standins) -> None:
    """A job's GPUs share one instance: the largest free bundle bounds it, and a Nosana job
    runs on one GPU, so routing never sends a bigger job there to be refused."""
    vast = adapter_for(markets, "vastai")
    nosana = adapter_for(markets, "nosana")
    try:
        (offered,) = [o for o in await vast.list_offers() if o.gpu_product == PRODUCT]
        pair = await vast.submit(
            job_spec("vastai", gpu={"count": 2}, estimatedDuration="10h"),
            idempotency_key="pair",
            gpu_product=PRODUCT,
            max_price_per_gpu_hour=None,
        )
        (after,) = [o for o in await vast.list_offers() if o.gpu_product == PRODUCT]
        await vast.cancel(pair)
        markets_offers = [o for o in await nosana.list_offers() if o.gpu_product == PRODUCT]
    finally:
        await vast.aclose()
        await nosana.aclose()
    assert offered.max_gpus_per_job == 8
    # 6 GPUs left on the machine, listed as bundles of 1, 2, 4 and all 6: no 8 any more.
    assert after.available == 6 and after.max_gpus_per_job == 6
    assert markets_offers and all(o.max_gpus_per_job == 1 for o in markets_offers)
