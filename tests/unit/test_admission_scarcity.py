"""The operator feeds the scarcity rule: pools kept for jobs that can run only there."""

from __future__ import annotations

from datetime import timedelta

from hybridgpu.controller.admission import World
from hybridgpu.controller.claims import Holdings
from hybridgpu.controller.jobloop import gpu_demand
from tests.unit.routing_fixtures import NOW, policy, pool

T4 = "Tesla-T4"


def test_cached_jobs_give_the_gpu_demand_the_rule_reads() -> None:
    bodies = [
        {"spec": {"gpu": {"count": 2, "products": [T4]}}},
        {"spec": {"gpu": {"count": 1}}, "status": {"completionTime": "2026-11-27T12:00:00Z"}},
        {"spec": {}},
    ]
    assert list(gpu_demand(bodies)) == [
        ([T4], 2, None),
        (None, 1, NOW - timedelta(days=1)),
        (None, 1, None),
    ]


def test_each_policy_snapshot_keeps_the_pool_within_its_window() -> None:
    world = World(
        now=NOW,
        pools=(pool(T4, allocatable=16), pool("NVIDIA-A10")),
        offers=(),
        holdings=Holdings.of([], ()),
        period_start=lambda key, spec: NOW,
        sole_seen={T4: NOW - timedelta(days=3)},
    )
    week = world.snapshot("ns", "week", policy())
    assert [p.reserved for p in week.pools] == [16, 0]
    short = policy(inCluster={"scarcity": {"window": "48h"}})
    assert [p.reserved for p in world.snapshot("ns", "short", short).pools] == [0, 0]
    off = policy(inCluster={"scarcity": {"maxPremiumPercent": 0}})
    assert [p.reserved for p in world.snapshot("ns", "off", off).pools] == [0, 0]
