"""Benchmark of the network adapters against the in-process stand-ins.

Prints figures, asserts nothing:
* client-driven batch throughput (Livepeer, OpenAI-compatible) at several concurrencies;
* per-call latency of ``list_offers`` for each network (adapter + policy + loopback HTTP);
* a container job's submit-to-Succeeded round trip with the stand-ins' timeScale.

Run: ``.venv/bin/python tests/bench/bench_networks.py [--requests N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.contract.networks_helpers import (
    FAST,
    KEY,
    job_spec,
    product_for,
    provider_spec,
    standin_config,
    wait_for,
)

from hybridgpu.networks import make_adapter
from hybridgpu.standins import start_standins


async def batch_throughput(requests: int, latency: float) -> None:
    config = standin_config().model_copy(update={"request_latency_seconds": latency})
    running = await start_standins(config)
    try:
        for network in ("livepeer", "openai"):
            for concurrency in (1, 8, 32):
                adapter = make_adapter(
                    "bench",
                    provider_spec(running, network),
                    KEY,
                    http_policy=FAST,
                    batch_concurrency=concurrency,
                )
                job = job_spec(
                    network, input={"requests": requests, "inputTokens": 8, "outputTokens": 8}
                )
                start = time.perf_counter()
                ref = await adapter.submit(
                    job,
                    idempotency_key=f"b{concurrency}",
                    gpu_product=product_for(network),
                    max_price_per_gpu_hour=None,
                )
                status = await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=300)
                elapsed = time.perf_counter() - start
                await adapter.aclose()
                print(
                    f"batch  {network:8s} {latency * 1000:3.0f} ms/request, concurrency "
                    f"{concurrency:3d}: {requests} requests in "
                    f"{elapsed:6.2f}s = {requests / elapsed:7.0f} req/s ({status.state})"
                )
    finally:
        await running.close()


async def offer_latency(calls: int = 200) -> None:
    running = await start_standins(standin_config())
    try:
        for network in ("akash", "openai", "nosana", "vastai"):
            adapter = make_adapter("bench", provider_spec(running, network), KEY, http_policy=FAST)
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                await adapter.list_offers()
                samples.append((time.perf_counter() - start) * 1000)
            await adapter.aclose()
            samples.sort()
            print(
                f"offers {network:8s}: p50 {statistics.median(samples):6.2f} ms, "
                f"p95 {samples[int(len(samples) * 0.95)]:6.2f} ms over {calls} calls"
            )
    finally:
        await running.close()


async def container_round_trip() -> None:
    config = standin_config(time_scale=3600.0)
    running = await start_standins(config)
    try:
        for network in ("akash", "nosana", "vastai"):
            adapter = make_adapter("bench", provider_spec(running, network), KEY, http_policy=FAST)
            if network == "akash":
                adapter.bid_poll_seconds = 0.02  # type: ignore[attr-defined]
            start = time.perf_counter()
            ref = await adapter.submit(
                job_spec(network, estimatedDuration="30m"),
                idempotency_key="rt",
                gpu_product=product_for(network),
                max_price_per_gpu_hour=Decimal(5),
            )
            status = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=60)
            elapsed = time.perf_counter() - start
            await adapter.aclose()
            print(
                f"job    {network:8s}: 30m job (60s start) at timeScale 3600 -> {status.state} "
                f"in {elapsed:5.2f}s wall, accrued ${status.accrued_usd}"
            )
    finally:
        await running.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(batch_throughput(args.requests, 0.0))
    asyncio.run(batch_throughput(args.requests // 5, 0.02))
    asyncio.run(offer_latency())
    asyncio.run(container_round_trip())


if __name__ == "__main__":
    main()
