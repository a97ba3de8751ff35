"""Inventory and DCGM stand-in throughput on one core.

Run: .venv/bin/python tests/bench/bench_inventory.py [--nodes N] [--pods N] [--cpu-pods N]
Prints, for a cluster of N GPU nodes and pods: the cost of the Kopf index extractors per object,
pools_from over the whole index, the memory the index records take against full bodies, and
the time to render the stand-in's /metrics. Asserts nothing (figures go to BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.unit.inventory_objects import container, node, pod, wants

from hybridgpu.gpu_products import TRACE_GPU_PRODUCTS
from hybridgpu.inventory.pools import (
    ESTIMATED_DURATION_ANNOTATION,
    gpu_nodes_index,
    gpu_pods_index,
    pools_from,
)
from hybridgpu.telemetry.dcgm_exporter import fake_gpus, render_metrics

PRODUCTS = sorted(TRACE_GPU_PRODUCTS.values())
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def build(
    nodes: int, pods: int, cpu_pods: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    node_bodies = [
        node(f"n{i:05d}", 8, PRODUCTS[i % len(PRODUCTS)][0], PRODUCTS[i % len(PRODUCTS)][1])
        for i in range(nodes)
    ]
    pod_bodies = []
    for i in range(pods):
        if i % 10 == 0:  # a tenth waits for a specific product
            product = PRODUCTS[i % len(PRODUCTS)][0]
            pod_bodies.append(
                pod(f"p{i}", 1 + i % 4, None, "Pending", affinity_terms=wants(product))
            )
        elif i % 2:  # half the running ones are hybridgpu's, with an estimated end
            pod_bodies.append(
                pod(
                    f"p{i}",
                    1 + i % 2,
                    f"n{i % nodes:05d}",
                    annotations={ESTIMATED_DURATION_ANNOTATION: f"{60 + i % 120}m"},
                    start_time="2026-11-28T11:00:00Z",
                )
            )
        else:
            pod_bodies.append(pod(f"p{i}", 1 + i % 2, f"n{i % nodes:05d}"))
    pod_bodies += [
        pod(f"cpu{i}", containers=[container("web")], node_name=f"n{i % nodes:05d}")
        for i in range(cpu_pods)
    ]
    return node_bodies, pod_bodies


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--cpu-pods", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    node_bodies, pod_bodies = build(args.nodes, args.pods, args.cpu_pods)
    objects = len(node_bodies) + len(pod_bodies)

    def extract() -> tuple[list[Any], list[Any]]:
        n = [r for b in node_bodies for r in gpu_nodes_index(b).values()]
        p = [r for b in pod_bodies for r in gpu_pods_index(b).values()]
        return n, p

    node_records, pod_records = extract()
    t_extract = timed(extract, args.repeat)
    # As the operator calls it: with the release estimates of the pods that have one.
    t_pools = timed(lambda: pools_from(node_records, pod_records, now=NOW), args.repeat)

    # Kopf keeps only what the index functions return; measure what survives the bodies.
    payload = json.dumps([node_bodies, pod_bodies])
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fresh_nodes, fresh_pods = json.loads(payload)
    bodies_bytes = tracemalloc.get_traced_memory()[0] - base
    kept = (
        [r for b in fresh_nodes for r in gpu_nodes_index(b).values()],
        [r for b in fresh_pods for r in gpu_pods_index(b).values()],
    )
    del fresh_nodes, fresh_pods
    gc.collect()
    records_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del kept

    gpus = fake_gpus(node_records, pod_records)
    t_render = timed(lambda: render_metrics(gpus, time.time()), args.repeat)
    text = render_metrics(gpus, time.time())

    med = statistics.median
    print(f"cluster: {args.nodes} GPU nodes, {args.pods} GPU pods, {args.cpu_pods} CPU pods")
    print(
        f"index extractors: {med(t_extract) * 1e6 / objects:.2f} us/object "
        f"({med(t_extract) * 1e3:.1f} ms for {objects} objects)"
    )
    print(
        f"pools_from: {med(t_pools) * 1e3:.2f} ms "
        f"(min {min(t_pools) * 1e3:.2f}) over {len(node_records)} nodes, {len(pod_records)} pods"
    )
    print(
        f"index records: {records_bytes / 2**20:.1f} MiB "
        f"({records_bytes / max(len(node_records) + len(pod_records), 1):.0f} B/record) "
        f"vs {bodies_bytes / 2**20:.1f} MiB for the parsed bodies"
    )
    print(
        f"render /metrics: {med(t_render) * 1e3:.1f} ms for {len(gpus)} GPUs, "
        f"{len(text) / 2**20:.1f} MiB, {text.count(chr(10))} lines"
    )


if __name__ == "__main__":
    main()
