"""The offline lower bound: tighter where it can be, never above a schedule it covers."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgpu.simulate.inputs import DATA, Node
from hybridgpu.simulate.lowerbound import (
    ServiceTargets,
    _peak_instants,
    attainable_bound,
    late_budget,
    lower_bound,
)
from hybridgpu.simulate.replay import Replay, Router
from hybridgpu.simulate.routers import (
    CheapestFirst,
    CloudBurst,
    InClusterFifo,
    PolicyRouter,
    job_spec,
)
from hybridgpu.simulate.run import _with_prices, load_policy
from hybridgpu.simulate.workload import SimJob, Workload

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


P100 = "Tesla-P100-PCIE-16GB"
A10 = "NVIDIA-A10"
RTX = "NVIDIA-GeForce-RTX-4090"
MIXED_NODES = (Node("t0", T4, 16 * GIB, 2), Node("p0", P100, 16 * GIB, 1))
MIXED_OWNED = {T4: Decimal("0.20"), P100: Decimal("0.25")}
# P100: only the 1-GPU pool, so overlapping P100 jobs cannot all start in time; A10: nowhere.
PRODUCT_CHOICES: tuple[tuple[str, ...] | None, ...] = (
    None,
    (T4,),
    (P100,),
    (P100,),
    (A10,),
    (RTX,),
)

_background = st.lists(
    st.builds(
        lambda i, a, d, g, ls, p: SimJob(
            f"j{i}", float(a), float(d), g, 1000, p, "LS" if ls else "BE", ls
        ),
        st.integers(0, 10_000),
        st.integers(0, 6_000),
        st.integers(301, 20_000),
        st.integers(1, 2),
        st.booleans(),
        st.sampled_from(PRODUCT_CHOICES),
    ),
    min_size=1,
    max_size=16,
    unique_by=lambda j: j.name,
)
# Latency-sensitive P100 jobs arriving together: more than one cannot all start in time.
_crowd = st.lists(
    st.builds(
        lambda i, a, d: SimJob(f"c{i}", float(a), float(d), 1, 1000, (P100,), "LS", True),
        st.integers(0, 10_000),
        st.integers(0, 300),
        st.integers(1_200, 7_200),
    ),
    max_size=4,
    unique_by=lambda j: j.name,
)
constrained_jobs = st.builds(lambda a, b: a + b, _background, _crowd)


def _best_effort(job: SimJob) -> bool:
    return not job.latency_sensitive


def _routers(w: Workload) -> list[Router]:
    specs = [job_spec(j, within(j)) for j in w.jobs]
    routers: list[Router] = [InClusterFifo(), CloudBurst(), CheapestFirst()]
    for name in ("spill-when-cheaper", "wait-for-price", "balanced", "wait-and-preempt"):
        _, policy = load_policy(DATA / "policies" / f"{name}.yaml")
        routers.append(PolicyRouter(name, _with_prices(policy, MIXED_OWNED), specs))
    return routers


@settings(max_examples=60, deadline=None)
@given(constrained_jobs)
def test_attainable_bound_is_valid_when_not_every_slo_can_be_met(jobs: list[SimJob]) -> None:
    w = workload(*jobs)
    market = (NETWORK, CLOUD)
    sw = [within(j) for j in w.jobs]
    bound = attainable_bound(w.jobs, MIXED_NODES, market, MIXED_OWNED, sw)
    assert bound.status.startswith("optimal") or bound.status == "empty"
    assert bound.cost_usd.is_finite() and bound.cost_usd >= 0
    # A10 is offered nowhere; two P100s are more than the only P100 node has.
    assert bound.unservable_jobs == sum(
        1 for j in w.jobs if j.products == (A10,) or (j.products == (P100,) and j.gpus > 1)
    )
    assert bound.ls_jobs == sum(1 for j in w.jobs if j.latency_sensitive)
    assert bound.ls_on_time <= bound.ls_jobs - bound.ls_unservable
    for router in _routers(w):
        # Best-effort work preemptible: evictions redo lost work, which only adds cost.
        replay = Replay(w, MIXED_NODES, market, MIXED_OWNED, within, _best_effort)
        result = replay.run(router)
        # No schedule starts more latency-sensitive jobs in time than the bound says it can.
        assert result.slo_met <= bound.ls_on_time, router.name
        if result.unfinished != bound.unservable_jobs:
            continue  # it left servable work undone: the bound covers schedules that run it
        if result.slo_met >= bound.ls_on_time:
            assert bound.cost_usd <= result.total_cost, router.name
        # At the replay's own attainment the bound is below it too.
        own = lower_bound(
            w.jobs,
            MIXED_NODES,
            market,
            MIXED_OWNED,
            sw,
            ServiceTargets(ls_min_on_time=result.slo_met),
        )
        assert own.status in ("optimal", "empty"), (router.name, own.status)
        assert own.cost_usd <= result.total_cost, router.name
        assert own.cost_usd <= bound.cost_usd + Decimal("0.0001")


def test_attainable_share_counts_a_pool_that_is_too_small_at_the_peak() -> None:
    # Three latency-sensitive P100-only jobs at once on a 1-GPU P100 pool: one can be on time,
    # and one A10 job runs nowhere. The strict bound is infeasible; this one is finite.
    p100 = [SimJob(f"p{i}", float(i), 3600.0, 1, 1000, (P100,), "LS", True) for i in range(3)]
    jobs = (*p100, SimJob("a10", 0.0, 600.0, 1, 1000, (A10,), "LS", True))
    sw = [300.0] * 4
    strict = lower_bound(jobs, MIXED_NODES, (NETWORK,), MIXED_OWNED, sw)
    assert strict.status.startswith("solver")
    bound = attainable_bound(jobs, MIXED_NODES, (NETWORK,), MIXED_OWNED, sw)
    assert bound.status == "optimal at attainable SLO"
    assert (bound.ls_jobs, bound.ls_on_time, bound.unservable_jobs) == (4, 1, 1)
    assert bound.slo_attainable == 0.25
    # All three P100 jobs still run (on the one GPU, one after another): 3 GPU-hours at 0.25.
    assert abs(bound.cost_usd - Decimal("0.75")) < Decimal("0.001")
