"""Properties of decide() over random jobs, policies and snapshots (hypothesis)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.routing.cost import job_gpu_millis
from hybridgpu.routing.decision import RoutingDecision
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, PerGPUHour, PerToken, Snapshot

from .routing_fixtures import GIB, NOW

PRODUCTS = ["NVIDIA-A10", "Tesla-T4", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]
REGIONS = ["us", "eu", "ap"]
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9.99"), places=2)

jobs = st.builds(
    lambda count, hours, products, placement, cap, max_cost, within, regions, mem: (
        InferenceJobSpec.model_validate(
            {
                "task": "llm",
                "model": "m",
                "input": {"requests": 1000, "inputTokens": 500, "outputTokens": 200},
                "gpu": {"count": count, "minMemory": f"{mem}Gi", "products": products},
                "estimatedDuration": f"{hours}m",
                "placement": placement,
                "maxPricePerGPUHour": cap,
                "maxCost": max_cost,
                "startWithin": within,
                "regions": regions,
            }
        )
    ),
    st.integers(1, 8),
    st.integers(1, 600),
    st.none() | st.lists(st.sampled_from(PRODUCTS), min_size=1, max_size=3, unique=True),
    st.sampled_from(["Any", "InCluster", "External"]),
    st.none() | money.map(str),
    st.none() | money.map(lambda d: str(d * 10)),
    st.none() | st.sampled_from(["30s", "2m", "10m", "1h"]),
    st.none() | st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True),
    st.sampled_from([0, 16, 40]),
)

policies = st.builds(
    lambda w, spill, ext_cap, tier, budget, reject, in_price, deferral: (
        RoutingPolicySpec.model_validate(
            {
                "weights": {"price": w[0], "latency": w[1], "reliability": w[2], "carbon": w[3]},
                "inCluster": {
                    "spilloverUtilization": spill,
                    "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": str(in_price)}],
                },
                "external": {"maxPricePerGPUHour": ext_cap, "minTrustTier": tier},
                **(
                    {
                        "budget": {
                            "limit": str(budget),
                            "whenExceeded": "Reject" if reject else "InClusterOnly",
                        }
                    }
                    if budget is not None
                    else {}
                ),
                **({"deferral": deferral} if deferral is not None else {}),
            }
        )
    ),
    st.tuples(*[st.integers(0, 100)] * 4).filter(lambda w: sum(w) > 0),
    st.integers(1, 100),
    st.none() | money.map(str),
    st.sampled_from(list(TrustTier)),
    st.none() | st.integers(0, 200),
    st.booleans(),
    money,
    st.none()
    | st.builds(
        lambda pct, wait: {"maxPremiumPercent": pct, "maxWait": wait},
        st.sampled_from([0, 10, 25, 100]),
        st.sampled_from(["1h", "336h"]),
    ),
)

pools = st.builds(
    lambda product, alloc, used, queued: InClusterPool(
        product,
        {"NVIDIA-A10": 24, "Tesla-T4": 16}.get(product, 80) * GIB,
        alloc,
        min(used, alloc),
        queued,
    ),
    st.sampled_from(PRODUCTS),
    st.integers(0, 16),
    st.integers(0, 16),
    st.integers(0, 4),
)

offers = st.builds(
    lambda i, product, price, tokens, avail, region, tier, lat, err, paused, circuit: ExternalOffer(
        provider=f"net{i}",
        provider_type=ProviderType.OPENAI if tokens else ProviderType.AKASH,
        gpu_product=product,
        memory_bytes=80 * GIB,
        pricing=PerToken(price, price) if tokens else PerGPUHour(price),
        available=avail,
        region=region,
        trust_tier=tier,
        start_latency_seconds=lat,
        error_rate=err,
        paused=paused,
        circuit_open=circuit,
    ),
    st.integers(0, 5),
    st.sampled_from(PRODUCTS),
    money,
    st.booleans(),
    st.integers(0, 8),
    st.sampled_from(REGIONS),
    st.sampled_from(list(TrustTier)),
    st.floats(0, 900),
    st.floats(0, 1),
    st.booleans(),
    st.booleans(),
)

snapshots = st.builds(
    lambda p, o, spent: Snapshot(
        now=NOW,
        pools=tuple({x.gpu_product: x for x in p}.values()),
        offers=tuple({(x.provider, x.gpu_product): x for x in o}.values()),
        budget_spent=spent,
    ),
    st.lists(pools, max_size=3),
    st.lists(offers, max_size=6),
    st.decimals(min_value=0, max_value=300, places=2),
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_target(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot, d: RoutingDecision
) -> None:
    t = d.target
    assert t is not None
    assert t.feasible
    # Token endpoints choose their own hardware: GPU products and memory do not bind them.
    token_priced = t.offer is not None and isinstance(t.offer.pricing, PerToken)
    if job.gpu.products and not token_priced:
        assert t.gpu_product in job.gpu.products
    if job.max_price_per_gpu_hour is not None:
        assert t.price_per_gpu_hour <= job.max_price_per_gpu_hour
    if job.max_cost is not None:
        assert t.estimated_cost <= job.max_cost
    if job.start_within is not None and d.reason != "StartWithinUnattainable":
        assert t.expected_start_seconds <= job.start_within.total_seconds()
    if job.start_within is not None and d.reason == "StartWithinUnattainable":
        assert all(
            c.expected_start_seconds > job.start_within.total_seconds()
            for c in d.candidates
            if c.feasible
        )
    if t.backend == "InCluster":
        assert job.placement != "External"
        assert policy.in_cluster.enabled
        p = next(x for x in snap.pools if x.gpu_product == t.gpu_product)
        assert p.memory_bytes >= job.gpu.min_memory_bytes()
        assert p.allocatable >= job.gpu.count
        assert t.expected_start_seconds <= policy.in_cluster.max_queue_time.total_seconds()
    else:
        o = t.offer
        assert o is not None
        assert job.placement != "InCluster"
        assert not o.paused
        assert not o.circuit_open
        if token_priced:
            assert job.task == "llm"
            assert o.labels.get("hybridgpu.dev/model") in (None, job.model)
        else:
            assert o.memory_bytes >= job.gpu.min_memory_bytes()
        assert o.trust_tier.rank >= policy.external.min_trust_tier.rank
        if job.regions:
            assert o.region in job.regions
        cap = policy.external.max_price_per_gpu_hour
        if cap is not None:
            assert t.price_per_gpu_hour <= cap
        need = job.gpu.count if isinstance(o.pricing, PerGPUHour) else 1
        assert o.available >= need
        if policy.budget is not None:
            assert snap.budget_spent + t.estimated_cost <= policy.budget.limit


@FAST
@given(jobs, policies, snapshots)
def test_a_decision_never_violates_a_hard_constraint(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot
) -> None:
    d = decide(job, policy, snap)
    assert d.outcome in ("Routed", "Wait", "Rejected")
    if d.outcome == "Routed":
        _check_target(job, policy, snap, d)
        assert d.candidates[0] == d.target
    else:
        assert d.target is None
        assert not any(c.feasible for c in d.candidates)
    seen_infeasible = False
    for c in d.candidates:
        if c.feasible:
            assert not seen_infeasible, "feasible candidates come first"
        seen_infeasible = seen_infeasible or not c.feasible
        assert c.reason


@FAST
@given(jobs, policies, snapshots)
def test_same_inputs_same_decision(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot
) -> None:
    assert decide(job, policy, snap) == decide(job, policy, snap)


@FAST
@given(jobs, policies, snapshots, st.data())
def test_raising_a_price_never_helps_that_candidate(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot, data: Any
) -> None:
    if not snap.offers:
        return
    i = data.draw(st.integers(0, len(snap.offers) - 1))
    victim = snap.offers[i]
    bump = data.draw(st.decimals(min_value=Decimal("0.01"), max_value=5, places=2))
    p = victim.pricing
    raised = (
        PerGPUHour(p.usd + bump)
        if isinstance(p, PerGPUHour)
        else PerToken(p.input_usd_per_million + bump, p.output_usd_per_million + bump)  # type: ignore[union-attr]
    )
    offers = list(snap.offers)
    offers[i] = dataclasses.replace(victim, pricing=raised)
    before = decide(job, policy, snap)
    after = decide(job, policy, dataclasses.replace(snap, offers=tuple(offers)))
    name = f"{victim.provider}/{victim.gpu_product}"
    won_before = before.target is not None and before.target.name == name
    won_after = after.target is not None and after.target.name == name
    assert won_before or not won_after


@FAST
@given(jobs, policies, snapshots)
def test_an_infeasible_job_is_never_routed(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot
) -> None:
    # Ask for a product nobody has: nothing may take it, now or later. Token endpoints are left
    # out: they choose their own hardware, so the job's GPU products do not bind them.
    impossible = job.model_copy(update={"gpu": job.gpu.model_copy(update={"products": ["B200"]})})
    gpu_only = dataclasses.replace(
        snap, offers=tuple(o for o in snap.offers if not isinstance(o.pricing, PerToken))
    )
    d = decide(impossible, policy, gpu_only)
    assert d.outcome != "Routed"
    assert d.target is None
    too_big = job.model_copy(update={"max_cost": Decimal(0)})
    if job_gpu_millis(job) > 0 and all(
        policy.in_cluster.price_for(p.gpu_product) for p in snap.pools
    ):
        d2 = decide(too_big, policy, snap)
        assert d2.target is None or d2.target.estimated_cost == 0


@FAST
@given(jobs, policies, snapshots)
def test_deferral_never_takes_a_place_dearer_than_it_allows(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snap: Snapshot
) -> None:
    d = decide(job, policy, snap)
    if policy.deferral is None or job.start_within is not None:
        assert d.reason != "DeferredForPrice"
        return
    waitable = {"QueueTooLong", "NoCapacity", "ConcurrencyLimit"}
    places = [
        c for c in d.candidates if c.feasible or c.reason in (waitable | {"DeferredForPrice"})
    ]
    limit = min((c.estimated_cost for c in places), default=None)
    if d.outcome == "Routed":
        assert d.target is not None and limit is not None
        allowed = limit * (1 + Decimal(policy.deferral.max_premium_percent) / 100)
        assert d.target.estimated_cost <= allowed * (1 + Decimal("1e-9"))
    if d.reason == "DeferredForPrice":
        assert d.outcome == "Wait"
        assert d.awaiting
        by_name = {c.name: c for c in d.candidates}
        assert all(by_name[n].reason in waitable for n in d.awaiting)
        assert any(c.reason == "DeferredForPrice" for c in d.candidates)
        assert d.retry_after_seconds is not None and d.retry_after_seconds > 0
