"""Kubernetes Events on InferenceJobs, posted in the background.

The admission loop and the job workers run outside Kopf's per-object tasks, where
``kopf.event`` has no queue to post to; and a decision must not wait for its Event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

Post = Callable[[str, dict[str, Any]], Awaitable[None]]
"""(namespace, core/v1 Event body) -> posted."""

QUEUE_LIMIT = 10_000
"""Events beyond this many unposted ones are dropped (and counted) rather than held."""


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta.get('name', 'job')}.",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "hybridgpu.dev/v1alpha1"),
            "kind": obj.get("kind", "InferenceJob"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "hybridgpu"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": "hybridgpu",
        "reportingInstance": "hybridgpu",
    }


class EventPoster:
    def __init__(self, post: Post, yield_to: Callable[[], Awaitable[None]] | None = None) -> None:
        self._post = post
        self._yield_to = yield_to
        """Awaited before each post: in a burst, the API server's time goes to decisions first
        and the Events follow once they are written."""
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def emit_for(self, obj: Mapping[str, Any]) -> Callable[[str, str, str], None]:
        def emit(type_: str, reason: str, message: str) -> None:
            body = event_body(obj, type_, reason, message)
            try:
                self._queue.put_nowait((str(body["metadata"]["namespace"]), body))
            except asyncio.QueueFull:
                self.dropped += 1

        return emit

    async def run(self, workers: int = 4) -> None:
        async def worker() -> None:
            while True:
                namespace, body = await self._queue.get()
                if self._yield_to is not None:
                    await self._yield_to()
                try:
                    await self._post(namespace, body)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # an Event is a courtesy, never a reason to stop
                    log.debug("posting an Event failed: %s", exc)

        await asyncio.gather(*(worker() for _ in range(workers)))
