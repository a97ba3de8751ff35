"""The pure eviction rule shared by the admission loop and the simulator."""

from __future__ import annotations

import random
from decimal import Decimal

from hybridgpu.routing.decision import BackendName, ScoredCandidate
from hybridgpu.routing.preemption import (
    Eviction,
    Place,
    Running,
    choose_victims,
    plan_eviction,
    rank,
    worth_preempting,
)

LOW = rank(0, latency_sensitive=False)
HIGH = rank(0, latency_sensitive=True)


def r(uid: str, gpus: int, ran: float, *, node: str = "n1", job_rank: int = LOW) -> Running:
    return Running(uid, "A100", node, gpus, job_rank, ran)


def test_rank_orders_priority_before_latency_sensitivity() -> None:
    assert rank(0, True) > rank(0, False)
    assert rank(1, False) > rank(0, True)


def test_most_recently_started_is_evicted_first() -> None:
    eviction = choose_victims(
        gpus=1,
        job_rank=HIGH,
        products=None,
        places=[Place("A100", "n1", 0)],
        running=[r("old", 1, 7200), r("new", 1, 60)],
    )
    assert eviction is not None
    assert eviction.victims == ("new",)
    assert eviction.lost_gpu_seconds == 60


def test_equal_or_higher_rank_is_never_evicted() -> None:
    running = [r("peer", 2, 10, job_rank=HIGH), r("boss", 2, 10, job_rank=HIGH + 1)]
    assert (
        choose_victims(
            gpus=1, job_rank=HIGH, products=None, places=[Place("A100", "n1", 0)], running=running
        )
        is None
    )


def test_gpus_must_be_freed_on_one_node() -> None:
    running = [r("a", 1, 10, node="n1"), r("b", 1, 10, node="n2")]
    places = [Place("A100", "n1", 0), Place("A100", "n2", 0)]
    assert (
        choose_victims(gpus=2, job_rank=HIGH, products=None, places=places, running=running) is None
    )
    places = [Place("A100", "n1", 1), Place("A100", "n2", 0)]
    eviction = choose_victims(gpus=2, job_rank=HIGH, products=None, places=places, running=running)
    assert eviction is not None and (eviction.node, eviction.victims) == ("n1", ("a",))


def test_products_outside_the_job_are_left_alone() -> None:
    eviction = choose_victims(
        gpus=1,
        job_rank=HIGH,
        products=["H100"],
        places=[Place("A100", "n1", 0)],
        running=[r("a", 1, 10)],
    )
    assert eviction is None


def test_second_pass_drops_victims_not_needed() -> None:
    # Taken in order: 1-GPU (newest) then 4-GPU; the 4 alone suffices for 3 short.
    running = [r("small", 1, 5), r("big", 4, 50)]
    eviction = choose_victims(
        gpus=3, job_rank=HIGH, products=None, places=[Place("A100", "n1", 0)], running=running
    )
    assert eviction is not None and eviction.victims == ("big",)


def test_checkpoint_interval_bounds_the_lost_work() -> None:
    eviction = choose_victims(
        gpus=2,
        job_rank=HIGH,
        products=None,
        places=[Place("A100", "n1", 0)],
        running=[r("a", 2, 7200)],
        checkpoint_seconds=900,
    )
    assert eviction is not None and eviction.lost_gpu_seconds == 1800


def test_place_with_room_needs_no_eviction() -> None:
    eviction = choose_victims(
        gpus=1,
        job_rank=HIGH,
        products=None,
        places=[Place("A100", "n1", 1)],
        running=[r("a", 1, 1)],
    )
    assert eviction is None


def test_worth_preempting_weighs_lost_work_against_the_on_time_price() -> None:
    def worth(on_time: str | None, lost: float) -> bool:
        return worth_preempting(
            on_time_cost=None if on_time is None else Decimal(on_time),
            place_price_per_gpu_hour=Decimal("1.00"),
            gpus=1,
            runs_for_seconds=3600.0,
            lost_gpu_seconds=lost,
        )

    assert worth(None, 1e9)  # nothing on time: always
    assert worth("1.51", 1800)  # one hour plus half an hour lost, at $1/GPU-h
    assert not worth("1.49", 1800)


def test_random_evictions_are_sufficient_lower_ranked_and_minimal() -> None:
    rng = random.Random(15)
    for _ in range(500):
        nodes = [f"n{i}" for i in range(rng.randint(1, 3))]
        running = [
            Running(
                f"j{i}",
                "A100",
                rng.choice(nodes),
                rng.randint(1, 4),
                rng.randint(0, 3),
                rng.uniform(0, 1e4),
            )
            for i in range(rng.randint(0, 8))
        ]
        places = [Place("A100", n, rng.randint(0, 2)) for n in nodes]
        need, job_rank = rng.randint(1, 8), rng.randint(0, 3)
        eviction = choose_victims(
            gpus=need, job_rank=job_rank, products=None, places=places, running=running
        )
        by_uid = {v.uid: v for v in running}
        free = {p.node: p.free for p in places}
        if eviction is None:
            for n in nodes:  # no node could have been freed enough by lower-ranked work
                lower = sum(v.gpus for v in running if v.node == n and v.rank < job_rank)
                assert free[n] >= need or free[n] + lower < need
            continue
        victims = [by_uid[u] for u in eviction.victims]
        assert all(v.rank < job_rank and v.node == eviction.node for v in victims)
        freed = sum(v.gpus for v in victims)
        assert free[eviction.node] + freed >= need
        assert all(free[eviction.node] + freed - v.gpus < need for v in victims)


def candidate(backend: BackendName, start: float, cost: str) -> ScoredCandidate:
    provider = "in-cluster" if backend == "InCluster" else "nosana"
    return ScoredCandidate(
        f"{provider}/A100",
        backend,
        provider,
        "A100",
        Decimal("1"),
        Decimal(cost),
        start,
        1.0,
        True,
        "Feasible",
    )


def plan(target: ScoredCandidate | None, deadline: float | None) -> Eviction | None:
    return plan_eviction(
        target=target,
        deadline_seconds=deadline,
        gpus=1,
        runs_for_seconds=3600,
        job_rank=HIGH,
        products=None,
        prices={"A100": Decimal("1.00")},
        places=[Place("A100", "n1", 0)],
        running=[r("be", 1, 600)],
        checkpoint_seconds=900,
    )


def test_plan_eviction_only_for_latency_sensitive_jobs_not_served_in_time_in_cluster() -> None:
    assert plan(None, None) is None  # best-effort work never evicts
    assert plan(candidate("InCluster", 10, "1.00"), 300) is None  # starts in time here
    late = plan(candidate("InCluster", 7200, "1.00"), 300)
    assert late is not None and late.victims == ("be",)
    assert plan(None, 300) is not None  # told to wait
    # On time elsewhere: only when the freed place, with the lost work, is cheaper.
    assert plan(candidate("External", 60, "1.20"), 300) is not None  # 1h + 10min at $1 < $1.20
    assert plan(candidate("External", 60, "1.10"), 300) is None


def test_work_ending_before_the_deadline_is_spared() -> None:
    # "soon" is the newest (least work lost) but ends in 100 s anyway: its GPU frees in time
    # for whoever is queued for it, so evicting it would only lose its work; "long" goes.
    def victims(running: list[Running], spare: float | None) -> tuple[str, ...] | None:
        eviction = choose_victims(
            gpus=1,
            job_rank=HIGH,
            products=None,
            places=[Place("A100", "n1", 0)],
            running=running,
            spare_ending_within=spare,
        )
        return None if eviction is None else eviction.victims

    both = [
        Running("long", "A100", "n1", 1, LOW, 3000, ends_in_seconds=9000),
        Running("soon", "A100", "n1", 1, LOW, 60, ends_in_seconds=100),
    ]
    assert victims(both, None) == ("soon",)
    assert victims(both, 300) == ("long",)
    assert victims(both[1:], 300) is None
    assert victims([Running("soon", "A100", "n1", 1, LOW, 60)], 300) == ("soon",)  # end unknown


def test_plan_eviction_spares_work_ending_within_the_deadline() -> None:
    def evict(ends_in: float, deadline: float) -> Eviction | None:
        return plan_eviction(
            target=None,
            deadline_seconds=deadline,
            gpus=1,
            runs_for_seconds=3600,
            job_rank=HIGH,
            products=None,
            prices={"A100": Decimal("1.00")},
            places=[Place("A100", "n1", 0)],
            running=[Running("be", "A100", "n1", 1, LOW, 600, ends_in_seconds=ends_in)],
            checkpoint_seconds=900,
        )

    assert evict(ends_in=200, deadline=300) is None
    assert evict(ends_in=400, deadline=300) is not None
    assert evict(ends_in=200, deadline=-50) is None  # already late: see the test below


def test_a_job_past_its_deadline_evicts_nothing() -> None:
    """Once no eviction can start a job in time, evicting for it loses work and buys no SLO
    (on gpuspec33 it made later arrivals late too); it takes what frees up like any job."""

    def evict(deadline: float) -> Eviction | None:
        return plan_eviction(
            target=None,
            deadline_seconds=deadline,
            gpus=1,
            runs_for_seconds=3600,
            job_rank=HIGH,
            products=None,
            prices={"A100": Decimal("1.00")},
            places=[Place("A100", "n1", 0)],
            running=[Running("be", "A100", "n1", 1, LOW, 600, ends_in_seconds=9000)],
            checkpoint_seconds=900,
        )

    assert evict(1.0) is not None
    assert evict(0.0) is None
    assert evict(-3600.0) is None
