from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from decimal import Decimal

from hybridgpu.api.computeprovider import TrustTier
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.routing.decision import to_status
from hybridgpu.routing.engine import decide
from hybridgpu.routing.offerfacts import node_ready_seconds
from hybridgpu.routing.snapshot import PerGPUHour, PerToken, PerUnit

from .routing_fixtures import NOW, job, offer, policy, pool, snapshot

BUSY = {"allocatable": 8, "in_use": 8}


def test_free_in_cluster_gpu_wins_when_cheaper() -> None:
    d = decide(job(), policy(), snapshot((pool(),), (offer(),)))
    assert d.outcome == "Routed"
    assert d.target is not None
    assert d.target.name == "in-cluster/NVIDIA-A10"
    assert d.target.estimated_cost == Decimal("1.00")
    assert d.reason == "CheapestFeasible"
    assert "in-cluster/NVIDIA-A10" in d.message


def test_cheaper_external_offer_is_held_back_below_spillover() -> None:
    cheap = offer(pricing=PerGPUHour(Decimal("0.20")))
    d = decide(job(), policy(), snapshot((pool(in_use=2),), (cheap,)))
    assert d.target is not None
    assert d.target.backend == "InCluster"
    rejected = {c.name: c.reason for c in d.candidates if not c.feasible}
    assert rejected == {"akash/NVIDIA-A100-SXM4-80GB": "BelowSpilloverThreshold"}


def test_spills_over_when_the_cluster_is_busy_and_start_within_is_tight() -> None:
    d = decide(
        job(startWithin="5m"),
        policy(),
        snapshot((pool(**BUSY),), (offer(),)),
    )
    assert d.outcome == "Routed"
    assert d.target is not None
    assert d.target.provider == "akash"
    in_cluster = next(c for c in d.candidates if c.backend == "InCluster")
    # No release times known: the engine assumes the queue takes maxQueueTime (5m default).
    assert in_cluster.expected_start_seconds == 300.0


def test_queue_estimate_uses_release_times() -> None:
    busy = pool(**BUSY, release_seconds=(100.0, 200.0, 300.0))
    d = decide(job(gpu={"count": 2}), policy(), snapshot((busy,)))
    assert d.target is not None
    assert d.target.expected_start_seconds == 200.0


def test_queue_estimate_waits_for_one_node_to_have_the_gpus() -> None:
    # Three GPUs come back at 100, 200 and 250 s, but on different nodes; one node has two only
    # at 300 s. A 1-GPU job still starts at the first release.
    releases = (100.0, 200.0, 250.0)
    busy = pool(**BUSY, release_seconds=releases, node_ready_seconds=(100.0, 300.0, math.inf))
    d = decide(job(gpu={"count": 2}), policy(), snapshot((busy,)))
    assert d.target is not None
    assert d.target.expected_start_seconds == 300.0
    one = decide(job(), policy(), snapshot((busy,)))
    assert one.target is not None and one.target.expected_start_seconds == 100.0
    # No node is known to get three back: as beyond the known releases, maxQueueTime (5m).
    three = decide(job(gpu={"count": 3}), policy(), snapshot((busy,)))
    assert three.target is not None and three.target.expected_start_seconds == 300.0
    longer = dataclasses.replace(busy, node_ready_seconds=(100.0, 450.0, math.inf))
    d = decide(job(gpu={"count": 2}), policy(), snapshot((longer,)))
    # Past maxQueueTime on one node although the pool has two GPUs back at 200 s.
    assert (d.outcome, d.reason) == ("Wait", "QueueTooLong")
    assert d.candidates[0].expected_start_seconds == 450.0


def test_node_ready_seconds_finds_the_first_node_with_enough_gpus() -> None:
    nodes = [(1, [3000.0, 3000.0]), (2, [600.0]), (0, [])]
    assert node_ready_seconds(nodes, 4) == (0.0, 0.0, 600.0, math.inf)
    assert node_ready_seconds([(0, [50.0, 70.0])], 2) == (50.0, 70.0)
    assert node_ready_seconds([], 2) == (math.inf, math.inf)
    # On a clock: seconds after ``now``, an overdue release counted as due now.
    assert node_ready_seconds([(0, [90.0, 170.0])], 2, now=100.0) == (0.0, 70.0)
    assert node_ready_seconds([(1, [500.0]), (2, [])], 2, now=100.0) == (0.0, 0.0)


def test_wait_when_only_in_cluster_and_queue_too_long() -> None:
    busy = pool(**BUSY, release_seconds=(900.0,))
    d = decide(job(placement="InCluster"), policy(), snapshot((busy,), (offer(),)))
    assert d.outcome == "Wait"
    assert d.reason == "QueueTooLong"
    assert d.retry_after_seconds == 600.0
    assert all(not c.feasible for c in d.candidates)


def test_rejected_in_a_fixed_world_when_in_cluster_only_and_no_such_product() -> None:
    d = decide(
        job(placement="InCluster", gpu={"products": ["NVIDIA-H100-80GB-HBM3"]}),
        policy(),
        snapshot((pool(),), (offer(product="NVIDIA-H100-80GB-HBM3"),), inventory_final=True),
    )
    assert d.outcome == "Rejected"
    assert d.target is None
    reasons = {c.name: c.reason for c in d.candidates}
    assert reasons["in-cluster/NVIDIA-A10"] == "ProductNotAllowed"
    assert reasons["akash/NVIDIA-H100-80GB-HBM3"] == "PlacementInCluster"


def test_a_live_cluster_waits_for_matching_gpus_instead_of_rejecting() -> None:
    d = decide(
        job(placement="InCluster", gpu={"products": ["NVIDIA-H100-80GB-HBM3"]}),
        policy(),
        snapshot((pool(),), (offer(product="NVIDIA-H100-80GB-HBM3"),)),
    )
    assert d.outcome == "Wait"
    assert d.reason == "NoMatchingCapacity"
    assert d.retry_after_seconds is not None and d.retry_after_seconds > 0
    assert {c.name: c.reason for c in d.candidates}["in-cluster/NVIDIA-A10"] == "ProductNotAllowed"


def test_rejected_even_live_when_placement_and_policy_leave_no_route() -> None:
    d = decide(
        job(placement="InCluster"),
        policy(inCluster={"enabled": False}),
        snapshot((pool(),), (offer(),)),
    )
    assert d.outcome == "Rejected"


def test_price_cap_rejects_expensive_offers_and_waits() -> None:
    d = decide(
        job(placement="External", maxPricePerGPUHour="1.00"),
        policy(),
        snapshot((), (offer(pricing=PerGPUHour(Decimal("1.01"))),)),
    )
    assert d.outcome == "Wait"
    assert d.reason == "PriceCapExceeded"
    assert d.retry_after_seconds is not None


def test_max_cost_applies_to_the_whole_job() -> None:
    d = decide(
        job(placement="External", maxCost="2.00", estimatedDuration="2h"),
        policy(),
        snapshot((), (offer(pricing=PerGPUHour(Decimal("1.50"))),)),
    )
    assert d.candidates[0].reason == "MaxCostExceeded"
    assert d.candidates[0].estimated_cost == Decimal("3.00")


def test_budget_reject_rejects_jobs_that_need_external() -> None:
    pol = policy(budget={"limit": "10", "whenExceeded": "Reject"})
    d = decide(
        job(placement="External"), pol, snapshot((), (offer(),), budget_spent=Decimal("9.00"))
    )
    assert d.outcome == "Rejected"
    assert d.reason == "BudgetExceeded"


def test_budget_in_cluster_only_waits() -> None:
    pol = policy(budget={"limit": "10"})
    d = decide(
        job(placement="External"), pol, snapshot((), (offer(),), budget_spent=Decimal("9.00"))
    )
    assert d.outcome == "Wait"
    assert d.reason == "BudgetExceeded"


def test_trust_region_paused_and_circuit_filters_name_their_reason() -> None:
    pol = policy(external={"minTrustTier": "verified"})
    offers = (
        offer("community", trust_tier=TrustTier.COMMUNITY),
        offer("elsewhere", region="ap"),
        offer("paused", paused=True),
        offer("broken", circuit_open=True),
        offer("full", available=0),
        offer("good"),
    )
    d = decide(job(placement="External", regions=["us"]), pol, snapshot((), offers))
    reasons = {c.provider: c.reason for c in d.candidates}
    assert reasons == {
        "community": "TrustTierTooLow",
        "elsewhere": "RegionNotAllowed",
        "paused": "ProviderPaused",
        "broken": "CircuitOpen",
        "full": "NoCapacity",
        "good": "Feasible",
    }
    assert d.target is not None
    assert d.target.provider == "good"
    assert d.candidates[0].provider == "good"


def test_excluded_candidates_are_not_retried() -> None:
    offers = (offer("a", pricing=PerGPUHour(Decimal(1))), offer("b"))
    d = decide(
        job(placement="External"),
        policy(),
        snapshot((), offers),
        excluded=frozenset({"a/NVIDIA-A100-SXM4-80GB"}),
    )
    assert d.target is not None
    assert d.target.provider == "b"


def test_per_token_offer_competes_on_normalised_price() -> None:
    tokens = offer(
        "ionet",
        product="NVIDIA-H100-80GB-HBM3",
        pricing=PerToken(Decimal("0.10"), Decimal("0.40")),
    )
    d = decide(job(placement="External"), policy(), snapshot((), (tokens, offer())))
    assert d.target is not None
    assert d.target.provider == "ionet"
    # 50k prompt + 10k generated tokens: 0.005 + 0.004 USD for one GPU-hour of work.
    assert d.target.estimated_cost == Decimal("0.009")
    assert d.target.price_per_gpu_hour == Decimal("0.009")


def test_livepeer_pixels_only_for_image_tasks() -> None:
    livepeer = offer(
        "livepeer",
        pricing=PerUnit(Decimal("0.000000002"), "pixel"),
        tasks=frozenset({"text-to-image"}),
    )
    d = decide(job(placement="External"), policy(), snapshot((), (livepeer,)))
    assert d.candidates[0].reason == "TaskNotSupported"
    img = job(task="text-to-image", model="sdxl", placement="External")
    d2 = decide(img, policy(), snapshot((), (livepeer,)))
    assert d2.outcome == "Routed"


def test_start_within_is_relaxed_only_when_no_one_can_meet_it() -> None:
    slow = offer("slow", start_latency_seconds=600.0)
    fast = offer("fast", start_latency_seconds=30.0, pricing=PerGPUHour(Decimal(9)))
    d = decide(job(placement="External", startWithin="2m"), policy(), snapshot((), (slow, fast)))
    assert d.target is not None
    assert d.target.provider == "fast"
    assert {c.provider: c.reason for c in d.candidates}["slow"] == "MissesStartWithin"
    late = decide(job(placement="External", startWithin="2m"), policy(), snapshot((), (slow,)))
    assert late.outcome == "Routed"
    assert late.reason == "StartWithinUnattainable"


def test_deadline_counts_from_creation() -> None:
    created = NOW - timedelta(minutes=4)
    fast = offer(start_latency_seconds=90.0)
    d = decide(
        job(placement="External", startWithin="5m"),
        policy(),
        snapshot((), (fast,)),
        created_at=created,
    )
    assert d.reason == "StartWithinUnattainable"


def test_no_candidates_waits_for_offers() -> None:
    d = decide(job(), policy(), snapshot())
    assert d.outcome == "Wait"
    assert d.reason == "NoCandidates"


def test_same_inputs_same_decision() -> None:
    offers = tuple(offer(f"p{i}", pricing=PerGPUHour(Decimal("1.50"))) for i in range(5))
    first = decide(job(placement="External"), policy(), snapshot((), offers))
    second = decide(job(placement="External"), policy(), snapshot((), tuple(reversed(offers))))
    assert [c.name for c in first.candidates] == [c.name for c in second.candidates]
    assert first.target == second.target


def test_to_status_caps_candidates_and_keeps_money_as_strings() -> None:
    offers = tuple(offer(f"p{i:02d}") for i in range(30))
    d = decide(job(placement="External"), policy(), snapshot((), offers))
    status = to_status(d, "default", NOW)
    assert len(status.candidates) == 20
    assert status.target == d.target.name if d.target else False
    wire = status.to_api()
    assert wire["candidates"][0]["estimatedCost"] == "1.5"
    assert wire["outcome"] == "Routed"


def test_a_job_bigger_than_any_node_is_rejected_in_cluster() -> None:
    small_nodes = pool(allocatable=16, in_use=0, max_gpus_per_node=4)
    fixed = snapshot((small_nodes,), inventory_final=True)
    d = decide(job(placement="InCluster", gpu={"count": 8}), policy(), fixed)
    assert d.outcome == "Rejected"
    assert d.reason == "TooFewGPUs"


# -- deferral: jobs without a startWithin wait for a cheap place ---------------------------------

QUEUED = {"allocatable": 8, "in_use": 8, "release_seconds": (7200.0,)}


def _deferring(**deferral: object) -> RoutingPolicySpec:
    return policy(
        deferral=deferral,
        inCluster={
            "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}],
            "spilloverUtilization": 1,
        },
    )


def test_a_job_without_start_within_waits_for_the_cheap_busy_pool() -> None:
    d = decide(
        job(),
        _deferring(maxPremiumPercent=25),
        snapshot((pool(**QUEUED),), (offer(),)),
        created_at=NOW,
    )
    assert d.outcome == "Wait"
    assert d.reason == "DeferredForPrice"
    assert d.awaiting == ("in-cluster/NVIDIA-A10",)
    assert d.retry_after_seconds == 21600.0
    reasons = {c.name: c.reason for c in d.candidates}
    assert reasons == {
        "in-cluster/NVIDIA-A10": "QueueTooLong",
        "akash/NVIDIA-A100-SXM4-80GB": "DeferredForPrice",
    }
    assert "in-cluster/NVIDIA-A10" in d.message and "25%" in d.message


def test_a_place_within_the_premium_is_taken_at_once() -> None:
    d = decide(job(), _deferring(maxPremiumPercent=50), snapshot((pool(**QUEUED),), (offer(),)))
    assert d.outcome == "Routed"
    assert d.target is not None and d.target.provider == "akash"


def test_deferral_ends_after_max_wait() -> None:
    created = NOW - timedelta(days=15)
    d = decide(
        job(),
        _deferring(maxWait="336h"),
        snapshot((pool(**QUEUED),), (offer(),)),
        created_at=created,
    )
    assert d.outcome == "Routed"
    assert d.target is not None and d.target.provider == "akash"


def test_the_retry_does_not_outlast_the_patience_left() -> None:
    created = NOW - timedelta(hours=335)
    d = decide(
        job(),
        _deferring(maxWait="336h"),
        snapshot((pool(**QUEUED),), (offer(),)),
        created_at=created,
    )
    assert d.reason == "DeferredForPrice"
    assert d.retry_after_seconds == 3600.0


def test_a_job_with_start_within_is_never_deferred() -> None:
    d = decide(job(startWithin="10m"), _deferring(), snapshot((pool(**QUEUED),), (offer(),)))
    assert d.outcome == "Routed"
    assert d.target is not None and d.target.provider == "akash"


def test_an_offer_out_of_capacity_is_waited_for_too() -> None:
    cheap_full = offer("nosana", pricing=PerGPUHour(Decimal("0.50")), available=0)
    d = decide(job(), _deferring(), snapshot((pool(**QUEUED),), (cheap_full, offer())))
    assert d.reason == "DeferredForPrice"
    assert d.awaiting == ("nosana/NVIDIA-A100-SXM4-80GB",)


def test_with_nothing_free_the_job_waits_as_without_deferral() -> None:
    full = offer(available=0)
    with_deferral = decide(job(), _deferring(), snapshot((pool(**QUEUED),), (full,)))
    without = decide(job(), policy(), snapshot((pool(**QUEUED),), (full,)))
    assert with_deferral.reason == without.reason == "QueueTooLong"
    assert with_deferral.retry_after_seconds == without.retry_after_seconds
    assert with_deferral.awaiting == ()


def test_an_offer_that_cannot_give_one_job_enough_gpus_is_never_chosen() -> None:
    one_gpu = offer("nosana", pricing=PerGPUHour(Decimal("0.20")), max_gpus_per_job=1)
    bigger = offer("akash", pricing=PerGPUHour(Decimal("1.50")), max_gpus_per_job=8)
    d = decide(job(gpu={"count": 4}), policy(), snapshot((), (one_gpu, bigger)))
    assert d.target is not None and d.target.name == "akash/NVIDIA-A100-SXM4-80GB"
    (nosana,) = [c for c in d.candidates if c.provider == "nosana"]
    assert nosana.reason == "TooFewGPUs" and not nosana.feasible
    # Alone it leaves nothing to wait for: no capacity change lifts a per-job limit.
    alone = decide(job(gpu={"count": 4}), policy(), snapshot((), (one_gpu,), inventory_final=True))
    assert alone.outcome == "Rejected"
    assert decide(job(), policy(), snapshot((), (one_gpu,))).target is not None
