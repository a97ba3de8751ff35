"""An in-cluster runner's checkpoint, adopted by a client-driven batch, and the batch's parts
handed back to the runner.

A text-to-image job evicted from the cluster, or failed over from it, may go on with a
network the operator drives itself (Livepeer). The runner saved the lines it finished in
``checkpoint.jsonl`` (docs/results.md, "Checkpoints of in-cluster runners"); the batch reads
that object beside its input, in index order, and keeps a line for request *i* under the
runner's own rules (:func:`hybridgpu.runner.checkpoint.parse_line`): its ``index`` is *i*,
its ``custom_id`` is request *i*'s (another means the input changed since) and its answer is
not a 5xx. Those requests are not sent again, and cost nothing on the network: their GPU time
was the cluster's. The store's parts still come first: a chunk written there is done.

The other way, a job that goes from a client-driven network to the cluster: before its
runner starts, :func:`seed_from_parts_sync` merges the batch's parts into
``checkpoint.jsonl`` (each line given its ``index``), so the runner sends only what neither
the network nor an earlier runner finished.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import AsyncIterator, Iterator

from hybridgpu.results.layout import JobLayout, chunk_size
from hybridgpu.results.output import part_firsts_sync
from hybridgpu.results.store import ResultStore, StoreError
from hybridgpu.runner.checkpoint import Kept, parse_line

log = logging.getLogger(__name__)


class RunnerCheckpoint:
    """The runner's finished lines, met in index order as the batch reads its requests."""

    def __init__(self, lines: AsyncIterator[bytes] | None = None) -> None:
        self._lines = lines
        self._next: Kept | None = None
        self._last = -1
        self.kept = 0

    @classmethod
    async def open(cls, store: ResultStore, layout: JobLayout) -> RunnerCheckpoint:
        """The job's runner checkpoint; an empty one when there is none or it cannot be read
        (then every request is sent, as without it)."""
        try:
            if await store.head(layout.checkpoint) is None:
                return cls()
        except StoreError as exc:
            log.warning("not resuming from the runner's checkpoint: %s", exc.message)
            return cls()
        return cls(store.lines(layout.checkpoint))

    async def take(self, index: int, custom_id: str | None) -> bytes | None:
        """The finished line of request ``index``, if the checkpoint has one worth keeping."""
        while self._next is None or self._next.index < index:
            found = await self._read()
            if found is None:
                return None
            self._next = found
        if self._next.index != index:
            return None
        kept, self._next = self._next, None
        if not kept.answers(custom_id):
            return None
        self.kept += 1
        return kept.line.rstrip(b"\n")

    async def close(self) -> None:
        if self._lines is not None and hasattr(self._lines, "aclose"):
            await self._lines.aclose()
        self._lines = None

    async def _read(self) -> Kept | None:
        if self._lines is None:
            return None
        try:
            async for line in self._lines:
                kept = parse_line(line)
                # Indexes must rise: a line out of order cannot be matched.
                if kept is not None and kept.index > self._last:
                    self._last = kept.index
                    return kept
        except StoreError as exc:
            # What was read stands; the rest is sent again.
            log.warning("runner checkpoint: %s; the rest is sent again", exc.message)
        self._lines = None
        return None


def seed_from_parts_sync(store: ResultStore, layout: JobLayout, total: int) -> int:
    """Merge the batch's parts into the runner's checkpoint (blocking); the lines the parts
    gave. Nothing is written when there are no parts. A part that does not hold one line per
    request of its chunk is left out (its lines cannot be told apart by index)."""
    firsts = sorted(part_firsts_sync(store, layout, total))
    if not firsts:
        return 0
    counted = [0]

    def from_parts() -> Iterator[tuple[int, int, bytes]]:
        size = chunk_size(total)
        for first in firsts:
            lines = [line for line in store.lines_sync(layout.part(first)) if line.strip()]
            if len(lines) != min(first + size, total) - first:
                log.warning("part %d does not hold its chunk: not handed to the runner", first)
                continue
            for offset, line in enumerate(lines):
                indexed = _with_index(line, first + offset)
                if indexed is not None:
                    counted[0] += 1
                    yield first + offset, 0, indexed

    def from_checkpoint() -> Iterator[tuple[int, int, bytes]]:
        if store.head_sync(layout.checkpoint) is None:
            return
        last = -1
        for line in store.lines_sync(layout.checkpoint):
            kept = parse_line(line)
            if kept is not None and kept.index > last:
                last = kept.index
                yield kept.index, 1, kept.line.rstrip(b"\n")

    def merged() -> Iterator[bytes]:
        last = -1
        for index, _, line in heapq.merge(from_parts(), from_checkpoint()):
            if index != last:  # a part's line first, then the runner's of the same index
                last = index
                yield line + b"\n"

    store.write_stream_sync(layout.checkpoint, merged(), content_type="application/jsonl")
    return counted[0]


def _with_index(line: bytes, index: int) -> bytes | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    record["index"] = index
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
