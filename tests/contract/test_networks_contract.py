"""Every adapter against its stand-in: offers, submit, progress, cost, idempotency, cancel."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hybridgpu.networks import Unauthorized
from hybridgpu.routing.snapshot import PerGPUHour, PerToken
from hybridgpu.standins import Standins
from tests.contract.networks_helpers import (
    CONTAINER_NETWORKS,
    KEY,
    adapter_for,
    control,
    job_spec,
    product_for,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
ALL = ("livepeer", "akash", "openai", "nosana", "vastai")


@pytest.mark.parametrize("network", ALL)
async def test_offers_carry_the_configured_prices(standins: Standins, network: str) -> None:
    adapter = adapter_for(standins, network)
    try:
        offers = await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert offers, "every stand-in offers something"
    assert all(o.provider == f"{network}-test" and o.provider_type.value == network for o in offers)
    config = standins.states[network].config  # type: ignore[index]
    if network == "openai":
        by_model = {o.labels["hybridgpu.dev/model"]: o.pricing for o in offers}
        llama = by_model["meta-llama/Llama-3.3-70B-Instruct"]
        assert isinstance(llama, PerToken)
        assert llama.input_usd_per_million == Decimal("0.13")
        assert llama.output_usd_per_million == Decimal("0.38")
        return
    expected = {
        o.usd_per_gpu_hour
        for o in config.offers_for(network)
        if o.gpu_product == product_for(network)
    }
    if network == "livepeer":  # priced from the ComputeProvider's staticPrices
        expected = {Decimal("0.30")}
    seen = {
        o.pricing.usd
        for o in offers
        if o.gpu_product == product_for(network) and isinstance(o.pricing, PerGPUHour)
    }
    assert seen and seen <= expected
    assert all(o.available > 0 for o in offers if o.gpu_product == product_for(network))


@pytest.mark.parametrize("network", ALL)
async def test_a_job_runs_to_success_with_progress_and_cost(
    standins: Standins, network: str
) -> None:
    adapter = adapter_for(standins, network)
    job = job_spec(network)
    try:
        ref = await submit(adapter, network, "job-a-1", cap=Decimal("5"), job=job)
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
        result = await adapter.result(ref)
    finally:
        await adapter.aclose()
    assert final.state == "Succeeded", final.message
    assert final.completed == final.total == job.input.requests
    assert final.accrued_usd > 0
    assert isinstance(final.accrued_usd, Decimal)
    if network in ("livepeer", "nosana", "vastai"):
        assert result is not None
    if network == "livepeer":
        assert final.checkpoint is not None and final.checkpoint.watermark == job.input.requests
    if network == "openai":
        # 20 requests x (10 prompt words x 0.13 + 5 completion tokens x 0.38) per million.
        assert final.accrued_usd == Decimal(20 * (10 * 13 + 5 * 38)) / Decimal(100_000_000)
    assert adapter.start_latency[0] is not None


@pytest.mark.parametrize("network", ALL)
async def test_submit_is_idempotent_per_key(standins: Standins, network: str) -> None:
    adapter = adapter_for(standins, network)
    job = job_spec(network)
    try:
        first = await submit(adapter, network, "same-key", job=job)
        second = await submit(adapter, network, "same-key", job=job)
        await wait_for(adapter, first, {"Succeeded", "Running"}, timeout=15)
        await wait_for(adapter, first, {"Succeeded"}, timeout=15)
    finally:
        await adapter.aclose()
    assert first == second
    stats = await control(standins, network, "/_stats")
    if network in CONTAINER_NETWORKS:
        assert len(stats["created"]) == 1
        assert sum(stats["submissions"].values()) == 1
    else:
        assert len(stats["submissions"]) == job.input.requests
        assert set(stats["submissions"].values()) == {1}


@pytest.mark.parametrize("network", CONTAINER_NETWORKS)
async def test_find_by_key_returns_what_submit_created_and_creates_nothing(
    standins: Standins, network: str
) -> None:
    adapter = adapter_for(standins, network)
    job = job_spec(network)
    cap = Decimal("5")
    try:
        ref = await submit(adapter, network, "found-key", cap=cap, job=job)
        found = await adapter.find(
            job,
            idempotency_key="found-key",
            gpu_product=product_for(network),
            max_price_per_gpu_hour=cap,
        )
        missing = await adapter.find(
            job,
            idempotency_key="never-submitted",
            gpu_product=product_for(network),
            max_price_per_gpu_hour=cap,
        )
    finally:
        await adapter.aclose()
    assert found is not None and found.id == ref.id
    assert missing is None
    stats = await control(standins, network, "/_stats")
    assert len(stats["created"]) == 1


@pytest.mark.parametrize("network", ALL)
async def test_cancel_stops_the_job_and_is_idempotent(standins: Standins, network: str) -> None:
    standins.states[network].config.request_latency_seconds = 0.05  # type: ignore[index]
    adapter = adapter_for(standins, network)
    try:
        job = job_spec(network, estimatedDuration="10h", input={"requests": 400})
        ref = await submit(adapter, network, "to-cancel", job=job)
        await wait_for(adapter, ref, {"Running"}, timeout=15)
        await adapter.cancel(ref)
        await adapter.cancel(ref)
        after = await adapter.status(ref)
    finally:
        await adapter.aclose()
    assert after.state in ("Failed", "Lost")
    assert after.completed < 400


@pytest.mark.parametrize("network", ALL)
@pytest.mark.parametrize("credential", [None, "not-" + KEY])
async def test_stand_ins_refuse_a_missing_or_wrong_credential(
    standins: Standins, network: str, credential: str | None
) -> None:
    adapter = adapter_for(standins, network, credential=credential)
    try:
        try:
            ref = await submit(adapter, network, "nokey")
        except Unauthorized as exc:
            message = exc.message
        else:  # Livepeer batches run in the background: the refusal shows in status.
            status = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=5)
            assert status.state == "Failed"
            message = status.message
    finally:
        await adapter.aclose()
    assert "credential refused" in message
    stats = await control(standins, network, "/_stats")
    assert stats["unauthorized"] >= 1
    assert not stats["created"]


@pytest.mark.parametrize("network", ["akash", "nosana"])
async def test_resubmitting_a_finished_attempt_does_not_start_it_again(
    standins: Standins, network: str
) -> None:
    adapter = adapter_for(standins, network)
    job = job_spec(network)
    try:
        ref = await submit(adapter, network, "done-once", job=job)
        await wait_for(adapter, ref, {"Succeeded"}, timeout=15)
        again = await submit(adapter, network, "done-once", job=job)
    finally:
        await adapter.aclose()
    assert again == ref
    stats = await control(standins, network, "/_stats")
    assert len(stats["created"]) == 1


async def test_retrying_a_failed_batch_keeps_its_completed_requests(standins: Standins) -> None:
    adapter = adapter_for(standins, "livepeer")
    job = job_spec("livepeer", input={"requests": 20})
    try:
        # 402 refuses the account, which ends the batch (a 400 refuses only its request).
        await control(standins, "livepeer", "/_faults", {"errorStatus": 402, "failNext": 1})
        ref = await submit(adapter, "livepeer", "retry", job=job)
        failed = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=5)
        assert failed.state == "Failed"
        await submit(adapter, "livepeer", "retry", job=job)
        final = await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=5)
    finally:
        await adapter.aclose()
    assert final.state == "Succeeded"
    sent = (await control(standins, "livepeer", "/_stats"))["submissions"]
    assert set(sent.values()) == {1} and len(sent) == 20, sent
