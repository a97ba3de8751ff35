"""Shared pieces of the network contract tests: stand-ins in-process, providers, jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks import HttpPolicy, NetworkAdapter, RemoteRef, RemoteStatus, make_adapter
from hybridgpu.standins import Standins, default_config, start_standins
from hybridgpu.standins.config import NETWORKS, StandinConfig

KEY = "contract-test-key-7d2e"
FAST = HttpPolicy(
    connect_timeout=1.0,
    read_timeout=2.0,
    max_attempts=3,
    backoff_base=0.01,
    backoff_cap=0.05,
    failure_threshold=3,
    open_seconds=0.5,
)
CONTAINER_NETWORKS = ("akash", "nosana", "vastai")
PRODUCT = "NVIDIA-GeForce-RTX-4090"
# The price book has no Vast.ai RTX 4090 row; its A100 row is used there.
PRODUCTS = {"vastai": "NVIDIA-A100-SXM4-80GB", "openai": "unknown"}


def product_for(network: str) -> str:
    """The GPU product each stand-in offers in the default price book."""
    return PRODUCTS.get(network, PRODUCT)


def standin_config(key: str = KEY, time_scale: float = 600.0) -> StandinConfig:
    """The default price book, with fast simulated time and a required credential."""
    config = default_config()
    return config.model_copy(
        update={
            "time_scale": time_scale,
            "seed": 7,
            "request_latency_seconds": 0.0,
            "start_latency_seconds": {"akash": 60.0, "nosana": 60.0, "vastai": 60.0},
            "api_keys": dict.fromkeys(NETWORKS, key),
        }
    )


@pytest.fixture
async def standins() -> AsyncIterator[Standins]:
    """All five stand-ins on free loopback ports."""
    running = await start_standins(standin_config())
    try:
        yield running
    finally:
        await running.close()


def provider_spec(running: Standins, network: str, **extra: Any) -> ComputeProviderSpec:
    """A ComputeProvider spec pointing at the stand-in of ``network``."""
    data: dict[str, Any] = {"type": network, "endpoint": running.endpoint(network)}  # type: ignore[arg-type]
    if network in ("livepeer", "akash"):
        data["staticPrices"] = [
            {"gpuProduct": PRODUCT, "pricePerGPUHour": "0.39" if network == "akash" else "0.30"}
        ]
    data.update(extra)
    return ComputeProviderSpec.model_validate(data)


def adapter_for(
    running: Standins, network: str, credential: str | None = KEY, **extra: Any
) -> NetworkAdapter:
    """An adapter for the stand-in, with the fast test policy."""
    adapter = make_adapter(
        f"{network}-test", provider_spec(running, network, **extra), credential, http_policy=FAST
    )
    if network == "akash":
        adapter.bid_poll_seconds = 0.02  # type: ignore[attr-defined]
        adapter.bid_wait_seconds = 5.0  # type: ignore[attr-defined]
    return adapter


def job_spec(network: str, **extra: Any) -> InferenceJobSpec:
    """A small job suited to ``network``."""
    if network == "openai":
        data: dict[str, Any] = {
            "task": "llm",
            "model": "meta-llama/Llama-3.3-70B-Instruct",
            "input": {"requests": 20, "inputTokens": 10, "outputTokens": 5},
        }
    elif network == "livepeer":
        data = {
            "task": "text-to-image",
            "model": "SG161222/RealVisXL_V4.0_Lightning",
            "input": {"requests": 20},
        }
    else:
        data = {"task": "container", "image": "ghcr.io/example/batch:1", "input": {"requests": 100}}
    data.update({"estimatedDuration": "10m", "gpu": {"count": 1}})
    data.update(extra)
    return InferenceJobSpec.model_validate(data)


async def wait_for(
    adapter: NetworkAdapter, ref: RemoteRef, states: set[str], timeout: float = 10.0
) -> RemoteStatus:
    """Poll ``status`` until the state is one of ``states``; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = await adapter.status(ref)
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status.state} ({status.message}) after {timeout}s")
        await asyncio.sleep(0.02)


async def control(running: Standins, network: str, path: str, body: Any = None) -> Any:
    """Call a stand-in control endpoint (``/_faults``, ``/_stats``, ``/_reset``)."""
    async with httpx.AsyncClient(base_url=running.base_url(network)) as client:  # type: ignore[arg-type]
        if body is None and path == "/_stats":
            response = await client.get(path)
        else:
            response = await client.post(path, json=body or {})
        response.raise_for_status()
        return response.json()


def cap(value: str) -> Decimal:
    """A price cap."""
    return Decimal(value)


async def submit(
    adapter: NetworkAdapter,
    network: str,
    key: str,
    cap: Decimal | None = None,
    job: InferenceJobSpec | None = None,
    product: str | None = None,
    **job_extra: Any,
) -> RemoteRef:
    """Submit ``job`` (default: :func:`job_spec` with ``job_extra``) for ``product`` (default:
    the network's product in the price book)."""
    return await adapter.submit(
        job or job_spec(network, **job_extra),
        idempotency_key=key,
        gpu_product=product or product_for(network),
        max_price_per_gpu_hour=cap,
    )


def record_sleeps(adapter: NetworkAdapter) -> list[float]:
    """Make the adapter's HTTP client record its back-off sleeps instead of sleeping."""
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    adapter.client._sleep = record  # type: ignore[attr-defined]
    return waited
