"""Client-driven batches: the operator itself sends each request, with bounded concurrency.

Used by the Livepeer and OpenAI-compatible adapters. A batch lives in a background asyncio
task of the operator process, keyed by the idempotency key. Its :class:`Checkpoint` moves as
requests complete; the operator persists it from ``status()`` and hands it back to
``submit()`` after a restart so completed requests are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hybridgpu.networks.base import RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import NetworkError

log = logging.getLogger(__name__)
CENT_MILLIONTH = Decimal("0.00000001")


@dataclass(slots=True)
class RequestResult:
    """What one request cost and produced."""

    cost_usd: Decimal
    output: str | None = None
    price_per_gpu_hour: Decimal | None = None


Sender = Callable[[int, dict[str, Any]], Awaitable[RequestResult]]


@dataclass
class Batch:
    """One running (or finished) client-driven batch."""

    key: str
    bodies: list[dict[str, Any]]
    checkpoint: Checkpoint
    accrued_usd: Decimal = Decimal(0)
    price_per_gpu_hour: Decimal | None = None
    outputs: dict[int, str] = field(default_factory=dict)
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
        self, key: str, bodies: list[dict[str, Any]], send: Sender, checkpoint: Checkpoint | None
    ) -> Batch:
        """Start the batch for ``key`` unless it already runs here; return it."""
        existing = self.batches.get(key)
        if existing is not None and not (existing.error or existing.cancelled):
            return existing
        if existing is not None and checkpoint is None:
            # Retrying a failed batch in this process: keep what it already completed.
            checkpoint = existing.checkpoint
        batch = Batch(key, bodies, checkpoint or Checkpoint())
        if existing is not None:
            batch.accrued_usd = existing.accrued_usd
        self.batches[key] = batch
        batch.task = asyncio.get_running_loop().create_task(self._run(batch, send))
        return batch

    async def _run(self, batch: Batch, send: Sender) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(batch.total):
            if not batch.checkpoint.is_done(index):
                queue.put_nowait(index)

        async def worker() -> None:
            while not batch.error and not batch.cancelled:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await send(index, batch.bodies[index])
                except NetworkError as exc:
                    batch.error = f"request {index}: {exc.message}"
                    return
                batch.accrued_usd += result.cost_usd
                if result.price_per_gpu_hour is not None:
                    batch.price_per_gpu_hour = result.price_per_gpu_hour
                if result.output is not None:
                    batch.outputs[index] = result.output
                batch.checkpoint = batch.checkpoint.with_done(index)

        workers = min(self.concurrency, max(queue.qsize(), 1))
        await asyncio.gather(*(worker() for _ in range(workers)))

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
