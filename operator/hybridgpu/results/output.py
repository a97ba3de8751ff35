"""The output of one job, with the store as its checkpoint.

A client-driven batch writes one *part* per chunk of requests (:func:`layout.chunk_size`)
once every request of the chunk has an answer, under a key made of the chunk's first index:
writing it again after a restart replaces it with the same lines, so every request is in the
output exactly once whatever the operator was killed in the middle of. On start a batch lists
the parts (:meth:`BatchOutput.done`) and sends only the requests of the missing chunks. When
every chunk is there, :meth:`BatchOutput.compose` streams the parts in order into the one
output object and reports what it holds (:class:`OutputSummary`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.results.layout import JobLayout, chunk_size
from hybridgpu.results.store import ResultStore, StoreError
from hybridgpu.results.urls import ObjectURL

JSONL = "application/jsonl"


@dataclass(frozen=True, slots=True)
class OutputSummary:
    """What an output object holds: ``status.output``."""

    uri: str
    records: int
    failed: int
    bytes: int
    checksum: str
    etag: str = ""

    def to_status(self, total: int) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "records": self.records,
            "failed": self.failed,
            "bytes": self.bytes,
            "checksum": self.checksum,
            "etag": self.etag,
            "summary": f"{self.records}/{total}",
        }


def line_failed(line: bytes) -> bool:
    """Whether an output line records an error (OpenAI Batch: ``error`` set or status >= 400)."""
    try:
        item = json.loads(line)
    except ValueError:
        return True
    if not isinstance(item, dict):
        return True
    if item.get("error"):
        return True
    response = item.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    return isinstance(status, int) and status >= 400


class _Counted:
    """Output bytes passing through, counted and hashed on the way to the store."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self.lines = lines
        self.records = 0
        self.failed = 0
        self.bytes = 0
        self.sha = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        buffer: list[bytes] = []
        size = 0
        for line in self.lines:
            if not line.strip():
                continue
            self.records += 1
            self.failed += line_failed(line)
            data = line + b"\n"
            self.sha.update(data)
            self.bytes += len(data)
            buffer.append(data)
            size += len(data)
            if size >= 5 * 1024 * 1024:
                yield b"".join(buffer)
                buffer, size = [], 0
        if buffer or not self.bytes:
            yield b"".join(buffer)


def summarize_sync(store: ResultStore, url: ObjectURL) -> OutputSummary | None:
    """Count and hash an existing output object (written by a runner); None if absent."""
    meta = store.head_sync(url)
    if meta is None:
        return None
    counted = _Counted(store.lines_sync(url))
    for _ in counted:
        pass
    return OutputSummary(
        str(url),
        counted.records,
        counted.failed,
        counted.bytes,
        f"sha256:{counted.sha.hexdigest()}",
        str(meta.get("e_tag") or "").strip('"'),
    )


async def summarize(store: ResultStore, url: ObjectURL) -> OutputSummary | None:
    return await asyncio.to_thread(summarize_sync, store, url)


def part_firsts_sync(store: ResultStore, layout: JobLayout, total: int) -> set[int]:
    """The first request indexes of the parts in the store of a batch of ``total`` (blocking)."""
    size = chunk_size(total)
    firsts = set()
    for key in store.keys_sync(layout.parts):
        first = JobLayout.part_first(key)
        if first is not None and first < total and first % size == 0:
            firsts.add(first)
    return firsts


class BatchOutput:
    """Parts and the output object of one client-driven batch of ``total`` requests."""

    def __init__(self, store: ResultStore, layout: JobLayout, total: int) -> None:
        self.store = store
        self.layout = layout
        self.total = total
        self.chunk = chunk_size(total)

    def chunks(self) -> range:
        return range(0, self.total, self.chunk)

    def chunk_end(self, first: int) -> int:
        return min(first + self.chunk, self.total)

    async def done(self) -> Checkpoint:
        """The requests whose part is in the store."""
        firsts = await self._parts()
        watermark = 0
        while watermark < self.total and watermark in firsts:
            watermark = self.chunk_end(watermark)
        above = [
            i
            for first in sorted(firsts)
            if first > watermark
            for i in range(first, self.chunk_end(first))
        ]
        return Checkpoint(watermark, tuple(above))

    async def _parts(self) -> set[int]:
        return await asyncio.to_thread(part_firsts_sync, self.store, self.layout, self.total)

    async def write_part(self, first: int, lines: Sequence[bytes]) -> None:
        """Write the lines of the chunk starting at ``first`` (the same key on a rewrite)."""
        data = b"".join(line.rstrip(b"\n") + b"\n" for line in lines)
        await self.store.put(self.layout.part(first), data, content_type=JSONL)

    async def compose(self, *, complete: bool = True) -> OutputSummary:
        """Stream every part, in order, into the output object; raises StoreError if a
        part is missing (unless not ``complete``: a batch kept in memory only, whose earlier
        process's parts died with it)."""
        firsts = await self._parts()
        missing = [f for f in self.chunks() if f not in firsts]
        if missing and complete:
            raise StoreError(
                f"composing {self.layout.output}: parts from request {missing[0]} are missing"
            )
        present = [f for f in self.chunks() if f in firsts]
        return await asyncio.to_thread(self._compose_sync, present)

    def _compose_sync(self, firsts: list[int]) -> OutputSummary:
        def lines() -> Iterator[bytes]:
            for first in firsts:
                yield from self.store.lines_sync(self.layout.part(first))

        counted = _Counted(lines())
        result = self.store.write_stream_sync(self.layout.output, counted, content_type=JSONL)
        return OutputSummary(
            str(self.layout.output),
            counted.records,
            counted.failed,
            counted.bytes,
            f"sha256:{counted.sha.hexdigest()}",
            str(result.get("e_tag") or "").strip('"'),
        )
