"""Early wake-ups for jobs deferred for price.

A job deferred for price (decision reason DeferredForPrice) waits for a cheap place that lacks
capacity now. Its retry of hours is a backstop: the operator calls ``notify`` wherever capacity
may have come free (an attempt ended, an offer grew or got cheaper, a GPU pod ended, a GPU node
appeared), and the jobs awaiting that place decide again at once. A notification is a hint,
not a fact: the woken job decides on a fresh snapshot and may well wait again.

Places are routing candidate names, ``in-cluster/<product>`` or ``<provider>/<product>``; a
bare ``<provider>`` (or ``in-cluster``) stands for every product of it, since a provider's
concurrency limit and the queue of an unknown pool are not tied to one product.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from hybridgpu.routing.admission import matches, provider_of


class Stopped(Protocol):
    """What is used of Kopf's ``DaemonStopped``: truthy once set, and ``await wait(timeout)``."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[object]: ...


class Wakeup:
    """Wakes sleeping jobs whose awaited places were named in a ``notify``."""

    def __init__(self) -> None:
        self.generation = 0
        """Counts notifications; a job notes it before deciding to catch the ones in between."""
        # place -> generation of its last notification. Bounded by the number of pools,
        # providers and their products, so it is never pruned.
        self._last: dict[str, int] = {}
        self._waiters: dict[asyncio.Future[None], frozenset[str]] = {}
        self._everything = 0
        """Generation of the last ``notify_all``."""
        self.listeners: list[Callable[[frozenset[str] | None, bool], None]] = []
        """Called on every notification with the places named (None: every place) and
        whether prices there may have dropped; the admission loop wakes its waiting jobs
        that wait for one of them."""
        self.evictable_listeners: list[Callable[[], None]] = []
        """Called when preemptible work starts: only jobs that may still evict care."""

    def _tell(self, places: frozenset[str] | None, repriced: bool) -> None:
        for listener in self.listeners:
            listener(places, repriced)

    def notify(self, *places: str, repriced: bool = False) -> None:
        """Capacity may have come free at these places (see the module docstring), and, if
        ``repriced``, their prices may have dropped (a provider refresh)."""
        if not places:
            return
        self.generation += 1
        self._tell(frozenset(places), repriced)
        for place in places:
            self._last[place] = self.generation
        for waiter, awaiting in self._waiters.items():
            if not waiter.done() and matches(awaiting, places):
                waiter.set_result(None)

    def notify_evictable(self) -> None:
        """Preemptible work started running: capacity did not come free, but a waiting job
        that may evict has something to evict now. Deferred jobs are not woken."""
        for listener in self.evictable_listeners:
            listener()

    def notify_all(self) -> None:
        """Every waiting job should decide again (e.g. a RoutingPolicy changed)."""
        self.generation += 1
        self._everything = self.generation
        self._tell(None, True)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def notified_since(self, awaiting: Collection[str], generation: int) -> bool:
        """Whether a place in ``awaiting`` was named after ``generation``."""
        if self._everything > generation:
            return True
        last = self._last
        return any(
            last.get(p, 0) > generation or last.get(provider_of(p), 0) > generation
            for p in awaiting
        )

    async def sleep(
        self,
        stopped: Stopped,
        delay: float,
        awaiting: Collection[str] = (),
        since: int | None = None,
        settle: float = 0.0,
    ) -> bool:
        """Return after ``delay``, once ``stopped`` is set, or on a notification naming a place
        in ``awaiting`` (also one made after generation ``since``), whichever comes first.

        For the first ``settle`` seconds notifications are not acted on; with ``since`` given
        they are not lost either, and end the sleep when ``settle`` is over.

        Returns True when woken by a notification. With nothing awaited this is plain
        ``stopped.wait(delay)``.
        """
        if not awaiting:
            await stopped.wait(delay)
            return False
        if settle > 0:
            first = min(settle, delay)
            await stopped.wait(first)
            delay -= first
            if delay <= 0:
                return False
        if stopped:
            return False
        if since is not None and self.notified_since(awaiting, since):
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[woken] = frozenset(awaiting)
        stop = asyncio.ensure_future(stopped.wait(delay))
        try:
            await asyncio.wait((stop, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            del self._waiters[woken]
            # Also when the daemon itself is cancelled: leave no task behind.
            stop.cancel()
            await asyncio.wait((stop,))
        return woken.done()
