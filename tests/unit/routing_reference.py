"""Reference copy of the routing engine before its speed-up (commit 5dc1a91), plus the two
rule changes made with it (PerToken feasibility; the spillover threshold counts the job's own
GPUs) and one made since (a queue wait is never shorter than one node takes to have the
job's GPUs); tests/unit/test_routing_equivalence.py compares the optimised engine against it.

``decide``: hard constraints first, then a weighted score; deterministic and explained.

Candidates are the in-cluster pools (``in-cluster/<product>``) and the external offers
(``<provider>/<product>``). Each gets the first hard constraint it fails, in this order:

* in-cluster: placement, ``inCluster.enabled``, failed before (failover), products, memory,
  GPUs per pool and per node, the job's price cap and maxCost (at the policy's amortised
  price), then the queue: the expected wait (FIFO over the pool's release times, else the
  policy's maxQueueTime) must not exceed maxQueueTime nor the job's startWithin;
* external: placement, ``external.enabled``, failed before, providers and providerSelector,
  task, products, memory, regions, trust tier, paused, circuit open, price caps (job and
  policy, on the price normalised per GPU-hour), maxCost, capacity and concurrency, budget,
  spillover (external only when in-cluster cannot take the job, cannot start it now, or the
  matching pools are at least spilloverUtilization busy counting queued GPUs), startWithin.

startWithin is kept whenever any candidate can meet it; if none can, the best late candidate
is chosen and the decision says ``StartWithinUnattainable``. Feasible candidates are ranked by
a weighted score of price, expected start, reliability (1 - error rate) and carbon, each term
being best-value / this-value so that raising a candidate's price never helps it. Nothing
feasible: ``Wait`` (with when to look again) if some rejection may lift, else ``Rejected``.

Pure: no I/O, no clock (``snapshot.now`` is the time), no randomness. Per-job quantities are
computed once per call so that each candidate costs a few attribute reads, one Decimal product
and some float arithmetic (see tests/bench/bench_routing.py).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from hybridgpu.api.computeprovider import TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec, Placement, Task
from hybridgpu.api.routingpolicy import RoutingPolicySpec, WhenExceeded
from hybridgpu.routing.cost import (
    MILLION,
    MILLIS_PER_HOUR,
    job_gpu_millis,
    per_gpu_hour_equivalent,
    token_counts,
    units_per_request,
)
from hybridgpu.routing.decision import IN_CLUSTER, RoutingDecision, ScoredCandidate
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, PerGPUHour, PerToken, Snapshot
from hybridgpu.units import format_money

MODEL_LABEL = "hybridgpu.dev/model"
FEASIBLE = "Feasible"
LATE = "MissesStartWithin"
"""Feasible except that it starts after the job's startWithin; used only if nothing is on time."""

# Reasons that no change of capacity, price or time can lift for this job and policy.
PERMANENT_REASONS = frozenset(
    {
        "PlacementExternal",
        "PlacementInCluster",
        "InClusterDisabled",
        "ExternalDisabled",
        "PreviouslyFailed",
        "ProviderNotAllowed",
        "TaskNotSupported",
        "ProductNotAllowed",
        "InsufficientMemory",
        "TooFewGPUs",
        "RegionNotAllowed",
        "TrustTierTooLow",
        "ModelNotServed",
    }
)
# Static for in-cluster GPUs (the policy's price), transient for external offers (prices move).
IN_CLUSTER_PERMANENT_REASONS = frozenset({"PriceCapExceeded", "MaxCostExceeded"})

# How soon a Wait should be reconsidered, by the reason that blocks the best candidate.
RETRY_SECONDS: dict[str, float] = {
    "NoCapacity": 30.0,
    "ConcurrencyLimit": 30.0,
    "CircuitOpen": 30.0,
    "ProviderPaused": 60.0,
    "PriceCapExceeded": 60.0,
    "MaxCostExceeded": 60.0,
    "BudgetExceeded": 300.0,
    "BelowSpilloverThreshold": 30.0,
    "NoCandidates": 60.0,
}
DEFAULT_RETRY_SECONDS = 30.0
LATENCY_SOFTENING_SECONDS = 30.0
"""Added to start times before taking ratios, so 0 s and 1 s are not worlds apart."""
NEUTRAL_CARBON_TERM = 0.5

_TRUST_RANK = {tier: rank for rank, tier in enumerate(TrustTier)}
_ZERO = Decimal(0)
# Candidates are plain tuples in ScoredCandidate's field order until the end, and become
# ScoredCandidates through tuple.__new__, which skips the NamedTuple's Python-level __new__.
_new = tuple.__new__
_Raw = tuple[
    str, str, str, str, Decimal, Decimal, float, float | None, bool, str, ExternalOffer | None
]


def decide(
    job: InferenceJobSpec,
    policy: RoutingPolicySpec,
    snapshot: Snapshot,
    *,
    created_at: datetime | None = None,
    excluded: frozenset[str] = frozenset(),
) -> RoutingDecision:
    """Choose where ``job`` runs under ``policy`` given ``snapshot``, or why it cannot yet.

    ``created_at`` anchors the job's ``startWithin`` (deadline = created_at + startWithin;
    without it the deadline counts from ``snapshot.now``). ``excluded`` names candidates that
    already failed this job (failover); they are never chosen again.
    """
    if job.suspend:
        return RoutingDecision("Wait", None, (), "Suspended", "the job is suspended", None)

    count = job.gpu.count
    min_mem = job.gpu.min_memory_bytes()
    products = frozenset(job.gpu.products) if job.gpu.products else None
    gpu_millis = job_gpu_millis(job)
    placement = job.placement
    job_cap = job.max_price_per_gpu_hour
    max_cost = job.max_cost
    regions = frozenset(job.regions) if job.regions else None
    deadline = _seconds_to_deadline(job, snapshot.now, created_at)

    in_policy = policy.in_cluster
    max_queue = in_policy.max_queue_time.total_seconds()
    in_cluster_allowed = placement is not Placement.EXTERNAL and in_policy.enabled
    facts = _JobFacts(
        in_cluster_allowed,
        placement,
        count,
        min_mem,
        products,
        gpu_millis,
        job_cap,
        max_cost,
        deadline,
        max_queue,
        excluded,
    )
    candidates: list[_Raw] = []

    # In-cluster pools. Eligibility ignoring capacity also feeds the spillover rule below.
    eligible_alloc = 0
    eligible_busy = 0
    startable_now = False
    for pool in snapshot.pools:
        cand, static_ok, now_ok = _in_cluster_candidate(pool, policy, facts)
        candidates.append(cand)
        if static_ok:
            eligible_alloc += pool.allocatable
            eligible_busy += pool.in_use + pool.queued
            startable_now = startable_now or now_ok

    ext_policy = policy.external
    external_allowed = placement is not Placement.IN_CLUSTER and ext_policy.enabled
    spill_ok = (
        not in_cluster_allowed
        or eligible_alloc == 0
        or not startable_now
        or (eligible_busy + count) * 100 >= in_policy.spillover_utilization * eligible_alloc
    )
    ext_cap = job_cap
    if ext_policy.max_price_per_gpu_hour is not None and (
        ext_cap is None or ext_policy.max_price_per_gpu_hour < ext_cap
    ):
        ext_cap = ext_policy.max_price_per_gpu_hour
    allowed_providers = frozenset(ext_policy.providers) if ext_policy.providers else None
    selector = ext_policy.provider_selector
    min_rank = _TRUST_RANK[ext_policy.min_trust_tier]
    budget = policy.budget
    budget_left = None if budget is None else budget.limit - snapshot.budget_spent
    task = job.task
    requests = job.input.requests
    tokens_in, tokens_out = token_counts(job)
    unit_cache: dict[str, int] = {}

    for offer in snapshot.offers:
        product = offer.gpu_product
        name = f"{offer.provider}/{product}"
        pricing = offer.pricing
        if isinstance(pricing, PerGPUHour):
            price = pricing.usd
            cost = price * gpu_millis / MILLIS_PER_HOUR
            need = count
        else:
            if isinstance(pricing, PerToken):
                cost = (
                    tokens_in * pricing.input_usd_per_million
                    + tokens_out * pricing.output_usd_per_million
                ) / MILLION
            else:
                units = unit_cache.get(pricing.unit)
                if units is None:
                    units = unit_cache[pricing.unit] = units_per_request(task, pricing.unit)
                cost = pricing.usd_per_unit * units * requests
            price = per_gpu_hour_equivalent(cost, gpu_millis)
            # Serverless endpoints take the job as one request stream, not as whole GPUs.
            need = 1
        start = offer.start_latency_seconds

        if not external_allowed:
            reason = (
                "PlacementInCluster" if placement is Placement.IN_CLUSTER else "ExternalDisabled"
            )
        elif excluded and name in excluded:
            reason = "PreviouslyFailed"
        elif (allowed_providers is not None and offer.provider not in allowed_providers) or (
            selector is not None and not selector.matches(offer.labels)
        ):
            reason = "ProviderNotAllowed"
        elif (offer.tasks is not None and task not in offer.tasks) or (
            isinstance(pricing, PerToken) and task is not Task.LLM
        ):
            reason = "TaskNotSupported"
        elif isinstance(pricing, PerToken) and (
            offer.labels.get(MODEL_LABEL) not in (None, job.model)
        ):
            reason = "ModelNotServed"
        elif not isinstance(pricing, PerToken) and products is not None and product not in products:
            reason = "ProductNotAllowed"
        elif not isinstance(pricing, PerToken) and offer.memory_bytes < min_mem:
            reason = "InsufficientMemory"
        elif isinstance(pricing, PerGPUHour) and job.gpu.count > (
            offer.max_gpus_per_job or job.gpu.count
        ):
            reason = "TooFewGPUs"
        elif regions is not None and offer.region not in regions:
            reason = "RegionNotAllowed"
        elif _TRUST_RANK[offer.trust_tier] < min_rank:
            reason = "TrustTierTooLow"
        elif offer.paused:
            reason = "ProviderPaused"
        elif offer.circuit_open:
            reason = "CircuitOpen"
        elif ext_cap is not None and price > ext_cap:
            reason = "PriceCapExceeded"
        elif max_cost is not None and cost > max_cost:
            reason = "MaxCostExceeded"
        elif offer.available < need:
            reason = "NoCapacity"
        elif offer.active_jobs >= offer.max_concurrent_jobs:
            reason = "ConcurrencyLimit"
        elif budget_left is not None and cost > budget_left:
            reason = "BudgetExceeded"
        elif not spill_ok:
            reason = "BelowSpilloverThreshold"
        elif start > deadline:
            reason = LATE
        else:
            reason = FEASIBLE
        candidates.append(
            (
                name,
                "External",
                offer.provider,
                product,
                price,
                cost,
                start,
                None,
                False,
                reason,
                offer,
            )
        )

    return _conclude(candidates, policy, bool(snapshot.pools) or bool(snapshot.offers))


def _seconds_to_deadline(
    job: InferenceJobSpec, now: datetime, created_at: datetime | None
) -> float:
    if job.start_within is None:
        return math.inf
    if created_at is None:
        return job.start_within.total_seconds()
    return (created_at + job.start_within - now).total_seconds()


class _JobFacts(NamedTuple):
    """What the in-cluster filters need of the job, computed once per decision."""

    allowed: bool
    placement: Placement
    gpu_count: int
    min_mem: int
    products: frozenset[str] | None
    gpu_millis: int
    job_cap: Decimal | None
    max_cost: Decimal | None
    deadline: float
    max_queue: float
    excluded: frozenset[str]


def _in_cluster_candidate(
    pool: InClusterPool, policy: RoutingPolicySpec, job: _JobFacts
) -> tuple[_Raw, bool, bool]:
    """The pool as a candidate, whether it could ever take the job, and whether right now."""
    product = pool.gpu_product
    name = f"{IN_CLUSTER}/{product}"
    price = policy.in_cluster.price_for(product)
    if price is None:
        price = _ZERO
    cost = price * job.gpu_millis / MILLIS_PER_HOUR
    wait = _queue_wait_seconds(pool, job.gpu_count, job.max_queue)
    static_ok = False
    if not job.allowed:
        reason = "PlacementExternal" if job.placement is Placement.EXTERNAL else "InClusterDisabled"
    elif name in job.excluded:
        reason = "PreviouslyFailed"
    elif job.products is not None and product not in job.products:
        reason = "ProductNotAllowed"
    elif pool.memory_bytes < job.min_mem:
        reason = "InsufficientMemory"
    elif pool.allocatable < job.gpu_count or (
        pool.max_gpus_per_node is not None and pool.max_gpus_per_node < job.gpu_count
    ):
        reason = "TooFewGPUs"
    else:
        static_ok = True
        if job.job_cap is not None and price > job.job_cap:
            reason = "PriceCapExceeded"
        elif job.max_cost is not None and cost > job.max_cost:
            reason = "MaxCostExceeded"
        elif wait > job.max_queue:
            reason = "QueueTooLong"
        elif wait > job.deadline:
            reason = LATE
        else:
            reason = FEASIBLE
    cand: _Raw = (
        name,
        "InCluster",
        IN_CLUSTER,
        product,
        price,
        cost,
        wait,
        None,
        False,
        reason,
        None,
    )
    return cand, static_ok, static_ok and wait == 0.0


def _queue_wait_seconds(pool: InClusterPool, count: int, max_queue: float) -> float:
    """Expected seconds until ``count`` GPUs of the pool are free for this job (FIFO)."""
    per_node_ok = pool.max_free_per_node is None or pool.max_free_per_node >= count
    if pool.free - pool.queued >= count and per_node_ok:
        return 0.0
    # GPUs that must come back first: those the queue ahead wants, plus ours, minus free ones.
    needed = pool.queued + count - pool.free
    releases = pool.release_seconds
    if needed <= 0:
        needed = 1  # free in total but fragmented across nodes: wait for the next release
    if needed <= len(releases):
        wait = float(releases[needed - 1])
        # The rule added since: never sooner than one node has the job's GPUs.
        ready = pool.node_ready_seconds
        if count <= len(ready) and ready[count - 1] > wait:
            return max_queue if math.isinf(ready[count - 1]) else float(ready[count - 1])
        return wait
    return max_queue


def _conclude(
    candidates: list[_Raw], policy: RoutingPolicySpec, any_candidates: bool
) -> RoutingDecision:
    pool = [c for c in candidates if c[9] == FEASIBLE]
    late = not pool
    if late:
        pool = [c for c in candidates if c[9] == LATE]
    if not pool:
        return _no_target(candidates, any_candidates, policy)

    scored, cheapest, fastest = _score(pool, policy)
    chosen = {id(c) for c in pool}
    rest = [c for c in candidates if id(c) not in chosen]
    if rest:
        rest.sort(key=lambda c: (_permanent(c[9], c[1], policy), c[5], c[0]))
    target = scored[0]
    if late:
        reason = "StartWithinUnattainable"
    elif float(target.estimated_cost) == cheapest:
        reason = "CheapestFeasible"
    elif target.expected_start_seconds == fastest:
        reason = "FastestStart"
    else:
        reason = "BestScore"
    message = (
        f"routed to {target.name}: estimated ${format_money(target.estimated_cost, 2)}, "
        f"start in ~{target.expected_start_seconds:.0f}s ({reason}; "
        f"{len(scored)} feasible of {len(candidates)})"
    )
    ranked = (*scored, *[_new(ScoredCandidate, c) for c in rest])
    return RoutingDecision("Routed", target, ranked, reason, message, None)


def _score(
    pool: list[_Raw], policy: RoutingPolicySpec
) -> tuple[list[ScoredCandidate], float, float]:
    """Score feasible candidates in 0..1 and rank them; also the lowest cost and start.

    Each term is the best value among the candidates over this one's, which keeps the terms
    monotone: raising one candidate's cost lowers its own price term and can only raise the
    others'. Ties go to the lower cost, then the earlier start, then the name.
    """
    w = policy.weights
    total = w.price + w.latency + w.reliability + w.carbon
    wp, wl, wr, wc = w.price / total, w.latency / total, w.reliability / total, w.carbon / total
    soft = LATENCY_SOFTENING_SECONDS
    costs = [float(c[5]) for c in pool]
    min_cost = min(costs)
    fastest = min([c[6] for c in pool])
    min_start = fastest + soft
    min_carbon = 0.0
    if wc:
        carbons = [c[10].carbon_intensity for c in pool if c[10] and c[10].carbon_intensity]
        min_carbon = float(min(carbons)) if carbons else 0.0
    keyed: list[tuple[float, Decimal, float, str, int]] = []
    append = keyed.append
    for i, (c, cost) in enumerate(zip(pool, costs, strict=True)):
        offer = c[10]
        score = wp * (1.0 if cost <= min_cost else min_cost / cost) + wl * min_start / (c[6] + soft)
        score += wr * (1.0 - offer.error_rate if offer is not None else 1.0)
        if wc:
            intensity = offer.carbon_intensity if offer is not None else None
            if intensity is None:
                score += wc * NEUTRAL_CARBON_TERM
            elif intensity <= min_carbon:
                score += wc
            else:
                score += wc * min_carbon / intensity
        # The index last makes full ties compare as ints, never as offers.
        append((-score, c[5], c[6], c[0], i))
    keyed.sort()
    ranked = [
        _new(ScoredCandidate, (*pool[i][:7], -neg, True, pool[i][9], pool[i][10]))
        for neg, _, _, _, i in keyed
    ]
    return ranked, min_cost, fastest


def is_permanent(c: ScoredCandidate, policy: RoutingPolicySpec) -> bool:
    """Whether the candidate's rejection holds whatever capacity, prices and time do."""
    return _permanent(c.reason, c.backend, policy)


def _permanent(reason: str, backend: str, policy: RoutingPolicySpec) -> bool:
    if reason in PERMANENT_REASONS:
        return True
    if backend == "InCluster":
        return reason in IN_CLUSTER_PERMANENT_REASONS
    return (
        reason == "BudgetExceeded"
        and policy.budget is not None
        and policy.budget.when_exceeded is WhenExceeded.REJECT
    )


def _no_target(raw: list[_Raw], any_candidates: bool, policy: RoutingPolicySpec) -> RoutingDecision:
    candidates = [_new(ScoredCandidate, c) for c in raw]
    ranked = tuple(
        sorted(candidates, key=lambda c: (is_permanent(c, policy), c.estimated_cost, c.name))
    )
    transient = [c for c in ranked if not is_permanent(c, policy)]
    if not any_candidates:
        if policy.external.enabled:
            return RoutingDecision(
                "Wait",
                None,
                (),
                "NoCandidates",
                "no in-cluster GPUs and no external offers yet",
                RETRY_SECONDS["NoCandidates"],
            )
        return RoutingDecision(
            "Rejected", None, (), "NoCandidates", "no GPUs anywhere may take the job", None
        )
    counts = Counter(c.reason for c in (transient or ranked))
    summary = ", ".join(f"{n} {r}" for r, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    if not transient:
        reason = ranked[0].reason
        if any(c.reason == "BudgetExceeded" for c in ranked):
            reason = "BudgetExceeded"
        return RoutingDecision(
            "Rejected", None, ranked, reason, f"no candidate can ever take the job: {summary}", None
        )
    # The cheapest transiently blocked candidate says best what the job is waiting for.
    blocker = transient[0]
    max_queue = policy.in_cluster.max_queue_time.total_seconds()
    retry = min(_retry_hint(c, max_queue) for c in transient)
    return RoutingDecision(
        "Wait",
        None,
        ranked,
        blocker.reason,
        f"waiting: {blocker.name} is blocked by {blocker.reason}; {summary}",
        retry,
    )


def _retry_hint(c: ScoredCandidate, max_queue: float) -> float:
    if c.reason == "QueueTooLong":
        # The queue ahead shrinks as GPUs come back; look again when it fits maxQueueTime.
        return max(c.expected_start_seconds - max_queue, 1.0)
    return RETRY_SECONDS.get(c.reason, DEFAULT_RETRY_SECONDS)
