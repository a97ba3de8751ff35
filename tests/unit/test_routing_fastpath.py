"""The engine's speed-ups keep its answers: cached offer tables, lazy ranking, exact limits;
and the spillover threshold counts the job's own GPUs."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from hybridgpu.routing.decision import STATUS_CANDIDATE_LIMIT, to_status
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import PerGPUHour, PerToken, PerUnit

from .routing_fixtures import NOW, job, offer, policy, pool, snapshot


def _many_offers(n: int) -> tuple:  # type: ignore[type-arg]
    return tuple(
        offer(f"net{i}", "NVIDIA-A100-SXM4-80GB", PerGPUHour(Decimal("1.00") + Decimal(i) / 100))
        for i in range(n)
    )


def test_offer_table_is_built_once_and_not_part_of_the_snapshot_value() -> None:
    snap = snapshot((pool(),), _many_offers(3))
    assert snap.offer_facts is None
    first = decide(job(), policy(), snap)
    table = snap.offer_facts
    assert table is not None
    assert len(table) == 3
    second = decide(job(), policy(), snap)
    assert snap.offer_facts is table
    assert first == second
    assert snap == snapshot((pool(),), _many_offers(3))
    # A changed copy must not inherit the table of the original.
    cheaper = dataclasses.replace(snap, offers=_many_offers(1))
    assert cheaper.offer_facts is None


def test_an_offer_shared_by_snapshots_keeps_its_row_and_a_changed_one_gets_its_own() -> None:
    """The offer rows are memoised by the offer object (the replay hands the engine the same
    object while its capacity is unchanged): a new object, even an equal one at a reused id,
    is read afresh."""
    shared = offer("net", available=4)
    first = snapshot((pool(),), (shared,))
    second = snapshot((pool(),), (shared,))
    assert decide(job(), policy(), first) == decide(job(), policy(), second)
    assert first.offer_facts is not None and second.offer_facts is not None
    assert first.offer_facts[0] is second.offer_facts[0]
    full = dataclasses.replace(shared, available=0)
    decision = decide(job(), policy(), snapshot((pool(),), (full,)))
    by_name = {c.name: c for c in decision.candidates}
    assert by_name["net/NVIDIA-A100-SXM4-80GB"].reason == "NoCapacity"
    again = decide(job(), policy(), snapshot((pool(),), (shared,)))
    assert {c.name: c for c in again.candidates}["net/NVIDIA-A100-SXM4-80GB"].reason != "NoCapacity"


def test_ranking_on_demand_matches_the_full_list() -> None:
    snap = snapshot((pool(in_use=8),), _many_offers(30))
    d = decide(job(), policy(), snap)
    top = d.top(5)
    assert len(top) == 5
    assert top == d.candidates[:5]
    assert d.candidates[0] == d.target
    assert len(d.candidates) == 31
    scores = [c.score for c in d.candidates if c.score is not None]
    assert len(scores) == 31
    assert scores == sorted(scores, reverse=True)
    status = to_status(d, "p", NOW)
    assert [c.name for c in status.candidates] == [
        c.name for c in d.candidates[:STATUS_CANDIDATE_LIMIT]
    ]


def test_top_includes_rejected_candidates_after_the_feasible() -> None:
    full = offer("full", available=0)
    d = decide(job(), policy(), snapshot((pool(in_use=8),), (offer(), full)))
    assert [c.name for c in d.top(3)] == [c.name for c in d.candidates]
    assert d.candidates[-1].reason == "NoCapacity"


def test_price_cap_equal_to_a_derived_price_is_not_exceeded() -> None:
    # 100 requests x (500 + 100) tokens at $1/M = $0.06 over 1 GPU-hour: $0.06 per GPU-hour.
    tokens = offer("ionet", "unknown", PerToken(Decimal(1), Decimal(1)), memory_bytes=0)
    at_cap = job(maxPricePerGPUHour="0.06")
    d = decide(at_cap, policy(), snapshot((), (tokens,)))
    assert d.target is not None
    assert d.target.price_per_gpu_hour == Decimal("0.06")
    below = job(maxPricePerGPUHour="0.05999999")
    assert decide(below, policy(), snapshot((), (tokens,))).candidates[0].reason == (
        "PriceCapExceeded"
    )


def test_max_cost_equal_to_the_cost_is_not_exceeded() -> None:
    # One request of text-to-image: 1024 x 576 pixels at $1e-8 per pixel = $0.00589824.
    pixels = offer("livepeer", "NVIDIA-A10", PerUnit(Decimal("0.00000001"), "pixel"))
    image = {"task": "text-to-image", "model": "m", "input": {"requests": 1}}
    d = decide(job(**image, maxCost="0.00589824"), policy(), snapshot((), (pixels,)))
    assert d.target is not None
    assert d.target.estimated_cost == Decimal("0.00589824")
    over = decide(job(**image, maxCost="0.00589823"), policy(), snapshot((), (pixels,)))
    assert over.candidates[0].reason == "MaxCostExceeded"


def test_spillover_at_one_percent_lets_a_cheaper_offer_beat_an_idle_cluster() -> None:
    cheap = offer(pricing=PerGPUHour(Decimal("0.50")))
    spill_at_1 = policy(
        inCluster={
            "spilloverUtilization": 1,
            "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}],
        }
    )
    d = decide(job(), spill_at_1, snapshot((pool(),), (cheap,)))
    assert d.target is not None
    assert d.target.provider == "akash"


def test_spillover_counts_the_jobs_own_gpus() -> None:
    cheap = offer(pricing=PerGPUHour(Decimal("0.50")))
    # 90 % threshold on 10 GPUs with 8 in use: a 1-GPU job makes 90 %, a smaller load does not.
    ten = pool(allocatable=10, in_use=8)
    assert decide(job(), policy(), snapshot((ten,), (cheap,))).target.provider == "akash"  # type: ignore[union-attr]
    seven = pool(allocatable=10, in_use=7)
    held = decide(job(), policy(), snapshot((seven,), (cheap,)))
    assert held.target is not None
    assert held.target.backend == "InCluster"
    assert {c.name: c.reason for c in held.candidates if not c.feasible} == {
        "akash/NVIDIA-A100-SXM4-80GB": "BelowSpilloverThreshold"
    }
