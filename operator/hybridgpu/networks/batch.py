"""Client-driven batches: the operator itself sends each request, with bounded concurrency.

Used by the Livepeer and OpenAI-compatible adapters (:class:`BatchAdapter` holds what they
share; each keeps only its wire format and its output lines). A batch lives in a background
asyncio task of the operator process, keyed by the idempotency key.

The store is the checkpoint (:mod:`hybridgpu.results.output`): requests go out chunk by
chunk, a chunk's output lines are written as one part once all of them have an answer, and a
batch started again (after a restart, or by failover to another network) lists the parts
and sends only the chunks that are missing. When every part is there the batch composes the
output object; it is Succeeded only then, with the :class:`OutputSummary` in its status.
Without a result store (``results=None``: jobs of an operator configured without one, and
the adapters' own tests) the parts go to a store in this process's memory, and the
``checkpoint`` handed to ``submit`` marks what an earlier process completed.

A batch's ``accrued_usd`` covers the whole batch: what this process paid for the requests it
sent, plus the requests completed before (by an earlier process), each costed by the
adapter's ``prior_cost`` estimate of that request.

Memory: the requests are streamed (:class:`~hybridgpu.results.source.RequestSource`), one
chunk of at most 1024 requests and their output lines is held at a time. A batch of a
million requests therefore costs the operator what one chunk costs.

Failure: any error of one request, a network's NetworkError or an answer the adapter could not
use, fails the batch with a message naming the request; a batch never stays Running with no
worker left. A network's refusal of one request for what it holds (:data:`REQUEST_REFUSALS`)
is that request's output line instead, unless the network refuses every request it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from obstore.store import MemoryStore

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import AdapterBase, bearer
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest, NetworkError, NotFound, Unauthorized
from hybridgpu.networks.guard import PARSE_ERRORS
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.results.formats import batch_line
from hybridgpu.results.layout import JobLayout
from hybridgpu.results.output import BatchOutput, OutputSummary
from hybridgpu.results.reader import Request
from hybridgpu.results.resume import RunnerCheckpoint
from hybridgpu.results.source import RequestSource
from hybridgpu.results.store import ResultStore, StoreConfig, StoreError
from hybridgpu.results.urls import ObjectURL

log = logging.getLogger(__name__)
CENT_MILLIONTH = Decimal("0.00000001")


@dataclass(slots=True)
class RequestResult:
    """What one request cost and produced."""

    cost_usd: Decimal
    line: bytes | None = None
    """The request's output line (JSON, no newline)."""
    price_per_gpu_hour: Decimal | None = None


@dataclass(frozen=True)
class BatchResults:
    """Where a batch reads its requests and writes its output (the controller builds it)."""

    source: RequestSource
    output: BatchOutput


Sender = Callable[[Request], Awaitable[RequestResult]]
PriorCost = Callable[[dict[str, Any]], Decimal]
"""What one request completed by an earlier process is taken to have cost."""


def memory_results(key: str, source: RequestSource) -> BatchResults:
    """Results kept in this process's memory (no result store is configured)."""
    memory = MemoryStore()
    store = ResultStore(StoreConfig(bucket="memory", prefix=""), lambda _b: memory)
    layout = JobLayout(ObjectURL("memory", f"batches/{key}"))
    return BatchResults(source, BatchOutput(store, layout, source.total))


@dataclass
class Batch:
    """One running (or finished) client-driven batch."""

    key: str
    results: BatchResults
    checkpoint: Checkpoint
    durable: bool = False
    """Whether the store outlives this process (then no checkpoint goes to the job's status)."""
    accrued_usd: Decimal = Decimal(0)
    price_per_gpu_hour: Decimal | None = None
    output: OutputSummary | None = None
    partial: dict[int, bytes] = field(default_factory=dict)
    """Lines of answered requests whose chunk is not written yet: a retry in this process
    sends them not again (a new process does: only what is in the store is done)."""
    error: str = ""
    cancelled: bool = False
    answered: int = 0
    """Requests this process sent that the network answered."""
    refused: int = 0
    """Requests the network refused one by one (their output line records why)."""
    task: asyncio.Task[None] | None = None

    @property
    def total(self) -> int:
        return self.results.source.total

    def status(self) -> RemoteStatus:
        """The batch as a RemoteStatus."""
        done = min(self.checkpoint.count(), self.total)
        common: dict[str, Any] = {
            "completed": done,
            "total": self.total,
            "accrued_usd": self.accrued_usd.quantize(CENT_MILLIONTH),
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "checkpoint": None if self.durable else self.checkpoint,
            "output": self.output,
        }
        if self.cancelled:
            return RemoteStatus("Failed", message="cancelled", **common)
        if self.error:
            return RemoteStatus("Failed", message=self.error, **common)
        if self.output is not None:
            return RemoteStatus("Succeeded", **common)
        return RemoteStatus("Running", **common)


async def _chunks(
    requests: AsyncIterator[Request], output: BatchOutput
) -> AsyncIterator[tuple[int, list[Request]]]:
    """The requests grouped by checkpoint chunk: (first index, the chunk's requests)."""
    chunk: list[Request] = []
    async for request in requests:
        chunk.append(request)
        if len(chunk) == output.chunk:
            yield chunk[0].index, chunk
            chunk = []
    if chunk:
        yield chunk[0].index, chunk


REQUEST_REFUSALS = frozenset({400, 413, 415, 422})
"""Answers that refuse one request for what it holds (a prompt too long, a field missing),
not the batch: OpenAI's Batch API and vLLM's run-batch write them as the request's output line
and go on, and so does the in-cluster runner."""
REFUSALS_BEFORE_ANY_ANSWER = 16
"""Refusals with no request answered yet that fail the batch: the network refuses the job
itself (a model it does not serve, a parameter it rejects), not one request of it."""


def refused_alone(exc: BadRequest) -> bool:
    """Whether ``exc`` refuses one request only (the credential, a missing path or a 429 is
    the network's or the job's, and ends the batch)."""
    return exc.status in REQUEST_REFUSALS and not isinstance(exc, (Unauthorized, NotFound))


def _refusal(batch: Batch, request: Request, exc: BadRequest) -> RequestResult | None:
    """The refused request's output line (it costs nothing: the network did no work), or
    None when the batch fails instead."""
    batch.refused += 1
    if not batch.answered and batch.refused >= REFUSALS_BEFORE_ANY_ANSWER:
        batch.error = batch.error or (
            f"request {request.index}: {exc.message} (the first {batch.refused} requests "
            "were all refused)"
        )
        return None
    message = exc.message
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    line = batch_line(batch.key, request, exc.status or 400, body)
    return RequestResult(Decimal(0), line)


async def _adopt(batch: Batch, runner: RunnerCheckpoint, chunk: list[Request]) -> None:
    """Take the in-cluster runner's finished lines for the requests of ``chunk`` that are
    not done yet: they are neither sent nor paid for again."""
    for request in chunk:
        if batch.checkpoint.is_done(request.index) or request.index in batch.partial:
            continue
        line = await runner.take(request.index, request.custom_id)
        if line is not None:
            batch.partial[request.index] = line
            batch.checkpoint = batch.checkpoint.with_done(request.index)


class BatchRunner:
    """Runs batches in background tasks, at most ``concurrency`` requests in flight each."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("batch_concurrency must be at least 1")
        self.concurrency = concurrency
        self.batches: dict[str, Batch] = {}

    async def start(
        self,
        key: str,
        results: BatchResults,
        send: Sender,
        checkpoint: Checkpoint | None,
        prior_cost: PriorCost,
        *,
        durable: bool,
    ) -> Batch:
        """Start the batch for ``key`` unless it already runs here; return it."""
        existing = self.batches.get(key)
        if existing is not None and not (existing.error or existing.cancelled):
            return existing
        if existing is not None and existing.task is not None and not existing.task.done():
            # A failed batch's requests still in flight: their answers count as done.
            with contextlib.suppress(asyncio.CancelledError):
                await existing.task
        known = existing.checkpoint if existing is not None else Checkpoint()
        partial = dict(existing.partial) if existing is not None else {}
        if durable:
            # What is in the store is done, and what this process holds the answers of.
            stored = await results.output.done()
            checkpoint = Checkpoint.from_done((*stored.done_above, *partial), stored.watermark)
        elif checkpoint is None:
            # Retrying a failed batch in this process: keep what it already completed.
            checkpoint = known
        batch = Batch(key, results, checkpoint, durable=durable, partial=partial)
        batch.accrued_usd = existing.accrued_usd if existing is not None else Decimal(0)
        # Requests completed by an earlier process were paid for too; this one never saw
        # their cost, so each is costed by the adapter's estimate.
        batch.accrued_usd += await _prior_costs(results.source, checkpoint, known, prior_cost)
        self.batches[key] = batch
        batch.task = asyncio.get_running_loop().create_task(self._run(batch, send))
        return batch

    async def _run(self, batch: Batch, send: Sender) -> None:
        output = batch.results.output
        limit = asyncio.Semaphore(self.concurrency)

        async def one(request: Request) -> RequestResult | None:
            async with limit:
                if batch.error or batch.cancelled:
                    return None
                try:
                    answer = await send(request)
                except BadRequest as exc:
                    if not refused_alone(exc):
                        batch.error = batch.error or f"request {request.index}: {exc.message}"
                        return None
                    refusal = _refusal(batch, request, exc)
                    if refusal is None:
                        return None
                    answer = refusal
                except NetworkError as exc:
                    batch.error = batch.error or f"request {request.index}: {exc.message}"
                    return None
                except PARSE_ERRORS as exc:
                    # An answer the adapter could not read: the batch fails, the loop lives.
                    batch.error = batch.error or (
                        f"request {request.index}: unexpected answer ({type(exc).__name__})"
                    )
                    return None
                else:
                    batch.answered += 1
                batch.accrued_usd += answer.cost_usd
                if answer.price_per_gpu_hour is not None:
                    batch.price_per_gpu_hour = answer.price_per_gpu_hour
                batch.partial[request.index] = answer.line or b""
                batch.checkpoint = batch.checkpoint.with_done(request.index)
                return answer

        runner = (
            await RunnerCheckpoint.open(output.store, output.layout)
            if batch.durable
            else RunnerCheckpoint()
        )
        try:
            async for first, chunk in _chunks(batch.results.source.iterate(), output):
                await _adopt(batch, runner, chunk)
                todo = [r for r in chunk if not batch.checkpoint.is_done(r.index)]
                if not todo and not any(r.index in batch.partial for r in chunk):
                    continue  # the chunk's part is in the store
                await asyncio.gather(*(one(r) for r in todo))
                if batch.error or batch.cancelled:
                    return
                lines = [batch.partial.get(r.index, b"") for r in chunk]
                await output.write_part(first, [line for line in lines if line])
                for request in chunk:
                    batch.partial.pop(request.index, None)
            batch.output = await output.compose(complete=batch.durable)
        except StoreError as exc:
            # The store is the checkpoint: without it nothing more is sent.
            batch.error = batch.error or f"result store: {exc.message}"
        except Exception as exc:
            # A bug rather than the network: still end the batch, never leave it Running.
            log.exception("batch %s stopped", batch.key)
            batch.error = batch.error or f"batch stopped: {type(exc).__name__}"
        finally:
            await runner.close()
            if runner.kept:
                log.info(
                    "batch %s: %d requests resumed from the runner's checkpoint",
                    batch.key,
                    runner.kept,
                )

    async def cancel(self, key: str) -> None:
        """Stop the batch's remaining requests (a request in flight is abandoned)."""
        batch = self.batches.get(key)
        if batch is None:
            return
        batch.cancelled = True
        if batch.task is not None and not batch.task.done():
            batch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch.task

    async def aclose(self) -> None:
        """Cancel every batch still running."""
        for key in list(self.batches):
            batch = self.batches[key]
            if batch.task is not None and not batch.task.done():
                await self.cancel(key)


class BatchAdapter(AdapterBase):
    """An adapter whose jobs are batches of requests this process sends itself."""

    unattended = False

    def __init__(
        self,
        name: str,
        spec: ComputeProviderSpec,
        credential: str | None,
        policy: HttpPolicy,
        concurrency: int,
    ) -> None:
        super().__init__(name, spec, credential, policy, bearer(credential))
        self.runner = BatchRunner(concurrency)
        self.media_client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
        )
        """Fetches media the network answered with: no credential of the network's."""

    def active_batches(self) -> int:
        """Batches of this process still sending requests."""
        return sum(1 for b in self.runner.batches.values() if b.status().state == "Running")

    async def post(self, path: str, key: str, index: int, body: dict[str, Any]) -> httpx.Response:
        """Send request ``index`` of the batch ``key``; retried safely under its own key."""
        return await self.client.request(
            "POST", path, json=body, retry=True, headers={"Idempotency-Key": f"{key}/{index}"}
        )

    async def start_batch(
        self,
        key: str,
        source: RequestSource,
        send: Sender,
        checkpoint: Checkpoint | None,
        prior_cost: PriorCost,
        results: BatchResults | None,
    ) -> tuple[RemoteRef, Batch]:
        """Start (or rejoin) the batch for ``key`` in the background."""
        ref = RemoteRef(self.name, f"batch-{key}", key)
        durable = results is not None
        chosen = (
            BatchResults(source, results.output)
            if results is not None
            else memory_results(key, source)
        )
        batch = await self.runner.start(key, chosen, send, checkpoint, prior_cost, durable=durable)
        self.note_submitted(ref)
        return ref, batch

    async def find(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
    ) -> RemoteRef | None:
        """The batch's handle: it is this process's own work, named by its key."""
        del job, gpu_product, max_price_per_gpu_hour
        return RemoteRef(self.name, f"batch-{idempotency_key}", idempotency_key)

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """The batch's progress; Lost when this process does not run it (resubmit)."""
        batch = self.runner.batches.get(ref.idempotency_key)
        if batch is None:
            return RemoteStatus(
                "Lost", message="batch not running in this process; submit again with checkpoint"
            )
        return self.observe(ref, batch.status())

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop sending the batch's remaining requests."""
        await self.runner.cancel(ref.idempotency_key)

    async def result(self, ref: RemoteRef) -> str | None:
        """Where the batch's output object is, once written."""
        batch = self.runner.batches.get(ref.idempotency_key)
        if batch is None or batch.output is None:
            return None
        return batch.output.uri

    async def stop_all(self) -> None:
        """Stop and forget every batch of this process (another process takes them over)."""
        await self.runner.aclose()
        self.runner.batches.clear()

    async def aclose(self) -> None:
        """Stop background batches and close the client."""
        await self.runner.aclose()
        await self.media_client.aclose()
        await super().aclose()


async def _prior_costs(
    source: RequestSource,
    checkpoint: Checkpoint,
    known: Checkpoint,
    prior_cost: PriorCost,
) -> Decimal:
    """What the requests done in ``checkpoint`` but not in ``known`` are taken to have cost."""
    if not checkpoint.count():
        return Decimal(0)
    if source.uniform and not known.count():
        # Every body costs the same: one estimate times the count, not a million bodies built.
        done = min(checkpoint.count(), source.total)
        body = await source.first_body()
        return prior_cost(body) * done if done and body is not None else Decimal(0)
    total = Decimal(0)
    async for request in source.iterate():
        if checkpoint.is_done(request.index) and not known.is_done(request.index):
            total += prior_cost(request.body)
    return total
