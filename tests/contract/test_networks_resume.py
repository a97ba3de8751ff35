"""Client-driven batches: bounded concurrency, and a restart resumes from the checkpoint
without re-sending completed requests."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from hybridgpu.networks import Checkpoint, RemoteRef, make_adapter
from hybridgpu.standins import Standins
from tests.contract.networks_helpers import (
    FAST,
    KEY,
    control,
    job_spec,
    product_for,
    provider_spec,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
CLIENT_DRIVEN = ("livepeer", "openai")
PER_REQUEST_USD = {
    # 0.30 USD/GPU-hour x 10 minutes on 1 GPU, spread over 60 requests.
    "livepeer": Decimal("0.30") / 6 / 60,
    # 3 prompt words at 0.13 and 2 completion tokens at 0.38 USD per million tokens.
    "openai": (3 * Decimal("0.13") + 2 * Decimal("0.38")) / 1_000_000,
}


@pytest.mark.parametrize("network", CLIENT_DRIVEN)
async def test_requests_in_flight_never_exceed_the_concurrency(
    standins: Standins, network: str
) -> None:
    standins.states[network].config.request_latency_seconds = 0.02  # type: ignore[index]
    adapter = make_adapter(
        "bounded", provider_spec(standins, network), KEY, http_policy=FAST, batch_concurrency=3
    )
    try:
        ref = await submit(adapter, network, "b", input={"requests": 30})
        status = await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=10)
    finally:
        await adapter.aclose()
    assert status.state == "Succeeded"
    stats = await control(standins, network, "/_stats")
    assert stats["maxInFlight"] == 3


@pytest.mark.parametrize("network", CLIENT_DRIVEN)
async def test_restart_resumes_without_resending_completed_requests(
    standins: Standins, network: str
) -> None:
    standins.states[network].config.request_latency_seconds = 0.01  # type: ignore[index]
    job = job_spec(network, input={"requests": 60, "inputTokens": 3, "outputTokens": 2})
    first = make_adapter(
        "p", provider_spec(standins, network), KEY, http_policy=FAST, batch_concurrency=2
    )
    ref = await first.submit(
        job, idempotency_key="resume", gpu_product=product_for(network), max_price_per_gpu_hour=None
    )
    while (await first.status(ref)).completed < 20:
        await asyncio.sleep(0.01)
    saved = (await first.status(ref)).checkpoint
    assert saved is not None
    persisted = saved.to_str()  # what the operator writes into the InferenceJob status
    await first.aclose()  # the operator process dies; in-flight requests are abandoned

    second = make_adapter(
        "p", provider_spec(standins, network), KEY, http_policy=FAST, batch_concurrency=2
    )
    assert (await second.status(RemoteRef.from_str(ref.to_str()))).state == "Lost"
    standins.states[network].config.request_latency_seconds = 0.05  # type: ignore[index]
    try:
        again = await second.submit(
            job,
            idempotency_key="resume",
            gpu_product=product_for(network),
            max_price_per_gpu_hour=None,
            checkpoint=Checkpoint.from_str(persisted),
        )
        assert again == ref
        resumed = await second.status(again)
        final = await wait_for(second, again, {"Succeeded", "Failed"}, timeout=10)
    finally:
        await second.aclose()
    assert final.state == "Succeeded"
    assert final.completed == 60
    sent = (await control(standins, network, "/_stats"))["submissions"]
    assert set(sent) == {f"resume/{i}" for i in range(60)}
    for index in range(60):
        if saved.is_done(index):
            assert sent[f"resume/{index}"] == 1, f"completed request {index} was sent again"
    # Only requests that were in flight at the crash may have gone out twice.
    assert sum(sent.values()) - 60 <= 2
    # The cost covers the whole batch, not only what the second process sent: already on
    # resubmission it counts the requests the first process completed.
    per_request = PER_REQUEST_USD[network]
    assert resumed.accrued_usd >= saved.count() * per_request - Decimal("0.00000001")
    assert abs(final.accrued_usd - 60 * per_request) <= Decimal("0.0000001"), final.accrued_usd
