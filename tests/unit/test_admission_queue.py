"""The admission queue the operator's loop and the replay share (``routing.admission``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hybridgpu.controller.admission import World
from hybridgpu.controller.claims import Holdings
from hybridgpu.controller.wakeup import Wakeup
from hybridgpu.routing.admission import (
    AdmissionQueue,
    Waiting,
    dearer_places,
    evicted_recheck_seconds,
    evicted_would_queue,
    order_key,
    queue_order,
    told_to_wait,
    wake_places,
)
from hybridgpu.routing.decision import BackendName, RoutingDecision, ScoredCandidate
from hybridgpu.routing.preemption import Eviction

from .admission_stub import bare_admission
from .routing_fixtures import offer, pool

A100 = "in-cluster/A100"
AKASH = "akash/RTX-4090"


def candidate(name: str, reason: str, backend: BackendName = "External") -> ScoredCandidate:
    provider, _, product = name.partition("/")
    return ScoredCandidate(
        name, backend, provider, product, Decimal(1), Decimal(1), 0.0, None, False, reason
    )


def test_a_release_wakes_only_jobs_waiting_for_that_place_and_only_those_that_fit() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.decided("big", Waiting(8, frozenset({A100})))
    q.decided("small", Waiting(1, frozenset({A100})))
    q.decided("elsewhere", Waiting(1, frozenset({AKASH})))
    assert q.released({A100})
    # Two GPUs free: "small" is decided, "big" waits on (not decided, still waiting).
    free = {A100: 2}
    assert q.take(free.get) == {"small"}
    assert set(q.waiting) == {"big", "small", "elsewhere"}
    assert not q.busy
    # A later release with room for "big": now it goes, and takes all of it; "small" fits
    # what was free but it is promised: it is looked at again in the next cycle.
    q.released({A100})
    assert q.take({A100: 8}.get) == {"big"}
    assert q.woken == {"small"} and q.busy
    assert q.take({A100: 0}.get) == set()  # "big" took the GPUs: "small" waits on
    assert not q.busy


def test_a_release_decides_the_oldest_jobs_the_freed_gpus_can_hold() -> None:
    q: AdmissionQueue[int] = AdmissionQueue()
    for index, queued in ((1, 30.0), (2, 10.0), (3, 20.0), (4, 40.0)):
        q.decided(index, Waiting(1, frozenset({A100}), order=queue_order(0, False, queued)))
    q.released({A100})
    assert q.take({A100: 2}.get) == {2, 3}  # the two queued longest
    assert q.woken == {1, 4}
    assert q.take({A100: 1}.get) == {1}  # one of the two went elsewhere: the next one
    assert q.woken == {4}


def test_a_bare_provider_release_wakes_every_product_of_it_and_none_wakes_all() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.decided("a", Waiting(1, frozenset({AKASH})))
    q.decided("b", Waiting(1, frozenset({A100})))
    q.released({"akash"})
    assert q.take(lambda _p: None) == {"a"}  # unknown capacity counts as enough
    q.released(None)
    assert q.take(lambda _p: 0) == set()  # woken, but nothing fits
    q.released(None)
    assert q.take(lambda _p: None) == {"a", "b"}


def test_a_job_naming_no_place_is_woken_by_any_release() -> None:
    q: AdmissionQueue[int] = AdmissionQueue()
    q.decided(1, Waiting(4))
    q.released({AKASH})
    assert q.take(lambda _p: 0) == {1}


def test_a_price_drop_wakes_jobs_that_found_the_place_too_dear_but_a_release_does_not() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.decided("deferred", Waiting(1, frozenset({A100}), dearer=frozenset({AKASH})))
    assert not q.released({AKASH})  # it was free already: more free GPUs change nothing
    assert q.take(lambda _p: None) == set()
    assert q.repriced({AKASH})
    assert q.take(lambda _p: 0) == {"deferred"}  # decided whatever is free


def test_a_preemptible_start_wakes_only_jobs_that_may_still_evict() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.decided("in-time", Waiting(1, frozenset({A100}), evict_until=1000.0))
    q.decided("late", Waiting(1, frozenset({A100}), evict_until=500.0))
    q.decided("never", Waiting(1, frozenset({A100})))
    assert q.evictable(600.0)
    assert q.take(lambda _p: 0) == {"in-time"}
    assert not q.evictable(1000.0)


def test_a_decision_to_start_ends_the_wait_and_forget_drops_a_job_everywhere() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.decided("a", Waiting(1, frozenset({A100})))
    q.decided("a", None)
    assert not q.released({A100})
    q.decided("b", Waiting(1))
    q.request("b")
    q.nominate("b")
    q.forget("b")
    assert (q.waiting, q.requested, q.nominated) == ({}, set(), set())


def test_nominated_jobs_join_every_cycle_until_a_cycle_no_longer_nominates_them() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.nominate("evictor")
    assert q.cycle_keys({"new"}) == {"new", "evictor"}
    assert q.cycle_keys(set()) == set()  # not nominated again by the cycle above


def test_cycle_order_is_priority_then_evictors_then_queue_time_then_tie() -> None:
    jobs = [
        ("old-low", 0, False, 10.0),
        ("new-high", 5, False, 90.0),
        ("evictor", 0, True, 80.0),
        ("old", 0, False, 20.0),
        ("same-time", 0, False, 20.0),
    ]
    ordered = sorted(jobs, key=lambda j: order_key(j[1], j[2], j[3], j[0]))
    assert [j[0] for j in ordered] == ["new-high", "evictor", "old-low", "old", "same-time"]


def test_what_a_wait_wakes_on_depends_on_why_it_waits() -> None:
    capacity = RoutingDecision(
        "Wait",
        None,
        (
            candidate(A100, "QueueTooLong", "InCluster"),
            candidate(AKASH, "NoCapacity"),
            candidate("vast/A10", "ProductNotAllowed"),
        ),
        "QueueTooLong",
        "waiting",
        60.0,
    )
    assert wake_places(capacity) == {A100, AKASH}
    assert dearer_places(capacity) == frozenset()
    deferred = RoutingDecision(
        "Wait",
        None,
        (
            candidate(A100, "QueueTooLong", "InCluster"),
            candidate(AKASH, "DeferredForPrice"),
            candidate("in-cluster/T4", "DeferredForPrice", "InCluster"),
        ),
        "DeferredForPrice",
        "deferred for price",
        60.0,
        (A100,),
    )
    assert wake_places(deferred) == {A100}
    assert dearer_places(deferred) == {AKASH}  # in-cluster prices change only with the policy


async def test_the_operator_wakes_its_waiting_jobs_through_the_same_queue() -> None:
    """The Wakeup's notifications reach the admission loop's queue: a release wakes the jobs
    blocked there, a provider refresh (which may lower prices) also those deferred by price."""
    admission = bare_admission()
    wakeup = Wakeup()
    wakeup.listeners.append(admission.wake)
    admission.queue.decided("deferred", Waiting(1, frozenset({A100}), dearer=frozenset({AKASH})))
    admission.queue.decided("blocked", Waiting(1, frozenset({AKASH})))
    wakeup.notify("akash")  # an attempt there ended
    assert admission.queue.woken == {"blocked"} and not admission.queue.requested
    wakeup.notify(AKASH, repriced=True)  # a refresh
    assert admission.queue.requested == {"deferred"}
    assert admission.queue.take(lambda _p: None) == {"deferred", "blocked"}


def test_an_evicted_job_waits_for_a_free_gpu_rather_than_queue_behind_its_evictor() -> None:
    busy = candidate(A100, "Feasible", "InCluster")._replace(expected_start_seconds=3600.0)
    free = busy._replace(expected_start_seconds=0.0)
    assert evicted_would_queue(True, busy)
    assert not evicted_would_queue(False, busy)  # never evicted: it queues as any job
    assert not evicted_would_queue(True, free)  # a GPU is free now: it takes it
    assert not evicted_would_queue(True, candidate(AKASH, "Feasible"))  # networks have no queue
    # Woken by a release there; unwoken, it looks again when the engine expects the GPU.
    assert evicted_recheck_seconds(busy) == 3600.0
    assert evicted_recheck_seconds(busy._replace(expected_start_seconds=5.0)) == 30.0
    routed = RoutingDecision("Routed", busy, (busy,), "CheapestFeasible", "routed", None)
    assert wake_places(routed) == {A100}


def test_the_operator_counts_free_gpus_at_a_place_as_the_engine_does() -> None:
    world = World(
        now=datetime(2026, 12, 3, tzinfo=UTC),
        pools=(
            # 3 free on one node, 2 wanted by Pods already queued: 1 for a newcomer.
            pool("A100", allocatable=8, in_use=5, queued=2, max_free_per_node=3),
        ),
        offers=(
            offer("akash", product="RTX-4090", available=4),
            offer("vast", product="RTX-4090", available=6, active_jobs=2, max_concurrent_jobs=2),
        ),
        holdings=Holdings(),
        period_start=lambda _key, _policy: datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert world.free_gpus(A100) == 1
    assert world.free_gpus(AKASH) == 4
    assert world.free_gpus("vast/RTX-4090") == 0  # no slot left on that network
    assert world.free_gpus("in-cluster/T4") is None  # not a pool here: unknown
    assert world.free_gpus("akash") is None  # a whole provider names no product


def test_an_eviction_names_the_place_it_frees() -> None:
    assert Eviction("A100", "n1", ("v",), 0.0).place == A100
    assert Eviction("RTX-4090", "", ("v",), 0.0, provider="akash").place == AKASH


def test_a_job_told_to_wait_may_evict_only_while_its_start_within_lasts_from_its_queueing() -> None:
    w = told_to_wait(2, 1000.0, start_within=300.0, evicts=True, places=frozenset({A100}))
    assert (w.gpus, w.places, w.evict_until) == (2, frozenset({A100}), 1300.0)
    queue: AdmissionQueue[str] = AdmissionQueue()
    queue.decided("late", w)
    assert not queue.evictable(1300.0)
    assert queue.evictable(1299.0) and queue.requested == {"late"}
    # A policy that evicts nothing, or a job without a startWithin: never woken for it.
    assert told_to_wait(1, 1000.0, start_within=300.0, evicts=False).evict_until is None
    assert told_to_wait(1, 1000.0, start_within=None, evicts=True).evict_until is None
    # Its place in the queue: priority first, then evictors, then the longest queued.
    first = told_to_wait(1, 2000.0, start_within=None, evicts=False, priority=5)
    evictor = told_to_wait(1, 3000.0, start_within=None, evicts=False, evicting=True)
    assert sorted([w.order, evictor.order, first.order]) == [first.order, evictor.order, w.order]
