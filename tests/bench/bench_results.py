"""Benchmark of the result path at a million requests, on a real SeaweedFS.

Prints figures, asserts nothing:
* writing a JSONL input of N requests into the store (streamed);
* ``scan``: reading and checking it once (JSON per line, duplicate custom_id check);
* a client-driven batch over it with an in-process sender (no network: the figure is the
  operator's own cost), checkpointing parts into the store and composing the output object;
* the process's peak RSS before and after, and its growth during the batch.

Run: ``.venv/bin/python tests/bench/bench_results.py [--requests 1000000] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.objectstore import SeaweedFS

from hybridgpu.networks.batch import BatchResults, BatchRunner, RequestResult
from hybridgpu.results.formats import batch_line
from hybridgpu.results.layout import JobLayout
from hybridgpu.results.output import BatchOutput
from hybridgpu.results.reader import Request, scan
from hybridgpu.results.source import RequestSource
from hybridgpu.results.store import ResultStore


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def input_lines(total: int) -> Iterator[bytes]:
    buffer: list[bytes] = []
    for i in range(total):
        line = {
            "custom_id": f"request-{i:07d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": f"question number {i}"}]},
        }
        buffer.append(json.dumps(line).encode() + b"\n")
        if len(buffer) == 10_000:
            yield b"".join(buffer)
            buffer = []
    if buffer:
        yield b"".join(buffer)


async def main(total: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, SeaweedFS.start(Path(tmp)) as s3:
        store = ResultStore(s3.config())
        layout = JobLayout.for_job(store.root, "bench", "million", "uid")
        source_url = layout.base.join("in.jsonl")
        print(f"requests: {total}, concurrency: {concurrency}, RSS at start {rss_mib():.0f} MiB")

        started = time.perf_counter()
        meta = await asyncio.to_thread(store.write_stream_sync, source_url, input_lines(total))
        took = time.perf_counter() - started
        size = int(meta.get("size") or 0)
        mib = size / 2**20
        print(f"input written: {mib:.0f} MiB in {took:.1f}s ({mib / took:.1f} MiB/s)")

        started = time.perf_counter()
        summary = await scan(store, source_url, max_bytes=2**31, max_requests=total)
        took = time.perf_counter() - started
        rate = summary.total / took
        print(f"scan: {summary.total} lines checked in {took:.1f}s ({rate:,.0f} lines/s)")

        before = rss_mib()

        async def send(request: Request) -> RequestResult:
            body = {"id": f"cmpl-{request.index}", "choices": [{"message": {"content": "ok"}}]}
            return RequestResult(Decimal("0.000001"), batch_line("bench", request, 200, body))

        runner = BatchRunner(concurrency)
        results = BatchResults(
            RequestSource.from_store(store, source_url, summary.total),
            BatchOutput(store, layout, summary.total),
        )
        sampled = before
        started = time.perf_counter()
        batch = await runner.start("bench", results, send, None, lambda _: Decimal(0), durable=True)
        while batch.task is not None and not batch.task.done():
            await asyncio.sleep(0.5)
            sampled = max(sampled, rss_mib())
        took = time.perf_counter() - started
        status = batch.status()
        assert status.output is not None, status.message
        out = status.output
        print(
            f"batch: {out.records} output lines, {out.bytes / 2**20:.0f} MiB, in {took:.1f}s "
            f"({out.records / took:,.0f} lines/s, {out.bytes / 2**20 / took:.1f} MiB/s "
            "with the compose)"
        )
        print(
            f"RSS: {before:.0f} MiB before the batch, at most {sampled:.0f} MiB during it "
            f"(growth {sampled - before:.0f} MiB); peak of the process {peak_mib():.0f} MiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
