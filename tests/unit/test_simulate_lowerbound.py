"""The offline lower bound: tighter where it can be, never above a schedule it covers."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings

from hybridgpu.simulate.inputs import Node
from hybridgpu.simulate.lowerbound import (
    ServiceTargets,
    _peak_instants,
    late_budget,
    lower_bound,
)
from hybridgpu.simulate.replay import Replay
from hybridgpu.simulate.routers import CheapestFirst, CloudBurst, InClusterFifo
from hybridgpu.simulate.workload import SimJob

from .test_simulate_replay import (
    CLOUD,
    GIB,
    NETWORK,
    OWNED,
    T4,
    jobs_strategy,
    sim_job,
    within,
    workload,
)

NODES = (Node("n0", T4, 16 * GIB, 2),)


def test_every_latency_sensitive_start_is_an_enforced_instant() -> None:
    # Three 1-GPU jobs that must start at once, overlapping only after the first 300 s: the
    # 2-GPU pool holds two, the third must go to the network (0.30) rather than the pool (0.20).
    jobs = tuple(sim_job(f"j{i}", float(i), 3600.0, ls=True) for i in range(3))
    bound = lower_bound(jobs, NODES, (NETWORK,), OWNED, [300.0] * 3)
    in_cluster = Decimal("0.20") * 2 + Decimal(NETWORK.usd_per_gpu_hour)
    assert bound.status == "optimal"
    assert abs(bound.cost_usd - in_cluster) < Decimal("0.001")


def test_late_budget_covers_the_replays_percentile() -> None:
    # p95 of 100 delays is the element at index 95: at most 4 late; 5 allowed is safe.
    assert late_budget(100, 0.05) == 5
    assert late_budget(0, 0.05) == 0
    assert late_budget(10, 0.0) == 0


def test_a_late_allowance_loosens_and_a_best_effort_target_tightens() -> None:
    jobs = tuple(sim_job(f"j{i}", 0.0, 3600.0, ls=True) for i in range(4)) + tuple(
        sim_job(f"b{i}", 10.0, 7200.0) for i in range(2)
    )
    sw = [300.0 if j.latency_sensitive else None for j in jobs]
    market = (NETWORK, CLOUD)
    base = lower_bound(jobs, NODES, market, OWNED, sw)
    loose = lower_bound(jobs, NODES, market, OWNED, sw, ServiceTargets(ls_late_share=0.5))
    tight = lower_bound(
        jobs, NODES, market, OWNED, sw, ServiceTargets(be_start_within=600.0, be_late_share=0.0)
    )
    assert loose.cost_usd < base.cost_usd < tight.cost_usd


@settings(max_examples=40, deadline=None)
@given(jobs_strategy)
def test_targeted_bound_never_exceeds_a_replay_that_meets_the_targets(
    jobs: list[SimJob],
) -> None:
    w = workload(*jobs)
    market = (NETWORK, CLOUD)
    targets = ServiceTargets(be_start_within=600.0, be_late_share=0.05)
    bound = lower_bound(w.jobs, NODES, market, OWNED, [within(j) for j in w.jobs], targets)
    assert bound.status == "optimal"
    for router in (InClusterFifo(), CloudBurst(), CheapestFirst()):
        replay = Replay(w, NODES, market, OWNED, within)
        result = replay.run(router)
        if result.slo_attainment < 1.0 or result.unfinished:
            continue
        starts = {r.job.name: r.start for r in replay.records if r.start is not None}
        late = sum(
            1
            for j in w.jobs
            if not j.latency_sensitive and starts[j.name] - j.arrival > 600.0 + 1e-9
        )
        if late <= late_budget(sum(1 for j in w.jobs if not j.latency_sensitive), 0.05) - 1:
            assert bound.cost_usd <= result.total_cost


@settings(max_examples=60, deadline=None)
@given(jobs_strategy)
def test_the_chosen_instants_dominate_every_instant(jobs: list[SimJob]) -> None:
    # Whatever set of jobs surely runs at some instant also surely runs at a chosen one, so
    # enforcing capacity at the chosen instants is as tight as enforcing it everywhere.
    w = workload(*jobs)
    windows = [within(j) for j in w.jobs]
    chosen, covers = _peak_instants(w.jobs, windows)
    at_chosen = [{i for i, ks in covers.items() if k in ks} for k in range(len(chosen))]
    spans = [
        (j.arrival + s, j.arrival + j.duration)
        for j, s in zip(w.jobs, windows, strict=True)
        if s is not None and j.duration > s
    ]
    for t in sorted({b for b, _ in spans} | {e for _, e in spans}):
        running = {
            i
            for i, (j, s) in enumerate(zip(w.jobs, windows, strict=True))
            if s is not None and j.arrival + s <= t < j.arrival + j.duration
        }
        assert any(running <= seen for seen in at_chosen) or not running
