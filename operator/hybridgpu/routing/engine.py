"""``decide``: hard constraints first, then a weighted score; deterministic and explained.

Candidates are the in-cluster pools (``in-cluster/<product>``) and the external offers
(``<provider>/<product>``). Each gets the first hard constraint it fails, in this order:

* in-cluster: placement, ``inCluster.enabled``, failed before (failover), products, memory,
  GPUs per pool and per node (``UnhealthyGPUs`` instead of ``TooFewGPUs`` when the GPUs left
  out for DCGM faults would have been enough), the job's price cap and maxCost (at the
  policy's amortised price), then the queue: the expected wait (FIFO over the pool's release
  times, else the policy's maxQueueTime) must not exceed maxQueueTime nor the job's
  startWithin;
* external: placement, ``external.enabled``, failed before, providers and providerSelector,
  task, model (token-priced offers only), products and memory (not token-priced), regions,
  trust tier, paused, circuit open, price caps (job and policy, on the price normalised per
  GPU-hour), maxCost, capacity and concurrency, budget, spillover (external only when
  in-cluster cannot take the job, cannot start it now, or the matching pools would be at least
  spilloverUtilization busy with the job's GPUs added to those in use and queued; so at 1 %
  external offers always compete on price, even with the cluster idle; with ``busyFrom:
  Telemetry`` "in use" is what DCGM measures busy, where the pools carry it), startWithin.

startWithin is kept whenever any candidate can meet it; if none can, the best late candidate
is chosen and the decision says ``StartWithinUnattainable``. Feasible candidates are ranked by
a weighted score of price, expected start, reliability (1 - error rate) and carbon, each term
being best-value / this-value so that raising a candidate's price never helps it. Nothing
feasible: ``Wait`` (with when to look again) if some rejection may lift, else ``Rejected``.

Token-priced offers (serverless OpenAI-compatible endpoints) pick their own hardware: for them
the job's GPU count, memory and products do not apply; instead the job must be ``llm`` and the
offer must serve its model (label ``hybridgpu.dev/model``; no label: any model), else
``TaskNotSupported`` or ``ModelNotServed``.

Pure: no I/O, no clock (``snapshot.now`` is the time), no randomness. Speed (see
tests/bench/bench_routing.py): what depends only on an offer is precomputed once per snapshot
(``offerfacts``); inside the candidate loop costs are correctly rounded floats from exact integer
ratios, and a Decimal is computed only where a comparison with a money limit is too close to
call in float, or for a candidate that is reported (the target at once, the ranked list on
first read of ``RoutingDecision.candidates``). Reported prices and costs are the same Decimals
``cost.estimate_cost`` gives.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

from hybridgpu.api.inferencejob import InferenceJobSpec, Placement, Task
from hybridgpu.api.routingpolicy import BusyFrom, RoutingPolicySpec, WhenExceeded
from hybridgpu.routing.cost import MILLIS_PER_HOUR, job_gpu_millis, token_counts, units_per_request
from hybridgpu.routing.decision import IN_CLUSTER, RoutingDecision, ScoredCandidate
from hybridgpu.routing.offerfacts import (
    LATENCY_SOFTENING_SECONDS,
    PER_GPU_HOUR,
    PER_TOKEN,
    TRUST_RANK,
    JobQuantities,
    OfferFacts,
    money,
    offer_facts,
    pool_facts,
)
from hybridgpu.routing.snapshot import ExternalOffer, Snapshot
from hybridgpu.routing.work import estimator_for, weight_bytes
from hybridgpu.units import format_duration, format_money, parse_quantity

FEASIBLE = "Feasible"
LATE = "MissesStartWithin"
"""Feasible except that it starts after the job's startWithin; used only if nothing is on time."""
SCARCE = "ScarceProduct"
"""Feasible, but a pool kept for jobs that can run nowhere else, and this job has a place close
in price (``inCluster.scarcity``)."""
DEFERRED = "DeferredForPrice"
"""Free now, but dearer than the policy's deferral allows over a place that is only busy."""
DEFERRAL_RECHECK_SECONDS = 21600.0
"""Longest a deferred job waits before it is decided again; a release of capacity at one of
the places it waits for wakes it sooner."""
WAITABLE = frozenset({"QueueTooLong", "NoCapacity", "ConcurrencyLimit"})

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
        "ModelTooLarge",
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
    "NoMatchingCapacity": 120.0,
    "UnhealthyGPUs": 60.0,
}
DEFAULT_RETRY_SECONDS = 30.0
NEUTRAL_CARBON_TERM = 0.5

_ZERO = Decimal(0)
# Candidates are plain tuples in ScoredCandidate's field order until the end, and become
# ScoredCandidates through tuple.__new__, which skips the NamedTuple's Python-level __new__.
_new = tuple.__new__
_Raw = tuple[
    str, str, str, str, Decimal, Decimal, float, float | None, bool, str, ExternalOffer | None
]
_CLOSE = 1e-9
"""Relative distance from a money limit under which float comparison defers to Decimal; floats
here are within 1e-16 and Decimals within 1e-27 of the exact value, so outside it they agree."""

# A candidate in the running: float cost, its weighted reliability term, carbon intensity,
# start + LATENCY_SOFTENING_SECONDS, start, name, judging position, source (the in-cluster
# candidate tuple, or the offer's facts) and whether it is external.
_Running = tuple[float, float, int | None, float, float, str, int, "_Raw | OfferFacts", bool]
# A rejected candidate: judging position, source, whether external, reason.
_Rejected = tuple[int, "_Raw | OfferFacts", bool, str]


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
    min_mem = _min_memory_bytes(job.gpu.min_memory)
    products = frozenset(job.gpu.products) if job.gpu.products else None
    gpu_millis = job_gpu_millis(job)
    # llm jobs: GPU time per product from the tokens (throughput table), where it has a row.
    estimator = estimator_for(job, gpu_millis)
    work_based = estimator.active
    millis_of = estimator.millis  # product -> GPU-milliseconds, filled as products are met
    weights = weight_bytes(job)
    placement = job.placement
    job_cap = job.max_price_per_gpu_hour
    max_cost = job.max_cost
    regions = frozenset(job.regions) if job.regions else None
    deadline = _seconds_to_deadline(job, snapshot.now, created_at)

    in_policy = policy.in_cluster
    max_queue = in_policy.max_queue_time.total_seconds()
    in_cluster_allowed = placement is not Placement.EXTERNAL and in_policy.enabled
    # Sorted into three lists as they are judged, so that ranking never scans the rejected.
    feasible: list[_Running] = []
    late: list[_Running] = []
    rejected: list[_Rejected] = []
    # Positions of feasible pools the job would take GPUs kept for jobs that can run only there.
    scarce: list[int] = []

    soft = LATENCY_SOFTENING_SECONDS
    wr = _weights(policy)[2]
    weighted_reliable = wr * 1.0  # in-cluster GPUs count as fully reliable

    # In-cluster pools. Eligibility ignoring capacity also feeds the spillover rule below.
    eligible_alloc = 0
    eligible_busy = 0.0
    startable_now = False
    # The cheapest cost of a place that only lacks free capacity now (for deferral).
    blocked_cost = math.inf
    price_for = in_policy.price_for
    by_telemetry = in_policy.busy_from is BusyFrom.TELEMETRY
    for pos, (
        name,
        product,
        memory,
        allocatable,
        per_node,
        busy,
        wait_now,
        releases,
        unhealthy,
        measured,
        reserved,
        node_ready,
    ) in enumerate(pool_facts(snapshot)):
        pool_price = price_for(product)
        if pool_price is None:
            pool_price = _ZERO
        millis = (
            (millis_of.get(product) or estimator.millis_on(product)) if work_based else gpu_millis
        )
        pool_cost = pool_price * millis / MILLIS_PER_HOUR
        wait = (
            0.0 if count <= wait_now else _queue_wait(count, busy, releases, node_ready, max_queue)
        )
        static_ok = False
        if not in_cluster_allowed:
            reason = "PlacementExternal" if placement is Placement.EXTERNAL else "InClusterDisabled"
        elif name in excluded:
            reason = "PreviouslyFailed"
        elif products is not None and product not in products:
            reason = "ProductNotAllowed"
        elif memory < min_mem:
            reason = "InsufficientMemory"
        elif weights is not None and memory > 0 and memory * count < weights:
            reason = "ModelTooLarge"
        elif allocatable < count or (per_node is not None and per_node < count):
            # Faults are repaired, unlike a pool's size: the job may wait for them.
            fits_healthy = unhealthy and allocatable + unhealthy >= count
            reason = "UnhealthyGPUs" if fits_healthy else "TooFewGPUs"
        else:
            static_ok = True
            if job_cap is not None and pool_price > job_cap:
                reason = "PriceCapExceeded"
            elif max_cost is not None and pool_cost > max_cost:
                reason = "MaxCostExceeded"
            elif wait > max_queue:
                reason = "QueueTooLong"
                if pool_cost < blocked_cost:
                    blocked_cost = float(pool_cost)
            elif wait > deadline:
                reason = LATE
            else:
                reason = FEASIBLE
                if reserved and busy[2] - count < reserved:
                    scarce.append(pos)
        cand: _Raw = (
            name,
            "InCluster",
            IN_CLUSTER,
            product,
            pool_price,
            pool_cost,
            wait,
            None,
            False,
            reason,
            None,
        )
        if reason is FEASIBLE or reason is LATE:
            (feasible if reason is FEASIBLE else late).append(
                (
                    float(pool_cost),
                    weighted_reliable,
                    None,
                    wait + soft,
                    wait,
                    name,
                    pos,
                    cand,
                    False,
                )
            )
        else:
            rejected.append((pos, cand, False, reason))
        if static_ok:
            eligible_alloc += allocatable
            # Measured busy GPUs plus the queue, when the policy asks and telemetry has it.
            eligible_busy += busy[0] if not by_telemetry or measured is None else measured + busy[1]
            startable_now = startable_now or wait == 0.0

    ext_policy = policy.external
    gate: str | None = None
    if placement is Placement.IN_CLUSTER:
        gate = "PlacementInCluster"
    elif not ext_policy.enabled:
        gate = "ExternalDisabled"
    spill_ok = (
        not in_cluster_allowed
        or eligible_alloc == 0
        or not startable_now
        # Counting the job itself: a threshold of 1% means "compare on price", even when idle.
        or (eligible_busy + count) * 100 >= in_policy.spillover_utilization * eligible_alloc
    )
    ext_cap = job_cap
    if ext_policy.max_price_per_gpu_hour is not None and (
        ext_cap is None or ext_policy.max_price_per_gpu_hour < ext_cap
    ):
        ext_cap = ext_policy.max_price_per_gpu_hour
    # The cap as the cost of this job, for offers whose price per GPU-hour derives from a cost.
    cap_cost_lo, cap_cost_hi = _bounds(
        None
        if ext_cap is None
        else ext_cap * gpu_millis / MILLIS_PER_HOUR
        if gpu_millis
        else ext_cap
    )
    cost_lo, cost_hi = _bounds(max_cost)
    allowed_providers = frozenset(ext_policy.providers) if ext_policy.providers else None
    selector = ext_policy.provider_selector
    check_providers = allowed_providers is not None or selector is not None
    min_rank = TRUST_RANK[ext_policy.min_trust_tier]
    budget = policy.budget
    budget_left = None if budget is None else budget.limit - snapshot.budget_spent
    budget_lo, budget_hi = _bounds(budget_left)
    task = job.task
    is_llm = task is Task.LLM
    model = job.model
    requests = job.input.requests
    tokens_in, tokens_out = token_counts(job)
    quantities = JobQuantities(
        task, gpu_millis, tokens_in, tokens_out, requests, estimator if work_based else None
    )
    unit_cache: dict[str, int] = {}

    for pos, entry in enumerate(offer_facts(snapshot), len(snapshot.pools)):
        (
            offer,
            name,
            provider,
            product,
            kind,
            num_a,
            num_b,
            den,
            unit,
            memory,
            region,
            rank,
            blocked,
            available,
            saturated,
            start,
            reliability,
            carbon,
            tasks,
            served_model,
            usd,
            start_soft,
        ) = entry
        # The exact cost is num / den (int true division rounds correctly).
        if kind == PER_GPU_HOUR:
            num = num_a * (
                (millis_of.get(product) or estimator.millis_on(product))
                if work_based
                else gpu_millis
            )
            need = count
        else:
            if kind == PER_TOKEN:
                num = tokens_in * num_a + tokens_out * num_b
            else:
                units = unit_cache.get(unit)
                if units is None:
                    units = unit_cache[unit] = units_per_request(task, unit)
                num = num_a * units * requests
            # Serverless endpoints take the job as one request stream, not as whole GPUs.
            need = 1
        cost = num / den

        if gate is not None:
            reason = gate
        elif excluded and name in excluded:
            reason = "PreviouslyFailed"
        elif check_providers and (
            (allowed_providers is not None and provider not in allowed_providers)
            or (selector is not None and not selector.matches(offer.labels))
        ):
            reason = "ProviderNotAllowed"
        elif (tasks is not None and task not in tasks) or (kind == PER_TOKEN and not is_llm):
            reason = "TaskNotSupported"
        elif kind == PER_TOKEN and served_model is not None and served_model != model:
            reason = "ModelNotServed"
        # A token endpoint picks its own hardware: the job's GPU constraints do not apply.
        elif kind != PER_TOKEN and products is not None and product not in products:
            reason = "ProductNotAllowed"
        elif kind != PER_TOKEN and memory < min_mem:
            reason = "InsufficientMemory"
        elif need > (offer.max_gpus_per_job or need):
            reason = "TooFewGPUs"
        elif weights is not None and kind != PER_TOKEN and memory > 0 and memory * count < weights:
            reason = "ModelTooLarge"
        elif regions is not None and region not in regions:
            reason = "RegionNotAllowed"
        elif rank < min_rank:
            reason = "TrustTierTooLow"
        elif blocked is not None:
            reason = blocked
        elif ext_cap is not None and (
            usd > ext_cap
            if kind == PER_GPU_HOUR
            # The normalised price is over the cap exactly when the cost is over its cost.
            else cost > cap_cost_hi
            or (cost >= cap_cost_lo and money(entry, quantities)[0] > ext_cap)
        ):
            reason = "PriceCapExceeded"
        elif max_cost is not None and (
            cost > cost_hi or (cost >= cost_lo and money(entry, quantities)[1] > max_cost)
        ):
            reason = "MaxCostExceeded"
        elif available < need or saturated:
            reason = "NoCapacity" if available < need else "ConcurrencyLimit"
            blocked_cost = min(blocked_cost, cost)
        elif budget_left is not None and (
            cost > budget_hi or (cost >= budget_lo and money(entry, quantities)[1] > budget_left)
        ):
            reason = "BudgetExceeded"
        elif not spill_ok:
            reason = "BelowSpilloverThreshold"
        elif start > deadline:
            late.append((cost, wr * reliability, carbon, start_soft, start, name, pos, entry, True))
            continue
        else:
            feasible.append(
                (cost, wr * reliability, carbon, start_soft, start, name, pos, entry, True)
            )
            continue
        rejected.append((pos, entry, True, reason))

    passed_over = ""
    if scarce:
        feasible, passed_over = _pass_over_scarce(feasible, scarce, rejected, policy, snapshot)
    deferral = policy.deferral
    if deferral is not None and deadline == math.inf and (feasible or blocked_cost < math.inf):
        waited = 0.0 if created_at is None else (snapshot.now - created_at).total_seconds()
        patience = deferral.max_wait.total_seconds() - waited
        if patience > 0:
            cheapest = min([blocked_cost, *(c[0] for c in feasible)])
            limit = cheapest * (1 + deferral.max_premium_percent / 100) * (1 + _CLOSE)
            kept = [c for c in feasible if c[0] <= limit]
            if len(kept) < len(feasible):
                rejected.extend((c[6], c[7], c[8], DEFERRED) for c in feasible if c[0] > limit)
                if not kept:
                    return _deferred(
                        rejected, policy, quantities, limit, patience, deferral.max_premium_percent
                    )
                feasible = kept
    if feasible:
        rejected.extend((c[6], c[7], c[8], LATE) for c in late)
        return _conclude(feasible, rejected, False, policy, quantities, passed_over)
    if late:
        return _conclude(late, rejected, True, policy, quantities)
    return _no_target(
        [_candidate(src, ext, reason, quantities) for _, src, ext, reason in rejected],
        bool(rejected),
        policy,
        job,
        snapshot.inventory_final,
    )


def _pass_over_scarce(
    feasible: list[_Running],
    scarce: list[int],
    rejected: list[_Rejected],
    policy: RoutingPolicySpec,
    snapshot: Snapshot,
) -> tuple[list[_Running], str]:
    """Leave scarce pools to the jobs that can use only them, where this job has another place.

    A feasible pool is scarce for this job when taking it would leave fewer free GPUs than the
    pool keeps for jobs that can run nowhere else (``InClusterPool.reserved``). It is passed
    over (``ScarceProduct``) when a feasible place that is not scarce costs at most the
    policy's ``inCluster.scarcity.maxPremiumPercent`` more; the job takes it otherwise, so a
    job that can only run there, or whose other places are much dearer, is never held back.
    Returns the candidates kept and a note for the decision's message ("" when none passed).
    """
    premium = policy.in_cluster.scarcity.max_premium_percent
    if not premium:
        return feasible, ""
    marked = set(scarce)
    others = [c[0] for c in feasible if c[6] not in marked or c[8]]
    if not others:
        return feasible, ""
    alternative = min(others)
    # The same tolerance as deferral's limit: a float cost within 1e-9 of the limit is in.
    factor = (1 + premium / 100) * (1 + _CLOSE)
    passed = [c for c in feasible if c[6] in marked and not c[8] and alternative <= c[0] * factor]
    if not passed:
        return feasible, ""
    gone = {c[6] for c in passed}
    rejected.extend((c[6], c[7], c[8], SCARCE) for c in passed)
    kept_for = {p.gpu_product: p.reserved for p in snapshot.pools}
    note = "; passed over for scarcity: " + ", ".join(
        f"{c[5]} (keeps {kept_for[c[7][3]]} GPUs for jobs that can run only there)" for c in passed
    )
    return [c for c in feasible if c[6] not in gone], note


def _deferred(
    rejected: list[_Rejected],
    policy: RoutingPolicySpec,
    job: JobQuantities,
    limit: float,
    patience: float,
    premium_percent: int,
) -> RoutingDecision:
    """Wait for one of the cheap places that lack capacity now, rather than take a dear one."""
    ranked = tuple(
        sorted(
            (_candidate(src, ext, why, job) for _, src, ext, why in rejected),
            key=lambda c: (is_permanent(c, policy), c.estimated_cost, c.name),
        )
    )
    awaited = tuple(
        c.name for c in ranked if c.reason in WAITABLE and float(c.estimated_cost) <= limit
    )
    best = next(c for c in ranked if c.name == awaited[0])
    message = (
        f"deferred for price: {best.name} would cost ${format_money(best.estimated_cost, 2)} "
        f"but is {best.reason}; nothing free now is within {premium_percent}% of it "
        f"(waiting up to {format_duration(timedelta(seconds=round(patience)))} more)"
    )
    retry = min(DEFERRAL_RECHECK_SECONDS, patience)
    return RoutingDecision("Wait", None, ranked, DEFERRED, message, retry, awaited)


def _bounds(limit: Decimal | None) -> tuple[float, float]:
    """Floats around a money limit beyond which a float comparison with it is certain."""
    if limit is None:
        return 0.0, 0.0
    value = float(limit)
    margin = abs(value) * _CLOSE
    return value - margin, value + margin


def _candidate(
    source: _Raw | OfferFacts,
    external: bool,
    reason: str,
    job: JobQuantities,
    score: float | None = None,
) -> ScoredCandidate:
    """The reported candidate, with its Decimal price and cost."""
    feasible = score is not None
    if not external:
        raw: _Raw = source  # type: ignore[assignment]
        estimate = job.estimate_label(raw[3])
        return _new(ScoredCandidate, (*raw[:7], score, feasible, reason, None, estimate))
    facts: OfferFacts = source  # type: ignore[assignment]
    price, cost = money(facts, job)
    kind = facts[4]
    estimate = (
        job.estimate_label(facts[3])
        if kind == PER_GPU_HOUR
        else "PerToken"
        if kind == PER_TOKEN
        else "PerUnit"
    )
    return _new(
        ScoredCandidate,
        (
            facts[1],
            "External",
            facts[2],
            facts[3],
            price,
            cost,
            facts[15],
            score,
            feasible,
            reason,
            facts[0],
            estimate,
        ),
    )


def _seconds_to_deadline(
    job: InferenceJobSpec, now: datetime, created_at: datetime | None
) -> float:
    if job.start_within is None:
        return math.inf
    if created_at is None:
        return job.start_within.total_seconds()
    return (created_at + job.start_within - now).total_seconds()


def _queue_wait(
    count: int,
    busy: tuple[int, int, int],
    releases: tuple[float, ...],
    node_ready: tuple[float, ...],
    max_queue: float,
) -> float:
    """Expected seconds until ``count`` GPUs of a pool are free for this job (FIFO), and on
    one node: never sooner than one node is expected to have them (``node_ready``).

    ``busy`` is the pool's (in use + queued, queued, free) GPUs.
    """
    _, queued, free = busy
    # GPUs that must come back first: those the queue ahead wants, plus ours, minus free ones.
    needed = queued + count - free
    if needed <= 0:
        needed = 1  # free in total but fragmented across nodes: wait for the next release
    if needed <= len(releases):
        wait = float(releases[needed - 1])
        if count <= len(node_ready) and node_ready[count - 1] > wait:
            # Two GPUs back on two nodes are not two GPUs on one: on the default replay 2-GPU
            # jobs told "about 2 minutes" waited for their queue timeout (BENCHMARKS.md).
            ready = node_ready[count - 1]
            return max_queue if math.isinf(ready) else float(ready)
        return wait
    # Beyond the known releases (a queue wanting more than every GPU in use gives back, as on
    # gpuspec33's 2-GPU P100 pool) the wait is unknown and taken as maxQueueTime. Waiting past
    # the last release instead changed the default trace (BENCHMARKS.md, 2026-12-03).
    return max_queue


_MEMORY: dict[str, int] = {}


def _min_memory_bytes(quantity: str | None) -> int:
    """``gpu.minMemory`` in bytes, parsed once per distinct string."""
    if not quantity:
        return 0
    parsed = _MEMORY.get(quantity)
    if parsed is None:
        parsed = parse_quantity(quantity)
        if len(_MEMORY) < 4096:  # jobs use a handful of sizes; stay bounded whatever they send
            _MEMORY[quantity] = parsed
    return parsed


def _conclude(
    running: list[_Running],
    rejected: list[_Rejected],
    late: bool,
    policy: RoutingPolicySpec,
    job: JobQuantities,
    note: str = "",
) -> RoutingDecision:
    """Score the candidates in the running and choose; the full ranking is built on demand.

    ``note`` ends the message (places passed over for scarcity)."""
    scores, first, cheapest, fastest = _score(running, _weights(policy))
    best = running[first]
    label = LATE if late else FEASIBLE
    target = _candidate(best[7], best[8], label, job, scores[first])
    if late:
        reason = "StartWithinUnattainable"
    elif best[0] == cheapest:
        reason = "CheapestFeasible"
    elif best[4] == fastest:
        reason = "FastestStart"
    else:
        reason = "BestScore"
    message = (
        f"routed to {target.name}: estimated ${format_money(target.estimated_cost, 2)}, "
        f"start in ~{target.expected_start_seconds:.0f}s ({reason}; "
        f"{len(running)} feasible of {len(running) + len(rejected)}){note}"
    )

    def ranked(limit: int | None) -> tuple[ScoredCandidate, ...]:
        # Best score first; ties to the lower cost, the earlier start, then the name. The index
        # last makes full ties compare as ints, never as offers.
        order = sorted(
            (-score, c[0], c[4], c[5], i)
            for i, (score, c) in enumerate(zip(scores, running, strict=True))
        )
        wanted = len(running) + len(rejected) if limit is None else limit
        scored = [target]
        for _, _, _, _, i in order[1:wanted]:
            c = running[i]
            scored.append(_candidate(c[7], c[8], label, job, scores[i]))
        if len(scored) < wanted and rejected:
            others = [(pos, _candidate(src, ext, why, job)) for pos, src, ext, why in rejected]
            # The judging position last reproduces a stable sort of them in judging order.
            others.sort(
                key=lambda pc: (
                    _permanent(pc[1].reason, pc[1].backend, policy),
                    pc[1].estimated_cost,
                    pc[1].name,
                    pc[0],
                )
            )
            scored.extend(c for _, c in others[: wanted - len(scored)])
        return tuple(scored[:wanted])

    return RoutingDecision("Routed", target, ranked, reason, message, None)


def _score(
    running: list[_Running], weights: tuple[float, float, float, float]
) -> tuple[list[float], int, float, float]:
    """Score candidates in 0..1; also the best one's index, the lowest cost and start.

    Each term is the best value among the candidates over this one's, which keeps the terms
    monotone: raising one candidate's cost lowers its own price term and can only raise the
    others'. The best has the highest score; ties go to the lower cost, the earlier start,
    then the name (then the first judged). The reliability term comes weighted already.
    """
    wp, wl, _, wc = weights
    min_cost = min([c[0] for c in running])
    fastest = min([c[4] for c in running])
    # Products kept in the order (w * x) / y of the terms, so the values do not change.
    latency_top = wl * (fastest + LATENCY_SOFTENING_SECONDS)
    min_carbon = 0
    carbon_top = 0.0
    if wc:
        carbons = [c[2] for c in running if c[2]]
        min_carbon = min(carbons) if carbons else 0
        carbon_top = wc * float(min_carbon)
    neutral = wc * NEUTRAL_CARBON_TERM
    scores: list[float] = []
    append = scores.append
    top = -math.inf
    first = 0
    for i, (cost, reliable, intensity, start_soft, _, _, _, _, _) in enumerate(running):
        score = wp * (1.0 if cost <= min_cost else min_cost / cost) + latency_top / start_soft
        score += reliable
        if wc:
            if intensity is None:
                score += neutral
            elif intensity <= min_carbon:
                score += wc
            else:
                score += carbon_top / intensity
        append(score)
        if score > top or (score == top and _before(running[i], running[first])):
            top = score
            first = i
    return scores, first, min_cost, fastest


def _weights(policy: RoutingPolicySpec) -> tuple[float, float, float, float]:
    """The policy's weights as shares of their sum: price, latency, reliability, carbon."""
    w = policy.weights
    total = w.price + w.latency + w.reliability + w.carbon
    return w.price / total, w.latency / total, w.reliability / total, w.carbon / total


def _before(a: _Running, b: _Running) -> bool:
    """Whether ``a`` wins a tie of scores with ``b`` (lower cost, earlier start, name)."""
    return (a[0], a[4], a[5]) < (b[0], b[4], b[5])


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


def _routes_closed(job: InferenceJobSpec, policy: RoutingPolicySpec) -> bool:
    """Whether the job's placement and the policy leave it no route at all, whatever exists."""
    in_cluster_closed = job.placement is Placement.EXTERNAL or not policy.in_cluster.enabled
    external_closed = job.placement is Placement.IN_CLUSTER or not policy.external.enabled
    return in_cluster_closed and external_closed


def _no_target(
    candidates: list[ScoredCandidate],
    any_candidates: bool,
    policy: RoutingPolicySpec,
    job: InferenceJobSpec,
    inventory_final: bool,
) -> RoutingDecision:
    ranked = tuple(
        sorted(candidates, key=lambda c: (is_permanent(c, policy), c.estimated_cost, c.name))
    )
    transient = [c for c in ranked if not is_permanent(c, policy)]
    if not any_candidates:
        # Offers can still load, or (live) nodes be added.
        if policy.external.enabled or not (inventory_final or _routes_closed(job, policy)):
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
        budget_rejects = any(c.reason == "BudgetExceeded" for c in ranked)
        if budget_rejects:
            reason = "BudgetExceeded"
        if budget_rejects or inventory_final or _routes_closed(job, policy):
            return RoutingDecision(
                "Rejected",
                None,
                ranked,
                reason,
                f"no candidate can ever take the job: {summary}",
                None,
            )
        # Every GPU here now is ruled out for good, but nodes and providers can be added.
        return RoutingDecision(
            "Wait",
            None,
            ranked,
            "NoMatchingCapacity",
            f"nothing here can take the job until matching GPUs are added: {summary}",
            RETRY_SECONDS["NoMatchingCapacity"],
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
