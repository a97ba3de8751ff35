"""One timer heap for every unfinished job, served by a few workers.

A job costs an entry in a heap and a dict, not a task with its own stack (Kopf daemons cost
about 90 KiB each). A job is never worked on by two workers at once; a wake-up that arrives
while it is being worked on runs it again right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[float | None]]
"""Works on one job; returns seconds until it is due again, or None for no timer."""


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 16,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._handler = handler
        self._gate = gate
        """Awaited before each job is taken: holds the workers while this process is paused."""
        self._workers = workers
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._again: dict[str, float] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def schedule(self, uid: str, delay: float) -> None:
        """Work on ``uid`` in ``delay`` seconds, unless it is due sooner already."""
        due = time.monotonic() + max(delay, 0.0)
        if uid in self._running:
            self._again[uid] = min(due, self._again.get(uid, due))
            return
        if uid in self._due and self._due[uid] <= due:
            return
        self._due[uid] = due
        heapq.heappush(self._heap, (due, next(self._seq), uid))
        self._changed.set()

    def cancel(self, uid: str) -> None:
        self._due.pop(uid, None)
        self._again.pop(uid, None)

    def __len__(self) -> int:
        return len(self._due)

    def _pop_due(self) -> str | float:
        """A due uid, or the seconds until the next one is due."""
        now = time.monotonic()
        while self._heap:
            due, _, uid = self._heap[0]
            if self._due.get(uid) != due:  # rescheduled or cancelled since
                heapq.heappop(self._heap)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._due[uid]
            return uid
        return 3600.0

    async def _worker(self) -> None:
        while True:
            if self._gate is not None:
                await self._gate()
            # Cleared before looking, so a job scheduled meanwhile ends the wait at once.
            self._changed.clear()
            item = self._pop_due()
            if isinstance(item, float):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=item)
                continue
            uid = item
            self._running.add(uid)
            delay: float | None = None
            try:
                delay = await self._handler(uid)
            except asyncio.CancelledError:
                raise
            except Exception:  # the handler fails its own job; this is the last line
                log.exception("working on job %s failed", uid)
                delay = 10.0
            finally:
                self._running.discard(uid)
            again = self._again.pop(uid, None)
            if delay is not None:
                self.schedule(uid, delay)
            if again is not None:
                self.schedule(uid, max(again - time.monotonic(), 0.0))

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        tasks = [asyncio.create_task(self._worker()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
