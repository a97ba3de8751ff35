"""The operator routes on DCGM telemetry only while it is fresh, and says why when it is not."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from hybridgpu.inventory.telemetry import XID_METRIC, GpuTelemetry, parse_query_results
from hybridgpu.settings import SETTINGS

from .test_admission import Cluster


def _series(name: str, value: str, scraped: float) -> dict[str, Any]:
    labels = {"__name__": name, "gpu": "0", "UUID": "GPU-n1-0", "Hostname": "n1"}
    return {"metric": labels, "value": [scraped, value]}


def telemetry(scraped: float) -> GpuTelemetry:
    return parse_query_results(
        [_series("DCGM_FI_DEV_GPU_UTIL", "50", scraped)],
        health={XID_METRIC: [_series(XID_METRIC, "79", scraped)]},
        scraped=[_series("timestamp", repr(scraped), scraped)],
    )


def _runtime_with(sample: GpuTelemetry) -> Any:
    cluster = Cluster(gpus=4)
    runtime = cluster.runtime
    runtime.inventory = replace(runtime.inventory, telemetry=lambda: sample)
    return runtime


def test_fresh_telemetry_leaves_a_faulty_node_out_of_its_pool() -> None:
    runtime = _runtime_with(telemetry(time.time() - 5))
    world = runtime.world()
    assert world.telemetry_available
    (pool,) = world.pools
    assert (pool.allocatable, pool.unhealthy_gpus) == (0, 4)
    assert runtime.telemetry_problem() == ""


def test_stale_telemetry_falls_back_to_requests_and_says_how_old() -> None:
    old = time.time() - SETTINGS.telemetry_stale_after - 100
    runtime = _runtime_with(telemetry(old))
    world = runtime.world()
    assert not world.telemetry_available
    (pool,) = world.pools
    assert (pool.allocatable, pool.unhealthy_gpus) == (4, 0)  # the stale XID does not count
    problem = runtime.telemetry_problem()
    assert problem.startswith("DCGM telemetry is stale: the newest scrape is ")
    assert f"(limit {SETTINGS.telemetry_stale_after:.0f}s)" in problem
