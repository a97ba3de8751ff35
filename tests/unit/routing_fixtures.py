"""Builders shared by the routing tests (not a test module)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, PerGPUHour, Pricing, Snapshot

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GIB = 2**30


def job(**overrides: Any) -> InferenceJobSpec:
    spec: dict[str, Any] = {
        "task": "llm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "input": {"requests": 100, "inputTokens": 500, "outputTokens": 100},
        "estimatedDuration": "1h",
        # These tests are about GPU-hour arithmetic on the job's own figure; the work-based
        # estimate has its own tests (test_routing_work.py).
        "estimate": "EstimatedDuration",
    }
    spec.update(overrides)
    return InferenceJobSpec.model_validate(spec)


def policy(**overrides: Any) -> RoutingPolicySpec:
    spec: dict[str, Any] = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}]}
    }
    spec.update(overrides)
    return RoutingPolicySpec.model_validate(spec)


def pool(product: str = "NVIDIA-A10", **kw: Any) -> InClusterPool:
    args: dict[str, Any] = {"memory_bytes": 24 * GIB, "allocatable": 8, "in_use": 0}
    args.update(kw)
    return InClusterPool(product, **args)


def offer(
    provider: str = "akash",
    product: str = "NVIDIA-A100-SXM4-80GB",
    pricing: Pricing | None = None,
    **kw: Any,
) -> ExternalOffer:
    args: dict[str, Any] = {
        "provider_type": ProviderType.AKASH,
        "memory_bytes": 80 * GIB,
        "available": 8,
        "region": "us",
        "trust_tier": TrustTier.VERIFIED,
        "start_latency_seconds": 60.0,
    }
    args.update(kw)
    return ExternalOffer(
        provider=provider,
        gpu_product=product,
        pricing=pricing or PerGPUHour(Decimal("1.50")),
        **args,
    )


def snapshot(
    pools: tuple[InClusterPool, ...] = (), offers: tuple[ExternalOffer, ...] = (), **kw: Any
) -> Snapshot:
    return Snapshot(now=NOW, pools=pools, offers=offers, **kw)
