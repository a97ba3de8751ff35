"""Preemption in the replay: the operator's eviction rule (routing.preemption), virtual clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.cli import main
from hybridgpu.simulate.inputs import DATA, Node
from hybridgpu.simulate.market import MarketOffer
from hybridgpu.simulate.replay import Action, JobRecord, Replay, RunResult
from hybridgpu.simulate.report import render_table
from hybridgpu.simulate.routers import PolicyRouter, job_spec
from hybridgpu.simulate.run import SimulationConfig, load_policy, simulate
from hybridgpu.simulate.workload import SimJob, Workload

GIB = 2**30
T4 = "Tesla-T4"
OWNED = {T4: Decimal("0.20")}
TWO_T4 = (Node("n0", T4, 16 * GIB, 2),)


def sim_job(name: str, arrival: float, duration: float, ls: bool = False) -> SimJob:
    return SimJob(name, arrival, duration, 1, 1000, None, "LS" if ls else "BE", ls)


def within(job: SimJob) -> float | None:
    return 300.0 if job.latency_sensitive else None


def best_effort(job: SimJob) -> bool:
    return not job.latency_sensitive


def policy(name: str, **changes: object) -> RoutingPolicySpec:
    _, spec = load_policy(DATA / "policies" / f"{name}.yaml")
    api = spec.to_api()
    api["inCluster"]["gpuPrices"] = [{"gpuProduct": T4, "pricePerGPUHour": "0.20"}]
    api.update(changes)
    return RoutingPolicySpec.model_validate(api)


def replay(
    spec: RoutingPolicySpec,
    jobs: list[SimJob],
    preemptible: Callable[[SimJob], bool] = best_effort,
    market: tuple[MarketOffer, ...] = (),
    evict_on_networks: bool = False,
) -> tuple[RunResult, dict[str, JobRecord]]:
    w = Workload("test", "alibaba-pod-list", tuple(jobs), len(jobs))
    specs = [job_spec(j, within(j), preemptible(j)) for j in w.jobs]
    r = Replay(w, TWO_T4, market, OWNED, within, preemptible)
    result = r.run(PolicyRouter("p", spec, specs, evict_on_networks=evict_on_networks))
    return result, {rec.job.name: rec for rec in r.records}


# Both T4s busy with best-effort work when a latency-sensitive job arrives; no network to
# spill to, so nothing starts it within its 5m but eviction.
FULL_POOL = [
    sim_job("be-old", 0, 36000),
    sim_job("be-new", 100, 7200),
    sim_job("ls", 1300, 600, ls=True),
]


def test_latency_sensitive_job_evicts_the_newest_best_effort_job_which_redoes_only_lost_work() -> (
    None
):
    result, recs = replay(policy("wait-and-preempt"), FULL_POOL)
    assert recs["ls"].start == 1300.0  # now, on the GPU be-new held
    assert recs["ls"].end == 1900.0
    old, new = recs["be-old"], recs["be-new"]
    assert (old.start, old.end, old.preemptions) == (0.0, 36000.0, 0)
    # be-new ran 1200 s: checkpointed at 900, so 300 s are lost and 7200 - 900 remain. It is
    # routed again at once, queues for the T4 and starts when "ls" ends.
    assert (new.start, new.preemptions, new.remaining) == (100.0, 1, 6300.0)
    assert new.end == 1900.0 + 6300.0
    # Billed for the 1200 s it used (lost part included) and the 6300 s after: 7500 s at $0.20.
    assert new.cost == Decimal("0.4166666667")
    assert result.total_cost == Decimal("2.00") + Decimal("0.0333333333") + new.cost
    assert result.preemptions == 1
    assert result.preempted_jobs == 1
    assert result.lost_gpu_hours == pytest.approx(300 / 3600)
    assert result.slo_attainment == 1.0
    assert result.unfinished == 0


def test_a_policy_without_preemption_never_evicts() -> None:
    for spec in (
        policy("wait-for-price"),
        policy("wait-and-preempt", preemption={"evict": "Never"}),
    ):
        result, recs = replay(spec, FULL_POOL)
        assert result.preemptions == 0
        assert recs["be-new"].end == 7300.0  # ran once, to its end
        assert recs["ls"].start == 7300.0  # waited for it: late
        assert result.slo_attainment == 0.0


def test_no_eviction_when_no_job_is_preemptible() -> None:
    result, recs = replay(policy("wait-and-preempt"), FULL_POOL, preemptible=lambda _: False)
    assert result.preemptions == 0
    assert recs["ls"].start == 7300.0


def test_a_job_of_equal_rank_is_never_evicted() -> None:
    # Every job preemptible, but the running ones are latency-sensitive like the newcomer.
    jobs = [
        sim_job("ls-a", 0, 3600, ls=True),
        sim_job("ls-b", 10, 3600, ls=True),
        sim_job("ls-c", 600, 60, ls=True),
    ]
    result, recs = replay(policy("wait-and-preempt"), jobs, preemptible=lambda _: True)
    assert result.preemptions == 0
    assert recs["ls-c"].start == 3600.0
    assert (recs["ls-a"].end, recs["ls-b"].end) == (3600.0, 3610.0)


def test_the_victim_is_routed_with_its_remaining_work(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = policy("wait-and-preempt")
    w = Workload("test", "alibaba-pod-list", tuple(FULL_POOL), 3)
    specs = [job_spec(j, within(j), best_effort(j)) for j in w.jobs]
    router = PolicyRouter("p", spec, specs)
    seen: dict[str, list[float]] = {}
    when: dict[str, list[float]] = {}
    decide, route = router._spec, router.route

    def spy(index: int, rec: JobRecord) -> InferenceJobSpec:
        out = decide(index, rec)
        seen.setdefault(rec.job.name, []).append(out.estimated_duration.total_seconds())
        return out

    def route_spy(index: int, replay: Replay, now: float) -> Action:
        when.setdefault(replay.jobs[index].name, []).append(now)
        return route(index, replay, now)

    monkeypatch.setattr(router, "_spec", spy)
    monkeypatch.setattr(router, "route", route_spy)
    r = Replay(w, TWO_T4, (), OWNED, within, best_effort)
    r.run(router)
    first, *after = seen["be-new"]
    assert first == 7200.0 and after and set(after) == {6300.0}
    assert specs[1].preemptible and not specs[2].preemptible
    # Evicted, it does not queue behind its evictor (the operator's rule,
    # routing.admission.evicted_would_queue): it waits in admission, woken when the
    # evictor's GPU frees at 1900 s, and starts then.
    assert when["be-new"][-1] == 1900.0
    assert r.records[1].end == 1900.0 + 6300.0


def test_report_shows_preemptions_lost_work_and_best_effort_p95(tmp_path: Path) -> None:
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    header += "creation_time,deletion_time,scheduled_time\n"
    # T4-only pods: no network offers a T4, so the latency-sensitive one can only evict.
    rows = [
        "be-old,1000,1024,1,1000,T4,BE,Running,0,36000,0\n",
        "be-new,1000,1024,1,1000,T4,BE,Running,100,7300,100\n",
        "ls,1000,1024,1,1000,T4,LS,Running,1300,1900,1300\n",
    ]
    trace = tmp_path / "t.csv"
    trace.write_text(header + "".join(rows))
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,T4\n")
    policies = tuple(
        DATA / "policies" / f"{n}.yaml" for n in ("wait-and-preempt", "wait-for-price")
    )
    config = SimulationConfig(
        jobs=trace, nodes=nodes, capacity_scale=1.0, policies=policies, baselines=()
    )
    report = simulate(config)
    by_policy = {r["policy"]: r for r in report.to_json()["results"]}
    assert by_policy["wait-and-preempt"]["preemptions"] == 1
    assert by_policy["wait-and-preempt"]["preempted_jobs"] == 1
    assert by_policy["wait-and-preempt"]["lost_gpu_hours"] == pytest.approx(0.083, abs=1e-3)
    assert by_policy["wait-and-preempt"]["slo_attainment"] == 1.0
    assert by_policy["wait-for-price"]["preemptions"] == 0
    assert by_policy["wait-for-price"]["slo_attainment"] == 0.0
    # Best-effort starts: both at arrival (eviction delays a victim's end, not its start).
    assert by_policy["wait-and-preempt"]["best_effort_p95_start_seconds"] == 0.0
    console = Console(width=250, record=True)
    render_table(report, console)
    text = console.export_text()
    assert "preemptions" in text and "lost GPU-h" in text and "BE p95 start" in text
    row = next(line for line in text.splitlines() if "wait-and-preempt" in line)
    assert "0.1" in row  # 0.083 GPU-h lost, one decimal


def test_best_effort_p95_start_leaves_out_latency_sensitive_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    header += "creation_time,deletion_time,scheduled_time\n"
    # One T4: "be" waits for "ls-a" (an hour); the latency-sensitive "ls-b" waits longer still.
    rows = [
        "ls-a,1000,1024,1,1000,T4,LS,Running,0,3600,0\n",
        "be,1000,1024,1,1000,T4,BE,Running,10,70,10\n",
        "ls-b,1000,1024,1,1000,T4,LS,Running,20,80,20\n",
    ]
    trace = tmp_path / "t.csv"
    trace.write_text(header + "".join(rows))
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,1,T4\n")
    args = ["simulate", "--jobs", str(trace), "--nodes", str(nodes), "--capacity-scale", "1"]
    args += [
        "--baseline",
        "in-cluster-fifo",
        "--policy",
        str(DATA / "policies/wait-for-price.yaml"),
    ]
    assert main([*args, "--format", "json"]) == 0
    fifo = next(
        r
        for r in json.loads(capsys.readouterr().out)["results"]
        if r["policy"] == "in-cluster-fifo"
    )
    assert fifo["best_effort_p95_start_seconds"] == 3590.0
    assert fifo["p95_start_seconds"] == 3640.0  # ls-b, after "be"
    assert main([*args, "--preemptible", "none", "--format", "json"]) == 0
    with pytest.raises(SystemExit):
        main([*args, "--preemptible", "all"])


def test_work_about_to_end_is_spared_for_the_job_queued_for_it() -> None:
    # ls-1 queues for be-soon's GPU (free at 1400, in time). ls-2 then finds nothing in time:
    # evicting the newest (be-soon) would make ls-1 late; the rule spares work that ends
    # within the deadline and evicts be-long instead.
    jobs = [
        sim_job("be-long", 0, 36000),
        sim_job("be-soon", 1000, 400),
        sim_job("ls-1", 1200, 600, ls=True),
        sim_job("ls-2", 1210, 600, ls=True),
    ]
    result, recs = replay(policy("wait-and-preempt"), jobs)
    assert (recs["ls-1"].start, recs["ls-2"].start) == (1400.0, 1210.0)
    assert (recs["be-long"].preemptions, recs["be-soon"].preemptions) == (1, 0)
    assert recs["be-soon"].end == 1400.0
    assert result.slo_attainment == 1.0


def test_a_victim_resumed_on_a_network_pays_each_place_for_its_part() -> None:
    # No deferral: be-new, evicted at 1300 for a 2 h job, would wait 2 h (> maxQueueTime 1h)
    # for a T4, so it resumes on the network; "ls" evicts rather than pay the network $0.60,
    # since 2 h at $0.20 plus at most 15 min lost is $0.45.
    nosana = MarketOffer(
        "nosana",
        "depin",
        "NVIDIA-GeForce-RTX-4090",
        24 * GIB,
        Decimal("0.30"),
        60.0,
        8,
        0.0,
        TrustTier.VERIFIED,
        ProviderType.NOSANA,
    )
    jobs = [
        sim_job("be-old", 0, 36000),
        sim_job("be-new", 100, 7200),
        sim_job("ls", 1300, 7200, ls=True),
    ]
    spec = policy("spill-when-cheaper", preemption={"evict": "LowerRank"})
    result, recs = replay(spec, jobs, market=(nosana,))
    new = recs["be-new"]
    assert (recs["ls"].start, recs["ls"].backend) == (1300.0, "InCluster")
    assert (new.start, new.backend, new.end) == (100.0, "External", 1360.0 + 6300.0)
    # 1200 s on the T4 at $0.20, then the 6300 s left at $0.30 on the network.
    assert new.cost == Decimal("0.0666666667") + Decimal("0.525")
    assert result.external_cost == Decimal("0.525")
    assert result.jobs_external == 1


# ls-a and ls-b hold both T4s; be-q queues for ls-b's GPU. ls-c arrives with nothing free and
# nothing evictable (be-q has not started), so the engine tells it to wait, its retry hours
# away (the queue's next release is ls-a's, at 36000 s).
WAITS_THEN_BE_STARTS = [
    sim_job("ls-a", 0, 36000, ls=True),
    sim_job("ls-b", 1, 1000, ls=True),
    sim_job("be-q", 10, 36000),
    sim_job("ls-c", 900, 600, ls=True),
]


def test_a_waiting_latency_sensitive_job_evicts_preemptible_work_that_starts_meanwhile() -> None:
    result, recs = replay(policy("wait-and-preempt"), WAITS_THEN_BE_STARTS)
    # At 1001 ls-b ends and be-q starts on its GPU: ls-c, still within its 5m, is decided
    # again at once and evicts it (it had run 0 s: nothing lost).
    assert recs["be-q"].preemptions == 1
    assert recs["ls-c"].start == 1001.0
    assert result.slo_attainment == 1.0
    assert result.lost_gpu_hours == 0.0


def test_a_waiting_job_already_late_is_not_woken_by_a_preemptible_start() -> None:
    # ls-c arrives 400 s before ls-b ends: past its 5m when be-q starts, so it keeps waiting
    # for its retry rather than take the GPU from be-q at once (late either way; woken, the
    # GPU would go to a late job before jobs that can still start in time).
    jobs = [*WAITS_THEN_BE_STARTS[:3], sim_job("ls-c", 600, 600, ls=True)]
    result, recs = replay(policy("wait-and-preempt"), jobs)
    assert recs["ls-c"].start is not None and recs["ls-c"].start > 1001.0
    # Nor does it evict at its retry: past its deadline, an eviction buys no SLO.
    assert recs["be-q"].preemptions == 0 and recs["be-q"].lost_gpu_seconds == 0
    assert result.slo_attainment == pytest.approx(2 / 3)


def test_a_policy_that_never_evicts_is_not_woken_by_a_preemptible_start() -> None:
    # Deciding ls-c again when be-q starts could only change its answer with less capacity,
    # and would move the figures of policies without preemption for nothing.
    w = Workload("test", "alibaba-pod-list", tuple(WAITS_THEN_BE_STARTS), 4)
    specs = [job_spec(j, within(j), best_effort(j)) for j in w.jobs]
    router = PolicyRouter("p", policy("wait-for-price"), specs)
    decided: list[tuple[int, float]] = []
    route = router.route

    def counting(index: int, replay: Replay, now: float) -> object:
        decided.append((index, now))
        return route(index, replay, now)

    router.route = counting  # type: ignore[method-assign,assignment]
    Replay(w, TWO_T4, (), OWNED, within, best_effort).run(router)
    assert (3, 1001.0) not in decided  # ls-c (index 3) only at arrival and at its retry
    assert decided.count((3, 900.0)) == 1


def nosana(capacity: int) -> MarketOffer:
    return MarketOffer(
        "nosana",
        "depin",
        "NVIDIA-GeForce-RTX-4090",
        24 * GIB,
        Decimal("0.10"),  # cheaper than the T4s: the best-effort job goes there at once
        60.0,
        capacity,
        0.0,
        TrustTier.COMMUNITY,
        ProviderType.NOSANA,
    )


# The one Nosana GPU runs a best-effort job, the T4s latency-sensitive work (equal rank:
# never evicted), when another latency-sensitive job arrives.
FULL_NETWORK = [
    sim_job("be", 0, 7200),
    sim_job("ls-a", 10, 36000, ls=True),
    sim_job("ls-b", 10, 36000, ls=True),
    sim_job("ls", 1360, 600, ls=True),
]


def test_a_latency_sensitive_job_evicts_best_effort_work_on_a_network_that_can_cancel() -> None:
    result, recs = replay(
        policy("wait-and-preempt"), FULL_NETWORK, market=(nosana(1),), evict_on_networks=True
    )
    be, ls = recs["be"], recs["ls"]
    assert be.preemptions == 1
    # be ran 1360 - 60 = 1300 s on Nosana (after its 60 s start latency): 900 checkpointed.
    assert (be.remaining, be.lost_gpu_seconds) == (7200 - 900, 400)
    assert ls.start == 1360 + 60  # submitted to the freed GPU now, running after the latency
    assert ls.target == "nosana/NVIDIA-GeForce-RTX-4090"
    assert result.slo_attainment == 1.0
    assert result.unfinished == 0
    # Billed the 1300 s of its first run, then the 6300 s left.
    assert be.external_cost == (Decimal("0.10") * (1300 + 6300) / 3600).quantize(Decimal("1e-10"))


def test_no_eviction_on_a_network_whose_adapter_cannot_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hybridgpu.simulate.routers as routers

    monkeypatch.setattr(routers, "CANCELLABLE_TYPES", frozenset())
    result, recs = replay(
        policy("wait-and-preempt"), FULL_NETWORK, market=(nosana(1),), evict_on_networks=True
    )
    assert result.preemptions == 0
    assert recs["be"].end == 60 + 7200.0


def test_network_evictions_are_off_unless_asked_so_the_default_figures_stay() -> None:
    result, recs = replay(policy("wait-and-preempt"), FULL_NETWORK, market=(nosana(1),))
    assert result.preemptions == 0
    assert recs["be"].end == 60 + 7200.0


@pytest.mark.parametrize(("limit", "evicts"), [("0.21", False), ("0.25", True)])
def test_no_eviction_on_a_network_for_a_job_the_budget_would_refuse(
    limit: str, evicts: bool
) -> None:
    # be's $0.20 on Nosana is committed; ls's $0.0167 there fits in $0.25, not in $0.21 (the
    # engine checks capacity before the budget, as the operator's World.evict knows).
    spec = policy("wait-and-preempt", budget={"limit": limit, "whenExceeded": "Reject"})
    result, recs = replay(spec, FULL_NETWORK, market=(nosana(1),), evict_on_networks=True)
    assert (recs["be"].preemptions == 1) is evicts
    assert result.preemptions == (1 if evicts else 0)


def test_what_an_eviction_leaves_free_wakes_a_waiting_job_as_the_operators_queue_does() -> None:
    # A 2-GPU best-effort job holds both T4s; "deferred" waits for a T4 (Nosana is free but
    # 4.5 x dearer). "ls" needs one GPU in 5m and evicts the 2-GPU job: the GPU it leaves
    # free is a release (the victim's Pod deletion, to the operator's queue), and "deferred",
    # the oldest job waiting for it, starts then, not at its 6 h backstop.
    dear = MarketOffer(
        "nosana",
        "depin",
        "NVIDIA-GeForce-RTX-4090",
        24 * GIB,
        Decimal("0.90"),
        60.0,
        8,
        0.0,
        TrustTier.COMMUNITY,
        ProviderType.NOSANA,
    )
    jobs = [
        SimJob("be-big", 0, 36000, 2, 1000, None, "BE", False),
        sim_job("deferred", 10, 600),
        sim_job("ls", 100, 3600, ls=True),
    ]
    result, recs = replay(policy("wait-and-preempt"), jobs, market=(dear,))
    assert recs["be-big"].preemptions == 1
    assert recs["ls"].start == 100.0 and recs["ls"].backend == "InCluster"
    assert recs["deferred"].start == 100.0 and recs["deferred"].backend == "InCluster"
    assert result.unfinished == 0
