"""A network that refuses one request of a client-driven batch (HTTP 400/413/415/422) gets an
error line for it, as OpenAI's Batch API and vLLM's run-batch write one, and the batch goes
on; a refused credential, a missing path or a network that refuses everything ends it."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from hybridgpu.networks.batch import (
    REFUSALS_BEFORE_ANY_ANSWER,
    Batch,
    BatchRunner,
    RequestResult,
    memory_results,
)
from hybridgpu.networks.errors import BadRequest, NetworkError, Unauthorized
from hybridgpu.results.formats import batch_line
from hybridgpu.results.reader import Request
from hybridgpu.results.source import RequestSource

COST = Decimal("0.001")


def bodies(total: int) -> RequestSource:
    return RequestSource.of_requests(
        [Request(i, f"c-{i}", {"prompt": f"p{i}"}) for i in range(total)]
    )


async def run(total: int, refuse: dict[int, NetworkError]) -> Batch:
    async def send(request: Request) -> RequestResult:
        await asyncio.sleep(0)
        if request.index in refuse:
            raise refuse[request.index]
        return RequestResult(COST, batch_line("k", request, 200, {"ok": request.index}))

    runner = BatchRunner(4)
    try:
        batch = await runner.start(
            "k", memory_results("k", bodies(total)), send, None, lambda b: COST, durable=False
        )
        assert batch.task is not None
        await batch.task
        return batch
    finally:
        await runner.aclose()


def lines(batch: Batch) -> list[dict[str, Any]]:
    output = batch.results.output
    data = output.store.get_bytes_sync(output.layout.output, 10**6)
    return [json.loads(line) for line in data.splitlines()]


async def test_a_refused_request_gets_an_error_line_and_the_batch_goes_on() -> None:
    refused = BadRequest("p", "POST /text-to-image: HTTP 400: prompt field is required", 400)
    too_long = BadRequest("p", "POST /text-to-image: HTTP 413: too large", 413)
    batch = await run(40, {3: refused, 30: too_long})
    state = batch.status()
    assert state.state == "Succeeded", state.message
    assert state.output is not None and state.output.records == 40 and state.output.failed == 2
    out = lines(batch)
    assert [line["custom_id"] for line in out] == [f"c-{i}" for i in range(40)]
    assert out[3]["response"]["status_code"] == 400
    assert "prompt field is required" in out[3]["response"]["body"]["error"]["message"]
    assert out[30]["response"]["status_code"] == 413
    assert out[4]["response"]["body"] == {"ok": 4}
    # The network did no work for the refused requests: they cost nothing.
    assert state.accrued_usd == COST * 38


async def test_a_refused_credential_still_ends_the_batch() -> None:
    batch = await run(40, {5: Unauthorized("p", "POST /x: HTTP 401: credential refused", 401)})
    state = batch.status()
    assert state.state == "Failed" and "request 5" in state.message


async def test_a_network_that_refuses_every_request_fails_the_batch() -> None:
    """A model it does not serve is the job's fault, not one request's: the job fails over
    (or fails) instead of succeeding with nothing but error lines."""
    every = {i: BadRequest("p", "POST /llm: HTTP 400: model not supported", 400) for i in range(64)}
    batch = await run(64, every)
    state = batch.status()
    assert state.state == "Failed"
    assert "model not supported" in state.message
    assert f"first {REFUSALS_BEFORE_ANY_ANSWER} requests were all refused" in state.message
