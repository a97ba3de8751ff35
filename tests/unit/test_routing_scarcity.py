"""The scarcity rule: a job that can run elsewhere leaves a pool to the jobs that can use only it.

Issue 15 part 1 (gpuspec33): unconstrained pods took the 16-GPU Tesla-T4 pool, the cheapest,
for months, and the T4-only pods that came later were late. Before the rule the engine took
the cheapest pool whatever others needed; these tests fail on that code.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from hybridgpu.routing.decision import ScoredCandidate
from hybridgpu.routing.engine import decide
from hybridgpu.routing.preemption import Eviction, Place, Running, plan_eviction, rank
from hybridgpu.routing.scarcity import (
    SoleDemand,
    kept_from,
    reserve_pools,
    reserved_gpus,
    sole_pool,
    sole_seen,
)
from hybridgpu.routing.snapshot import PerGPUHour
from tests.unit.routing_fixtures import NOW, job, offer, policy, pool, snapshot

T4 = "Tesla-T4"
V100 = "Tesla-V100-SXM2-16GB"


def _policy(**in_cluster: Any) -> Any:
    prices = [
        {"gpuProduct": T4, "pricePerGPUHour": "0.20"},
        {"gpuProduct": V100, "pricePerGPUHour": "0.40"},
    ]
    return policy(
        weights={"price": 90, "latency": 5, "reliability": 5, "carbon": 0},
        inCluster={"gpuPrices": prices, "spilloverUtilization": 1, **in_cluster},
    )


def _world(reserved: int, offer_price: str = "0.2182") -> Any:
    return snapshot(
        pools=(pool(T4, allocatable=16, reserved=reserved), pool(V100, allocatable=8)),
        offers=(offer("nosana", "NVIDIA-GeForce-RTX-4090", PerGPUHour(Decimal(offer_price))),),
    )


def test_a_job_that_can_run_elsewhere_passes_over_a_scarce_pool_and_says_so() -> None:
    d = decide(job(gpu={"count": 1}), _policy(), _world(reserved=16))
    assert d.target is not None and d.target.name == "nosana/NVIDIA-GeForce-RTX-4090"
    t4 = next(c for c in d.candidates if c.name == f"in-cluster/{T4}")
    assert t4.reason == "ScarceProduct" and not t4.feasible
    assert "passed over for scarcity: in-cluster/Tesla-T4 (keeps 16 GPUs" in d.message


def test_without_sole_demand_the_cheapest_pool_wins_as_before() -> None:
    d = decide(job(gpu={"count": 1}), _policy(), _world(reserved=0))
    assert d.target is not None and d.target.name == f"in-cluster/{T4}"
    assert "scarcity" not in d.message


def test_the_scarce_pool_is_taken_when_the_other_places_are_much_dearer() -> None:
    # The offer at $0.50 is 150 % over the T4's $0.20, beyond the default 100 %; the V100
    # pool at $0.40 is inside it, so it is still the place chosen ...
    d = decide(job(gpu={"count": 1}), _policy(), _world(reserved=16, offer_price="0.50"))
    assert d.target is not None and d.target.name == f"in-cluster/{V100}"
    # ... and with only dear places left, the scarce pool is taken.
    d = decide(
        job(gpu={"count": 1}),
        _policy(scarcity={"maxPremiumPercent": 50}),
        _world(reserved=16, offer_price="0.50"),
    )
    assert d.target is not None and d.target.name == f"in-cluster/{T4}"


def test_the_scarce_pool_is_taken_when_nothing_else_fits() -> None:
    only_t4 = job(gpu={"count": 1, "products": [T4]})
    d = decide(only_t4, _policy(), _world(reserved=16))
    assert d.target is not None and d.target.name == f"in-cluster/{T4}"
    # Nothing else free: the V100 pool is full and the offer has no capacity.
    busy = snapshot(
        pools=(pool(T4, allocatable=16, reserved=16), pool(V100, allocatable=8, in_use=8)),
        offers=(
            offer("nosana", "NVIDIA-GeForce-RTX-4090", PerGPUHour(Decimal("0.2")), available=0),
        ),
    )
    d = decide(job(gpu={"count": 1}, startWithin="1m"), _policy(), busy)
    assert d.target is not None and d.target.name == f"in-cluster/{T4}"


def test_zero_premium_turns_the_rule_off() -> None:
    d = decide(job(gpu={"count": 1}), _policy(scarcity={"maxPremiumPercent": 0}), _world(16))
    assert d.target is not None and d.target.name == f"in-cluster/{T4}"


def test_sole_pool_is_the_one_place_a_job_can_use() -> None:
    pools = [(T4, 4), (V100, 8)]
    assert sole_pool([T4], 1, pools, {"NVIDIA-GeForce-RTX-4090"}) == T4
    assert sole_pool(None, 1, pools, ()) is None  # accepts anything
    assert sole_pool([T4, V100], 1, pools, ()) is None  # two pools
    assert sole_pool([T4], 1, pools, {T4}) is None  # an offer has it too
    assert sole_pool([T4, V100], 8, pools, ()) == V100  # only the V100 nodes are big enough


def test_a_pool_stays_scarce_for_the_window_after_its_sole_demand() -> None:
    demand = SoleDemand()
    assert demand.peak(T4, 0.0, 100.0) == 0
    demand.change(T4, 10.0, 1)
    demand.change(T4, 20.0, 2)
    demand.change(T4, 30.0, -3)
    assert demand.peak(T4, 25.0, 100.0) == 3
    assert demand.peak(T4, 100.0, 100.0) == 3
    assert demand.peak(T4, 135.0, 100.0) == 0  # none held or wanted since 35
    assert reserved_gpus(demand.peak(T4, 100.0, 100.0), 16) == 16
    assert reserved_gpus(0, 16) == 0


def test_the_policy_knob_defaults_and_bounds() -> None:
    spec = _policy()
    assert spec.in_cluster.scarcity.max_premium_percent == 100
    assert spec.in_cluster.scarcity.window.total_seconds() == 7 * 86400


def _ls_eviction(kept: frozenset[str]) -> Eviction | None:
    # On time on Nosana for $0.2182; evicting best-effort work on the T4 node costs less
    # (1 h at $0.20 plus at most 15 min lost), so without the rule the job evicts there.
    target = ScoredCandidate(
        "nosana/NVIDIA-GeForce-RTX-4090",
        "External",
        "nosana",
        "NVIDIA-GeForce-RTX-4090",
        Decimal("0.2182"),
        Decimal("0.2182"),
        120.0,
        1.0,
        True,
        "Feasible",
    )
    return plan_eviction(
        target=target,
        deadline_seconds=300.0,
        gpus=1,
        runs_for_seconds=3600,
        job_rank=rank(0, latency_sensitive=True),
        products=None,
        prices={T4: Decimal("0.20")},
        places=[Place(T4, "t1", 0)],
        running=[Running("be", T4, "t1", 1, rank(0, latency_sensitive=False), 60.0)],
        checkpoint_seconds=900,
        kept=kept,
    )


def test_a_job_routed_elsewhere_for_scarcity_does_not_evict_on_the_scarce_pool() -> None:
    assert _ls_eviction(frozenset()) is not None  # the old behaviour
    d = decide(job(gpu={"count": 1}, startWithin="5m"), _policy(), _world(reserved=16))
    assert d.target is not None and d.target.backend == "External"
    kept = kept_from(d.candidates, d.target, True, {T4: 16}, 100)
    assert kept == {T4}
    assert _ls_eviction(kept) is None
    # Not kept: no sole demand, the rule off, or the job late wherever it goes.
    assert kept_from(d.candidates, d.target, True, {T4: 0}, 100) == frozenset()
    assert kept_from(d.candidates, d.target, True, {T4: 16}, 0) == frozenset()
    assert kept_from(d.candidates, d.target, False, {T4: 16}, 100) == frozenset()


def test_the_operator_keeps_a_pool_for_the_window_after_its_last_sole_job() -> None:
    pools = (pool(T4, allocatable=16, max_gpus_per_node=4), pool(V100, allocatable=8))
    finished = NOW - timedelta(days=3)
    jobs = [([T4], 1, finished), (None, 1, None), ([T4, V100], 1, None)]
    seen = sole_seen(jobs, pools, ["NVIDIA-GeForce-RTX-4090"], NOW)
    assert seen == {T4: finished}
    kept = reserve_pools(pools, seen, NOW, timedelta(days=7))
    assert [p.reserved for p in kept] == [16, 0]
    assert reserve_pools(pools, seen, NOW, timedelta(days=2)) == pools
    running = sole_seen([([T4], 1, None)], pools, (), NOW)
    assert running == {T4: NOW}
