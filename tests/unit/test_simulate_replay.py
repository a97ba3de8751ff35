from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.cli import main
from hybridgpu.routing.requeue import requeue_after_seconds
from hybridgpu.simulate.inputs import DATA, Node
from hybridgpu.simulate.lowerbound import lower_bound
from hybridgpu.simulate.market import MarketOffer
from hybridgpu.simulate.replay import Action, JobRecord, Replay, RunResult
from hybridgpu.simulate.routers import (
    CheapestFirst,
    CloudBurst,
    InClusterFifo,
    PolicyRouter,
    job_spec,
)
from hybridgpu.simulate.run import load_policy
from hybridgpu.simulate.workload import SimJob, TraceError, Workload

GIB = 2**30
T4 = "Tesla-T4"
OWNED = {T4: Decimal("0.20")}


def sim_job(name: str, arrival: float, duration: float, gpus: int = 1, ls: bool = False) -> SimJob:
    return SimJob(name, arrival, duration, gpus, 1000, None, "LS" if ls else "BE", ls)


def workload(*jobs: SimJob) -> Workload:
    return Workload(
        "test", "alibaba-pod-list", tuple(sorted(jobs, key=lambda j: j.arrival)), len(jobs)
    )


def offer(
    provider: str,
    kind: str,
    usd: str,
    capacity: int = 8,
    latency: float = 60.0,
    ptype: ProviderType | None = None,
) -> MarketOffer:
    return MarketOffer(
        provider,
        kind,
        "NVIDIA-GeForce-RTX-4090",
        24 * GIB,
        Decimal(usd),
        latency,
        capacity,
        0.0,
        TrustTier.VERIFIED,
        ptype,
    )


ONE_GPU = (Node("n0", T4, 16 * GIB, 1),)
NETWORK = offer("nosana", "depin", "0.50", ptype=ProviderType.NOSANA)
CLOUD = offer("aws", "cloud", "3.00")


def within(job: SimJob) -> float | None:
    return 300.0 if job.latency_sensitive else None


def test_fifo_queues_the_second_job_until_the_first_ends() -> None:
    w = workload(sim_job("a", 0, 3600), sim_job("b", 10, 3600, ls=True))
    replay = Replay(w, ONE_GPU, (NETWORK,), OWNED, within)
    result = replay.run(InClusterFifo())
    starts = {r.job.name: r.start for r in replay.records}
    assert starts == {"a": 0.0, "b": 3600.0}
    assert result.total_cost == Decimal("0.40")
    assert result.external_cost == 0
    assert result.slo_attainment == 0.0  # b waited an hour against a 5m startWithin
    assert result.p95_start_seconds == 3590.0


def test_cloud_burst_sends_overflow_to_the_cloud() -> None:
    w = workload(sim_job("a", 0, 3600), sim_job("b", 10, 3600))
    replay = Replay(w, ONE_GPU, (NETWORK, CLOUD), OWNED, within)
    result = replay.run(CloudBurst())
    assert result.jobs_external == 1
    assert result.external_cost == Decimal("3.00")
    assert {r.target for r in replay.records} == {T4, "aws/NVIDIA-GeForce-RTX-4090"}


def test_cheapest_first_ignores_networks_skypilot_cannot_reach() -> None:
    runpod = offer("runpod", "marketplace", "0.34")
    w = workload(sim_job("a", 0, 3600), sim_job("b", 10, 3600))
    replay = Replay(w, ONE_GPU, (NETWORK, runpod), OWNED, within)
    replay.run(CheapestFirst())
    assert [r.target for r in replay.records] == [T4, "runpod/NVIDIA-GeForce-RTX-4090"]


def test_policy_spills_latency_sensitive_jobs_and_queues_best_effort() -> None:
    name, policy = load_policy(_policy_file("spill-when-cheaper"))
    w = workload(sim_job("a", 0, 3600), sim_job("ls", 10, 600, ls=True), sim_job("be", 20, 600))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    policy = policy.model_validate(
        {
            **policy.to_api(),
            "inCluster": {
                **policy.to_api()["inCluster"],
                "gpuPrices": [{"gpuProduct": T4, "pricePerGPUHour": "0.20"}],
            },
        }
    )
    replay = Replay(
        w, ONE_GPU, (offer("nosana", "depin", "0.90", ptype=ProviderType.NOSANA),), OWNED, within
    )
    result = replay.run(PolicyRouter(name, policy, specs))
    by_name = {r.job.name: r for r in replay.records}
    assert by_name["ls"].backend == "External"
    assert by_name["ls"].start == 70.0
    # Best effort: waiting for the cheaper in-cluster GPU beats paying 0.90 now.
    assert by_name["be"].backend == "InCluster"
    assert by_name["be"].start == 3600.0
    assert result.slo_attainment == 1.0


def _policy_file(name: str) -> Path:
    return DATA / "policies" / f"{name}.yaml"


def test_policy_yaml_errors_name_the_file_and_place(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("spec:\n  weights: {price: [\n")
    with pytest.raises(TraceError, match=r"p\.yaml:3:1: invalid YAML"):
        load_policy(bad)
    bad.write_text("kind: RoutingPolicy\nspec:\n  weights: {price: 500}\n")
    with pytest.raises(TraceError, match=r"spec\.weights\.price"):
        load_policy(bad)


jobs_strategy = st.lists(
    st.builds(
        lambda i, a, d, g, ls: sim_job(f"j{i}", float(a), float(d), g, ls),
        st.integers(0, 10_000),
        st.integers(0, 20_000),
        st.integers(1, 20_000),
        st.integers(1, 2),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda j: j.name,
)


@settings(max_examples=40, deadline=None)
@given(jobs_strategy)
def test_lower_bound_never_exceeds_a_replay_that_meets_every_slo(jobs: list[SimJob]) -> None:
    w = workload(*jobs)
    nodes = (Node("n0", T4, 16 * GIB, 2),)
    market = (NETWORK, CLOUD)
    bound = lower_bound(w.jobs, nodes, market, OWNED, [within(j) for j in w.jobs])
    assert bound.status == "optimal"
    for router in (InClusterFifo(), CloudBurst(), CheapestFirst()):
        result = Replay(w, nodes, market, OWNED, within).run(router)
        if result.slo_attainment == 1.0 and result.unfinished == 0:
            assert bound.cost_usd <= result.total_cost


def test_command_runs_on_the_bundled_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--format", "json", "--hours", "2000"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"workload", "lower_bound_cost_usd", "results"}
    names = [r["policy"] for r in doc["results"]]
    assert {"in-cluster-fifo", "cloud-burst", "cheapest-first", "spill-when-cheaper"} <= set(names)
    for r in doc["results"]:
        assert set(r) >= {
            "policy",
            "total_cost_usd",
            "external_cost_usd",
            "jobs",
            "jobs_external",
            "slo_attainment",
            "p95_start_seconds",
            "unfinished",
        }
        assert isinstance(r["total_cost_usd"], str)
        if r["slo_attainment"] == 1.0 and r["unfinished"] == 0:
            assert Decimal(r["total_cost_usd"]) >= Decimal(doc["lower_bound_cost_usd"])
        assert r["jobs"] == doc["workload"]["jobs"]


def test_command_reports_bad_files_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,ten,1\n")
    assert main(["simulate", "--jobs", str(bad), "--format", "json"]) == 2
    assert "t.csv:2:21: ContextTokens must be an integer" in capsys.readouterr().err


def test_command_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "azure.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(f"2023-11-16 18:15:{s:02d}.0,1000,200\n" for s in range(30))
    )
    assert main(["simulate", "--jobs", str(trace), "--plot", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "spill-when-cheaper" in out
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["cost-vs-slo.png", "spend-over-time.png", "utilisation-over-time.png"]
    assert all((tmp_path / "png" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def _on_two_t4_nodes_and_a_network(*jobs: SimJob) -> tuple[RunResult, dict[str, JobRecord]]:
    """Replay ``jobs`` on two 2-GPU T4 nodes (maxQueueTime 5m) and a network $0.90 a GPU-hour,
    60 s from start; the records by job name."""
    name, policy = load_policy(_policy_file("spill-when-cheaper"))
    w = workload(*jobs)
    nodes = (Node("n0", T4, 16 * GIB, 2), Node("n1", T4, 16 * GIB, 2))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    policy = policy.model_copy(
        update={
            "in_cluster": policy.in_cluster.model_validate(
                {
                    **policy.in_cluster.to_api(),
                    "gpuPrices": [{"gpuProduct": T4, "pricePerGPUHour": "0.20"}],
                    "maxQueueTime": "5m",
                }
            )
        }
    )
    network = offer("nosana", "depin", "0.90", latency=60.0, ptype=ProviderType.NOSANA)
    replay = Replay(w, nodes, (network,), OWNED, within)
    result = replay.run(PolicyRouter(name, policy, specs))
    return result, {r.job.name: r for r in replay.records}


def test_a_job_whose_gpus_come_back_on_different_nodes_is_not_told_they_are_near() -> None:
    # Two 2-GPU nodes; one GPU frees on each node soon, the other two only at 1000 s. The
    # pool has two GPUs back at 200 s, but no node has two before 1000 s: the engine knows it
    # (``node_ready_seconds``), so the 2-GPU job with a 5m startWithin goes to the network at
    # once and starts on time, rather than queue for GPUs that never come together.
    soon, late = (100, 200), (1000, 1000)
    result, rec = _on_two_t4_nodes_and_a_network(
        *(sim_job(f"n{i}-{d}", 0, d) for i in (0, 1) for d in (soon[i], late[i])),
        sim_job("z", 10, 600, gpus=2, ls=True),
    )
    assert (rec["z"].backend, rec["z"].start) == ("External", 70.0)
    assert result.slo_attainment == 1.0


def test_a_queued_job_not_started_after_max_queue_time_is_routed_again() -> None:
    # The engine expects two GPUs on n0 at 200 s, but the 1-GPU job queued ahead takes the
    # first of them at 100 s: no node has two free before 1000 s. As in the operator
    # (QueueTimeout), the job is routed again maxQueueTime after it was queued, not as soon
    # as it is later than the engine expected (the replay's own rule before).
    # n0 runs jobs of 100 s and 200 s, n1 of 150 s and 1000 s (best fit fills n0 first).
    running = [sim_job(f"r{d}", 0, d) for d in (100, 200, 150, 1000)]
    result, rec = _on_two_t4_nodes_and_a_network(
        *running, sim_job("y", 5, 2000), sim_job("z", 10, 600, gpus=2, ls=True)
    )
    assert (rec["y"].backend, rec["y"].start) == ("InCluster", 100.0)
    # Queued at 10 expecting GPUs at 200; still not running at 10 + 300, so re-routed then to
    # the network, starting 60 s later: past its 5m startWithin, which the operator misses too.
    assert (rec["z"].backend, rec["z"].start) == ("External", 370.0)
    assert result.slo_attainment == 0.0


def _with_t4_price(policy: RoutingPolicySpec) -> RoutingPolicySpec:
    api = policy.to_api()
    api["inCluster"]["gpuPrices"] = [{"gpuProduct": T4, "pricePerGPUHour": "0.20"}]
    return RoutingPolicySpec.model_validate(api)


class CountingReplay(Replay):
    """Counts every dispatch, so a job started twice would show."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dispatches: Counter[str] = Counter()

    def _apply(self, index: int, action: Action, now: float) -> None:
        if action.kind in ("start", "queue", "external"):
            self.dispatches[self.jobs[index].name] += 1
        super()._apply(index, action, now)


def test_a_deferred_job_is_woken_when_the_cheap_gpu_frees_and_runs_once() -> None:
    # "a" holds the only T4 for 10 h; "be" would queue past maxQueueTime (1h). Nosana is free
    # but 4.5 x dearer: spill-when-cheaper sends "be" there, wait-for-price waits for the T4.
    w = workload(sim_job("a", 0, 36000), sim_job("be", 10, 600))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    nosana = offer("nosana", "depin", "0.90", ptype=ProviderType.NOSANA)
    results = {}
    for name in ("spill-when-cheaper", "wait-for-price"):
        _, policy = load_policy(_policy_file(name))
        replay = CountingReplay(w, ONE_GPU, (nosana,), OWNED, within)
        result = replay.run(PolicyRouter(name, _with_t4_price(policy), specs))
        results[name] = (result, {r.job.name: r for r in replay.records}, replay.dispatches)
    spill, spill_recs, _ = results["spill-when-cheaper"]
    assert spill_recs["be"].backend == "External"
    deferred, recs, dispatches = results["wait-for-price"]
    # Woken by the release at 36000 s, not by the 6 h backstop (which fell at 21610 s and found
    # the T4 still busy); the backstop due after that is stale and must not start it again.
    assert recs["be"].backend == "InCluster"
    assert recs["be"].start == 36000.0
    assert dispatches == Counter({"a": 1, "be": 1})
    assert deferred.total_cost == Decimal("2.0333333333")  # 10 h + 10 min at $0.20
    assert deferred.total_cost < spill.total_cost
    assert deferred.unfinished == 0


def test_deferral_gives_up_waiting_after_max_wait() -> None:
    # The T4 stays busy for 20 days, past wait-for-price's 14-day maxWait; "late" arrives on day
    # 10 so that the replay does not give up (7 days after the last arrival) before that.
    w = workload(
        sim_job("a", 0, 20 * 86400), sim_job("be", 10, 600), sim_job("late", 10 * 86400, 60)
    )
    specs = [job_spec(j, within(j)) for j in w.jobs]
    nosana = offer("nosana", "depin", "0.90", ptype=ProviderType.NOSANA)
    _, policy = load_policy(_policy_file("wait-for-price"))
    replay = CountingReplay(w, ONE_GPU, (nosana,), OWNED, within)
    replay.run(PolicyRouter("wait-for-price", _with_t4_price(policy), specs))
    be = next(r for r in replay.records if r.job.name == "be")
    assert be.backend == "External"
    assert be.start == 10 + 14 * 86400 + 60.0  # maxWait, then the offer's start latency
    assert replay.dispatches["be"] == 1


def test_replay_requeues_in_cluster_jobs_by_the_operators_rule() -> None:
    # One rule (routing.requeue) for the operator's QueueTimeout and the replay: maxQueueTime
    # after dispatch, latency-sensitive or not.
    name, policy = load_policy(_policy_file("spill-when-cheaper"))
    w = workload(sim_job("ls", 0, 600, ls=True), sim_job("be", 5, 600))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    priced = policy.model_validate(
        {
            **policy.to_api(),
            "inCluster": {
                **policy.to_api()["inCluster"],
                "gpuPrices": [{"gpuProduct": T4, "pricePerGPUHour": "0.20"}],
            },
        }
    )
    router = PolicyRouter(name, priced, specs)
    replay = Replay(w, (Node("n0", T4, 16 * GIB, 2),), (), OWNED, within)
    for index in (0, 1):
        action = router.route(index, replay, w.jobs[index].arrival)
        assert action.kind == "queue"
        assert action.recheck_seconds == requeue_after_seconds(priced) == 3600.0


def test_command_reports_the_attainable_slo_on_a_product_constrained_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Default nodes at scale 0.01 keep one 2-GPU P100 node and no V100-32GB; no network offers
    # either product. Four latency-sensitive P100-only pods at once: two can start in time.
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    header += "creation_time,deletion_time,scheduled_time\n"
    rows = [f"p{i},1000,1024,1,1000,P100,LS,Running,{i},{3600 + i},{i}\n" for i in range(4)]
    rows.append("v,1000,1024,1,1000,V100M32,LS,Running,0,600,0\n")
    rows.append("any,1000,1024,1,1000,,BE,Running,0,600,0\n")
    trace = tmp_path / "constrained.csv"
    trace.write_text(header + "".join(rows))
    assert main(["simulate", "--jobs", str(trace), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unservable_jobs"] == 1
    assert doc["slo_attainable"] == pytest.approx(2 / 5)
    assert doc["lower_bound_status"] == "optimal at attainable SLO"
    assert Decimal(doc["lower_bound_cost_usd"]) > 0
    for r in doc["results"]:
        assert r["slo_attainment"] <= doc["slo_attainable"] + 1e-9
    assert main(["simulate", "--jobs", str(trace), "--baseline", "in-cluster-fifo"]) == 0
    table = " ".join(capsys.readouterr().out.split())  # the title may wrap
    assert "40.00% SLO attainable" in table
    assert "1 jobs unservable" in table


class RouteLog:
    """A router that records when each job was decided, around the one under test."""

    def __init__(self, inner: PolicyRouter) -> None:
        self.inner = inner
        self.name = inner.name
        self.decided: dict[str, list[float]] = {}

    @property
    def evicts(self) -> bool:
        return self.inner.evicts

    def route(self, index: int, replay: Replay, now: float) -> Action:
        self.decided.setdefault(replay.jobs[index].name, []).append(now)
        return self.inner.route(index, replay, now)


def test_the_replay_wakes_waiting_jobs_by_the_operators_queue() -> None:
    # "a" holds the only T4 for 10 h; "be" is deferred for it (Nosana is free but dear);
    # "ls" cannot wait and runs on Nosana until 3080 s. That release is at a place "be"
    # found free already: it is not decided again then (routing.admission: a release wakes
    # the jobs blocked by capacity there). Only its 6 h backstop and the T4's release do.
    w = workload(sim_job("a", 0, 36000), sim_job("be", 10, 600), sim_job("ls", 20, 3000, ls=True))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    nosana = offer("nosana", "depin", "0.90", ptype=ProviderType.NOSANA)
    _, policy = load_policy(_policy_file("wait-for-price"))
    replay = Replay(w, ONE_GPU, (nosana,), OWNED, within)
    router = RouteLog(PolicyRouter("wait-for-price", _with_t4_price(policy), specs))
    replay.run(router)
    recs = {r.job.name: r for r in replay.records}
    assert recs["ls"].backend == "External" and recs["ls"].end == 3080.0
    assert router.decided["be"] == [10.0, 21610.0, 36000.0]
    assert recs["be"].start == 36000.0
    assert not replay.queue.waiting and not replay.queue.busy


def test_a_job_waiting_for_capacity_is_decided_when_it_frees_not_at_its_retry() -> None:
    # Nosana has one GPU, held by "first" until 660 s; the cluster has none that "second"
    # may use. "second" waits for Nosana (NoCapacity) and is decided again at the release.
    network = offer("nosana", "depin", "0.50", capacity=1, ptype=ProviderType.NOSANA)
    w = workload(sim_job("first", 0, 600), sim_job("second", 7, 600))
    specs = [job_spec(j, within(j)) for j in w.jobs]
    _, policy = load_policy(_policy_file("cost-first"))
    replay = Replay(w, (), (network,), OWNED, within)
    router = RouteLog(PolicyRouter("cost-first", policy, specs))
    result = replay.run(router)
    recs = {r.job.name: r for r in replay.records}
    assert recs["first"].end == 660.0
    assert router.decided["second"][-1] == 660.0
    assert recs["second"].start == 660.0 + 60.0  # submitted at the release, then its latency
    assert result.unfinished == 0


def test_a_newcomer_starts_on_free_gpus_the_queue_head_cannot_use() -> None:
    # Three 1-GPU nodes free and a 2-GPU node taken by "a": "wide" (2 GPUs, one node) must
    # queue, but one of the three free GPUs is beyond what it takes, as the engine counts
    # (routing.offerfacts.free_to_start): "one" starts at once instead of queueing behind
    # "wide" until "a" ends.
    nodes = (*(Node(f"n{i}", T4, 16 * GIB, 1) for i in range(3)), Node("n3", T4, 16 * GIB, 2))
    w = workload(
        sim_job("a", 0, 36000, gpus=2), sim_job("wide", 10, 600, gpus=2), sim_job("one", 20, 600)
    )
    replay = Replay(w, nodes, (), OWNED, within)
    replay.run(InClusterFifo())
    recs = {r.job.name: r for r in replay.records}
    assert recs["wide"].start == 36000.0
    assert recs["one"].start == 20.0
