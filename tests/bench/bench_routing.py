"""Decisions per second of routing.decide with 50 candidates on one core.

Run: .venv/bin/python tests/bench/bench_routing.py [--decisions N] [--candidates N] [--all]
Prints decisions/s and p50/p99 latency; asserts nothing (timings belong in BENCHMARKS.md).

The headline figure decides against one snapshot again and again (as the simulator and a
reconcile pass over several pending jobs do) and reads only the decision's target. ``--all``
adds, on the same machine and run: the operator's path (a fresh snapshot per decision, and the
ranked candidates read as ``to_status`` does), and the engine before its speed-up
(tests/unit/routing_reference.py) on both paths.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.routing.decision import RoutingDecision, to_status
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import (
    ExternalOffer,
    InClusterPool,
    PerGPUHour,
    PerToken,
    PerUnit,
    Snapshot,
)

PRODUCTS = ["NVIDIA-A10", "Tesla-T4", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "L40S"]


def build_snapshot(candidates: int) -> Snapshot:
    """Five in-cluster pools and ``candidates - 5`` external offers in all three price units."""
    pools = tuple(
        InClusterPool(
            p,
            80 * 2**30,
            allocatable=64,
            in_use=60 + i,
            queued=i,
            release_seconds=(tuple(float(30 * k) for k in range(1, 61 + i))),
        )
        for i, p in enumerate(PRODUCTS)
    )
    offers = []
    for i in range(candidates - len(pools)):
        kind = i % 3
        pricing: PerGPUHour | PerToken | PerUnit
        if kind == 0:
            pricing = PerGPUHour(Decimal("1.10") + Decimal(i) / 100)
        elif kind == 1:
            pricing = PerToken(Decimal("0.10") + Decimal(i) / 1000, Decimal("0.40"))
        else:
            pricing = PerUnit(Decimal("0.0000000049"), "pixel")
        offers.append(
            ExternalOffer(
                provider=f"net{i}",
                provider_type=[ProviderType.AKASH, ProviderType.OPENAI, ProviderType.LIVEPEER][
                    kind
                ],
                gpu_product=PRODUCTS[i % len(PRODUCTS)],
                memory_bytes=80 * 2**30,
                pricing=pricing,
                available=8,
                region="eu" if i % 2 else "us",
                trust_tier=TrustTier.VERIFIED,
                start_latency_seconds=30.0 + i,
                error_rate=0.01 * (i % 5),
                carbon_intensity=200 + i,
            )
        )
    return Snapshot(now=datetime(2026, 11, 28, tzinfo=UTC), pools=pools, offers=tuple(offers))


Decide = Callable[..., RoutingDecision]


def run(
    label: str,
    decide_fn: Decide,
    job: InferenceJobSpec,
    policy: RoutingPolicySpec,
    snapshot: Snapshot,
    decisions: int,
    operator_path: bool,
) -> None:
    """Time ``decisions`` decisions and print their rate and latency percentiles."""

    def once() -> None:
        snap = snapshot
        if operator_path:
            # What the operator does per reconcile: a new snapshot, then the status.
            snap = replace(snapshot)
            d = decide_fn(job, policy, snap)
            to_status(d, "bench", snap.now)
        else:
            decide_fn(job, policy, snap)

    for _ in range(2000):
        once()
    gc.disable()
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    for _ in range(decisions):
        t0 = clock()
        once()
        lat.append(clock() - t0)
    elapsed = clock() - start
    gc.enable()
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)]
    print(f"[{label}]")
    print(f"decisions: {decisions} in {elapsed:.3f}s")
    print(f"decisions/s: {decisions / elapsed:,.0f}")
    print(f"latency p50: {statistics.median(lat) * 1e6:.1f} us  p99: {p99 * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument(
        "--all", action="store_true", help="also the operator path and the old engine"
    )
    args = parser.parse_args()
    job = InferenceJobSpec.model_validate(
        {
            "task": "llm",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "input": {"requests": 1000, "inputTokens": 800, "outputTokens": 200},
            "gpu": {"count": 1, "minMemory": "16Gi"},
            "estimatedDuration": "20m",
            "startWithin": "10m",
            "maxPricePerGPUHour": "3.00",
        }
    )
    policy = RoutingPolicySpec.model_validate(
        {
            "weights": {"price": 60, "latency": 20, "reliability": 10, "carbon": 10},
            "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.90"}]},
        }
    )
    snapshot = build_snapshot(args.candidates)
    print(f"candidates per decision: {args.candidates}")
    run("engine, reused snapshot", decide, job, policy, snapshot, args.decisions, False)
    if args.all:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
        import routing_reference

        old: Decide = routing_reference.decide
        run("engine, operator path", decide, job, policy, snapshot, args.decisions, True)
        run("old engine, reused snapshot", old, job, policy, snapshot, args.decisions, False)
        run("old engine, operator path", old, job, policy, snapshot, args.decisions, True)


if __name__ == "__main__":
    main()
