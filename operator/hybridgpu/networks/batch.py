"""Client-driven batches: the operator itself sends each request, with bounded concurrency.

Used by the Livepeer and OpenAI-compatible adapters (:class:`BatchAdapter` holds what they
share; each keeps only its wire format). A batch lives in a background asyncio task of the
operator process, keyed by the idempotency key. Its :class:`Checkpoint` moves as requests
complete; the operator persists it from ``status()`` and hands it back to ``submit()`` after a
restart so completed requests are skipped.

A batch's ``accrued_usd`` covers the whole batch: what this process paid for the requests it
sent, plus the requests the checkpoint says were completed before (by an earlier process),
each costed by the adapter's ``prior_cost`` estimate of that request.

Memory: the bodies are a :class:`~hybridgpu.networks.requests.Requests` sequence (built one at
a time as they are sent), the workers walk the indices instead of queueing them all, and only
the output of the lowest completed index is kept (the one ``result`` reports). A batch of a
million requests therefore costs the operator what eight requests in flight cost.

Failure: any error of one request, a network's NetworkError or an answer the adapter could not
use, fails the batch with a message naming the request; a batch never stays Running with no
worker left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import AdapterBase, bearer
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import NetworkError
from hybridgpu.networks.guard import PARSE_ERRORS
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.networks.requests import Requests

log = logging.getLogger(__name__)
CENT_MILLIONTH = Decimal("0.00000001")


@dataclass(slots=True)
class RequestResult:
    """What one request cost and produced."""

    cost_usd: Decimal
    output: str | None = None
    price_per_gpu_hour: Decimal | None = None


Sender = Callable[[int, dict[str, Any]], Awaitable[RequestResult]]
PriorCost = Callable[[dict[str, Any]], Decimal]
"""What one request completed by an earlier process is taken to have cost."""


@dataclass
class Batch:
    """One running (or finished) client-driven batch."""

    key: str
    bodies: Sequence[dict[str, Any]]
    checkpoint: Checkpoint
    accrued_usd: Decimal = Decimal(0)
    price_per_gpu_hour: Decimal | None = None
    first_output: tuple[int, str] | None = None
    """The output of the lowest completed index that returned one."""
    error: str = ""
    cancelled: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def total(self) -> int:
        return len(self.bodies)

    def status(self) -> RemoteStatus:
        """The batch as a RemoteStatus."""
        done = self.checkpoint.count()
        common = {
            "completed": done,
            "total": self.total,
            "accrued_usd": self.accrued_usd.quantize(CENT_MILLIONTH),
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "checkpoint": self.checkpoint,
        }
        if self.cancelled:
            return RemoteStatus("Failed", message="cancelled", **common)  # type: ignore[arg-type]
        if self.error:
            return RemoteStatus("Failed", message=self.error, **common)  # type: ignore[arg-type]
        if done >= self.total:
            return RemoteStatus("Succeeded", **common)  # type: ignore[arg-type]
        return RemoteStatus("Running", **common)  # type: ignore[arg-type]


class BatchRunner:
    """Runs batches in background tasks, at most ``concurrency`` requests in flight each."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("batch_concurrency must be at least 1")
        self.concurrency = concurrency
        self.batches: dict[str, Batch] = {}

    def start(
        self,
        key: str,
        bodies: Sequence[dict[str, Any]],
        send: Sender,
        checkpoint: Checkpoint | None,
        prior_cost: PriorCost,
    ) -> Batch:
        """Start the batch for ``key`` unless it already runs here; return it."""
        existing = self.batches.get(key)
        if existing is not None and not (existing.error or existing.cancelled):
            return existing
        known = existing.checkpoint if existing is not None else Checkpoint()
        if checkpoint is None:
            # Retrying a failed batch in this process: keep what it already completed.
            checkpoint = known
        batch = Batch(key, bodies, checkpoint)
        batch.accrued_usd = existing.accrued_usd if existing is not None else Decimal(0)
        # Requests completed by an earlier process were paid for too; this one never saw
        # their cost, so each is costed by the adapter's estimate.
        batch.accrued_usd += _prior_costs(bodies, checkpoint, known, prior_cost)
        self.batches[key] = batch
        batch.task = asyncio.get_running_loop().create_task(self._run(batch, send))
        return batch

    async def _run(self, batch: Batch, send: Sender) -> None:
        done = batch.checkpoint
        # One iterator shared by the workers: each takes the next index not done yet.
        pending: Iterator[int] = (i for i in range(batch.total) if not done.is_done(i))

        async def worker() -> None:
            while not batch.error and not batch.cancelled:
                index = next(pending, None)
                if index is None:
                    return
                try:
                    result = await send(index, batch.bodies[index])
                except NetworkError as exc:
                    batch.error = f"request {index}: {exc.message}"
                    return
                except PARSE_ERRORS as exc:
                    # An answer the adapter could not read: the batch fails, the loop lives.
                    batch.error = f"request {index}: unexpected answer ({type(exc).__name__})"
                    return
                batch.accrued_usd += result.cost_usd
                if result.price_per_gpu_hour is not None:
                    batch.price_per_gpu_hour = result.price_per_gpu_hour
                if result.output is not None and (
                    batch.first_output is None or index < batch.first_output[0]
                ):
                    batch.first_output = (index, result.output)
                batch.checkpoint = batch.checkpoint.with_done(index)

        left = batch.total - done.count()
        workers = min(self.concurrency, max(left, 1))
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        except Exception as exc:
            # A bug rather than the network: still end the batch, never leave it Running.
            log.exception("batch %s stopped", batch.key)
            batch.error = batch.error or f"batch stopped: {type(exc).__name__}"

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

    def active_batches(self) -> int:
        """Batches of this process still sending requests."""
        return sum(1 for b in self.runner.batches.values() if b.status().state == "Running")

    async def post(self, path: str, key: str, index: int, body: dict[str, Any]) -> httpx.Response:
        """Send request ``index`` of the batch ``key``; retried safely under its own key."""
        return await self.client.request(
            "POST", path, json=body, retry=True, headers={"Idempotency-Key": f"{key}/{index}"}
        )

    def start_batch(
        self,
        key: str,
        bodies: Sequence[dict[str, Any]],
        send: Sender,
        checkpoint: Checkpoint | None,
        prior_cost: PriorCost,
    ) -> tuple[RemoteRef, Batch]:
        """Start (or rejoin) the batch for ``key`` in the background."""
        ref = RemoteRef(self.name, f"batch-{key}", key)
        batch = self.runner.start(key, bodies, send, checkpoint, prior_cost)
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
        """The first output reference the network returned, if any."""
        batch = self.runner.batches.get(ref.idempotency_key)
        if batch is None or batch.first_output is None:
            return None
        return batch.first_output[1]

    async def stop_all(self) -> None:
        """Stop and forget every batch of this process (another process takes them over)."""
        await self.runner.aclose()
        self.runner.batches.clear()

    async def aclose(self) -> None:
        """Stop background batches and close the client."""
        await self.runner.aclose()
        await super().aclose()


def _prior_costs(
    bodies: Sequence[dict[str, Any]],
    checkpoint: Checkpoint,
    known: Checkpoint,
    prior_cost: PriorCost,
) -> Decimal:
    """What the requests done in ``checkpoint`` but not in ``known`` are taken to have cost."""
    if isinstance(bodies, Requests) and bodies.uniform and not known.count():
        # Every body costs the same: one estimate times the count, not a million bodies built.
        done = min(checkpoint.count(), len(bodies))
        return prior_cost(bodies[0]) * done if done else Decimal(0)
    total = Decimal(0)
    for index in range(len(bodies)):
        if checkpoint.is_done(index) and not known.is_done(index):
            total += prior_cost(bodies[index])
    return total
