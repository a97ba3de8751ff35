"""DCGM telemetry in decisions: faulty nodes left out, busy by measurement, credited if used."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hybridgpu.inventory.pools import gpu_nodes_index, gpu_pods_index, pools_from
from hybridgpu.inventory.telemetry import XID_METRIC, parse_query_results
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import InClusterPool, PerGPUHour, Snapshot
from hybridgpu.routing.telemetry import (
    CHANGED,
    NO_EFFECT,
    REQUESTS_ONLY,
    requests_only,
    telemetry_condition,
)

from .inventory_objects import A100, T4, node, pod
from .routing_fixtures import NOW, job, offer, policy, pool

PRICES: dict[str, Any] = {
    "inCluster": {
        "gpuPrices": [
            {"gpuProduct": T4, "pricePerGPUHour": "0.20"},
            {"gpuProduct": A100, "pricePerGPUHour": "0.90"},
        ]
    }
}


def _series(name: str, value: str, node_name: str, gpu: str = "0") -> dict[str, Any]:
    labels = {"__name__": name, "gpu": gpu, "UUID": f"GPU-{node_name}-{gpu}", "Hostname": node_name}
    return {"metric": labels, "value": [0.0, value]}


def _cluster_pools(xid_on: str | None) -> tuple[InClusterPool, ...]:
    nodes = [
        r for n in (node("t1", 2, T4, 15360), node("a1", 4)) for r in gpu_nodes_index(n).values()
    ]
    pods = [r for p in (pod("busy", 1, "a1"),) for r in gpu_pods_index(p).values()]
    util = [
        _series("DCGM_FI_DEV_GPU_UTIL", "5", n.name, str(i))
        for n in nodes
        for i in range(n.allocatable)
    ]
    health = {XID_METRIC: [_series(XID_METRIC, "79", xid_on)]} if xid_on else {}
    telemetry = parse_query_results(util, health=health)
    return pools_from(
        nodes,
        pods,
        now=NOW,
        faults=telemetry.faults(),
        busy_by_node=telemetry.busy_gpus_by_node(),
    )


def test_a_node_with_an_xid_error_is_left_out_and_the_job_goes_elsewhere() -> None:
    pools = _cluster_pools("t1")
    by_product = {p.gpu_product: p for p in pools}
    t4 = by_product[T4]
    assert (t4.allocatable, t4.unhealthy_gpus) == (0, 2)
    assert t4.unhealthy_reason == "node t1: GPU 0: XID 79"
    spec = job(task="container", image="x", gpu={"count": 1})
    pol = policy(**PRICES)
    snapshot = Snapshot(now=NOW, pools=pools, telemetry_available=True)
    decision = decide(spec, pol, snapshot)
    assert decision.target is not None and decision.target.name == f"in-cluster/{A100}"
    reasons = {c.name: c.reason for c in decision.candidates}
    assert reasons[f"in-cluster/{T4}"] == "UnhealthyGPUs"
    status, reason, message = telemetry_condition(spec, pol, snapshot, decision, "")
    assert (status, reason) == (True, CHANGED)
    assert "left out 2 Tesla-T4 GPUs (node t1: GPU 0: XID 79)" in message
    assert f"on requests alone: Routed to in-cluster/{T4}" in message


def test_a_pool_left_empty_by_faults_makes_the_job_wait_not_fail() -> None:
    pools = _cluster_pools("t1")
    spec = job(task="container", image="x", gpu={"count": 1, "products": [T4]})
    decision = decide(spec, policy(**PRICES), Snapshot(now=NOW, pools=pools))
    assert (decision.outcome, decision.reason) == ("Wait", "UnhealthyGPUs")


def test_healthy_telemetry_that_changes_nothing_is_not_credited() -> None:
    pools = _cluster_pools(None)
    spec = job(task="container", image="x", gpu={"count": 1})
    pol = policy(**PRICES)
    snapshot = Snapshot(now=NOW, pools=pools, telemetry_available=True)
    decision = decide(spec, pol, snapshot)
    status, reason, message = telemetry_condition(spec, pol, snapshot, decision, "")
    assert (status, reason) == (True, NO_EFFECT)
    assert "decided" not in message


def test_stale_or_missing_telemetry_falls_back_to_requests_and_says_why() -> None:
    pools = _cluster_pools(None)
    spec = job(task="container", image="x", gpu={"count": 1})
    pol = policy(**PRICES)
    snapshot = Snapshot(now=NOW, pools=pools, telemetry_available=False)
    decision = decide(spec, pol, snapshot)
    stale = "DCGM telemetry is stale: the newest scrape is 200s old (limit 60s)"
    assert telemetry_condition(spec, pol, snapshot, decision, stale) == (
        False,
        REQUESTS_ONLY,
        f"decided on GPU requests alone: {stale}",
    )


def test_busy_by_telemetry_lets_a_time_sliced_pool_take_work_it_would_spill() -> None:
    # Every GPU is requested (time-sliced pods), but DCGM measures the pool a fifth busy:
    # by requests the pool is over its 50 % spillover mark and a cheaper offer wins; by
    # telemetry it is not, so external offers are not considered and the job stays home.
    shared = pool(A100, allocatable=8, in_use=7, max_free_per_node=1, measured_busy=1.6)
    cheap = offer("akash", pricing=PerGPUHour(Decimal("0.50")))
    spec = job(task="container", image="x", gpu={"count": 1})
    base = {**PRICES, "inCluster": {**PRICES["inCluster"], "spilloverUtilization": 50}}
    by_requests = policy(**base)
    by_telemetry = policy(**{**base, "inCluster": {**base["inCluster"], "busyFrom": "Telemetry"}})
    snapshot = Snapshot(now=NOW, pools=(shared,), offers=(cheap,), telemetry_available=True)
    assert decide(spec, by_requests, snapshot).target.provider == "akash"  # type: ignore[union-attr]
    decision = decide(spec, by_telemetry, snapshot)
    assert decision.target is not None and decision.target.backend == "InCluster"
    reasons = {c.name: c.reason for c in decision.candidates}
    assert reasons[cheap.provider + "/" + cheap.gpu_product] == "BelowSpilloverThreshold"
    status, reason, message = telemetry_condition(spec, by_telemetry, snapshot, decision, "")
    assert (status, reason) == (True, CHANGED)
    assert "counted pools busy by measured utilisation and framebuffer use" in message
    # Without telemetry the same policy counts requests.
    assert requests_only(snapshot).pools[0].measured_busy is None
    assert decide(spec, by_telemetry, requests_only(snapshot)).target.provider == "akash"  # type: ignore[union-attr]
