"""The requests of a client-driven batch, as a stream of :class:`Request` objects.

From the store (``spec.input.source``, read line by line), from items (inline, configMapRef,
at most 100000 of them and already bounded in memory), or synthetic (a load test: each body
built when it is sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from hybridgpu.networks.requests import Body, Requests
from hybridgpu.results.reader import Request, stream_requests
from hybridgpu.results.store import ResultStore
from hybridgpu.results.urls import ObjectURL


@dataclass
class RequestSource:
    """``total`` requests, streamed in order by :meth:`iterate`."""

    total: int
    items: Sequence[Request] | Requests | None = None
    store: ResultStore | None = None
    url: ObjectURL | None = None
    uniform: bool = False
    """Every body costs the same (synthetic): a cost over many is one body's times their count."""
    change: Callable[[Body], Body] | None = None
    """Network defaults filled into each body as it is sent."""

    @classmethod
    def of_requests(cls, requests: Sequence[Request]) -> RequestSource:
        return cls(len(requests), items=requests)

    @classmethod
    def of_bodies(cls, bodies: Requests) -> RequestSource:
        """Bodies without ids (a load test's synthetic ones, or items): ``request-<index>``,
        or the item's own ``custom_id``."""
        return cls(len(bodies), items=bodies, uniform=bodies.uniform)

    @classmethod
    def from_store(cls, store: ResultStore, url: ObjectURL, total: int) -> RequestSource:
        return cls(total, store=store, url=url)

    def mapped(self, change: Callable[[Body], Body]) -> RequestSource:
        """The same requests with ``change`` applied to each body."""
        before = self.change
        combined = change if before is None else (lambda b: change(before(b)))
        return RequestSource(self.total, self.items, self.store, self.url, self.uniform, combined)

    def _fix(self, request: Request) -> Request:
        if self.change is None:
            return request
        return Request(request.index, request.custom_id, self.change(dict(request.body)))

    async def iterate(self) -> AsyncIterator[Request]:
        if self.store is not None and self.url is not None:
            async for request in stream_requests(self.store, self.url):
                if request.index >= self.total:
                    return
                yield self._fix(request)
            return
        items = self.items or ()
        for index in range(self.total):
            item = items[index]
            if isinstance(item, Request):
                yield self._fix(item)
                continue
            custom_id = item.pop("custom_id", None) if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not custom_id:
                custom_id = f"request-{index}"
            yield self._fix(Request(index, custom_id, item))

    async def first_body(self) -> Body | None:
        async for request in self.iterate():
            return request.body
        return None
