"""What the engine needs of each external offer and pool, precomputed once per snapshot.

Everything here depends on the offer or pool alone (never on the job or the policy), so a
table built for one decision stays valid for every later decision against the same immutable
snapshot.
Prices are kept twice: as the offer's Decimals, which the reported candidates are computed
from exactly as ``cost.estimate_cost`` would, and as exact integer ratios, from which the
engine's inner loop derives correctly rounded float costs for scoring without any Decimal
arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Generic, NamedTuple, TypeVar

from hybridgpu.api.computeprovider import TrustTier
from hybridgpu.api.inferencejob import Task
from hybridgpu.routing.cost import MILLION, MILLIS_PER_HOUR, units_per_request
from hybridgpu.routing.decision import IN_CLUSTER
from hybridgpu.routing.snapshot import (
    ExternalOffer,
    InClusterPool,
    PerGPUHour,
    PerToken,
    PerUnit,
    Pricing,
    Snapshot,
)
from hybridgpu.routing.work import DURATION, Estimate, Estimator

LATENCY_SOFTENING_SECONDS = 30.0
"""Added to start times before taking ratios, so 0 s and 1 s are not worlds apart."""
MODEL_LABEL = "hybridgpu.dev/model"
"""Label of a token-priced offer naming the model it serves (see networks/openai_compat.py)."""

PER_GPU_HOUR = 0
PER_TOKEN = 1
PER_UNIT = 2
TRUST_RANK = {tier: rank for rank, tier in enumerate(TrustTier)}
_ZERO = Decimal(0)

OfferFacts = tuple[
    ExternalOffer,  # 0 offer
    str,  # 1 candidate name
    str,  # 2 provider
    str,  # 3 product
    int,  # 4 kind: PER_GPU_HOUR, PER_TOKEN or PER_UNIT
    int,  # 5 numerator of the (first) price
    int,  # 6 numerator of the output-token price (0 otherwise)
    int,  # 7 common denominator: USD = numerator / denominator, per-hour/million folded in
    str,  # 8 unit of a PerUnit price ("" otherwise)
    int,  # 9 memory bytes
    str,  # 10 region
    int,  # 11 trust rank
    str | None,  # 12 ProviderPaused / CircuitOpen, else None
    int,  # 13 GPUs available
    bool,  # 14 concurrency limit reached
    float,  # 15 start latency seconds
    float,  # 16 reliability: 1 - error rate
    int | None,  # 17 carbon intensity
    frozenset[str] | None,  # 18 tasks
    str | None,  # 19 model served (token endpoints)
    Decimal,  # 20 price per GPU-hour of a PerGPUHour offer (0 otherwise)
    float,  # 21 start latency + LATENCY_SOFTENING_SECONDS (the score's denominator)
]


class JobQuantities(NamedTuple):
    """What an offer's cost depends on, of one job."""

    task: Task
    gpu_millis: int
    tokens_in: int
    tokens_out: int
    requests: int
    estimator: Estimator | None = None
    """GPU time per product for hour-priced offers (work-based); None: ``gpu_millis``."""

    def millis_on(self, product: str) -> int:
        """GPU-milliseconds the job takes on ``product``."""
        if self.estimator is None:
            return self.gpu_millis
        return self.estimator.for_product(product).gpu_millis

    def estimate_label(self, product: str) -> str:
        """What a GPU-hour cost on ``product`` rests on (for the candidate table)."""
        if self.estimator is None:
            return Estimate(self.gpu_millis, DURATION).label
        return self.estimator.for_product(product).label


PoolFacts = tuple[
    str,  # candidate name
    str,  # product
    int,  # memory bytes
    int,  # allocatable GPUs
    int | None,  # GPUs of the biggest node
    tuple[int, int, int],  # GPUs in use + queued, queued, free
    int,  # the most GPUs a job may ask for and start now (0 when the queue is not empty)
    tuple[float, ...],  # release times
    int,  # GPUs left out for DCGM faults
    float | None,  # GPUs measured busy by DCGM (None: no telemetry)
    int,  # GPUs kept for jobs that can use only this pool (scarcity)
    tuple[float, ...],  # seconds until one node has g GPUs free, at index g - 1
]


def pool_facts(snapshot: Snapshot) -> tuple[PoolFacts, ...]:
    """The snapshot's in-cluster pool table, built on first use and then kept on the snapshot."""
    table: tuple[PoolFacts, ...] | None = snapshot.pool_facts
    if table is None:
        table = tuple(_pool(pool) for pool in snapshot.pools)
        object.__setattr__(snapshot, "pool_facts", table)
    return table


def free_to_start(free: int, queued: int, max_free_per_node: int | None) -> int:
    """GPUs of a pool a job arriving now can start on at once: free on one node beyond those
    the queue ahead of it takes (Pods created a moment ago and not bound yet are a queue that
    fits). The engine's estimate, the admission queue's wake and the replay's placement all
    count it so."""
    start_now = max(free - queued, 0)
    if max_free_per_node is not None:
        start_now = min(start_now, max_free_per_node)
    return start_now


def _pool(pool: InClusterPool) -> PoolFacts:
    free = pool.free
    start_now = free_to_start(free, pool.queued, pool.max_free_per_node)
    return (
        f"{IN_CLUSTER}/{pool.gpu_product}",
        pool.gpu_product,
        pool.memory_bytes,
        pool.allocatable,
        pool.max_gpus_per_node,
        (pool.in_use + pool.queued, pool.queued, free),
        start_now,
        pool.release_seconds,
        pool.unhealthy_gpus,
        pool.measured_busy,
        pool.reserved,
        pool.node_ready_seconds,
    )


def node_ready_seconds(
    nodes: Iterable[tuple[int, Sequence[float]]], biggest: int, now: float = 0.0
) -> tuple[float, ...]:
    """For ``g`` = 1 .. ``biggest``: the seconds after ``now`` until one of ``nodes`` has ``g``
    GPUs free, each node given as (GPUs free now, when each of its GPUs in use comes back,
    ascending, on the clock of ``now``); ``inf`` where no node's known releases get there.
    The pools' table (``inventory.pools``, in seconds from now) and the replay (on its
    virtual clock) both build it so."""
    ready = [math.inf] * biggest
    for free, ends in nodes:
        if free >= biggest:
            return (0.0,) * biggest  # an idle node of the biggest size: any job fits now
        ready[:free] = [0.0] * free
        for g, end in enumerate(ends[: biggest - free], start=free):
            ready[g] = min(ready[g], max(end - now, 0.0))
    return tuple(ready)


def offer_facts(snapshot: Snapshot) -> tuple[OfferFacts, ...]:
    """The snapshot's offer table, built on first use and then kept on the snapshot."""
    table: tuple[OfferFacts, ...] | None = snapshot.offer_facts
    if table is None:
        table = tuple(_offer_row(offer) for offer in snapshot.offers)
        # The snapshot is frozen for its users; this memo is not part of its value.
        object.__setattr__(snapshot, "offer_facts", table)
    return table


_PriceFacts = tuple[int, int, int, int, str, Decimal]
K = TypeVar("K")
V = TypeVar("V")


class _ByIdentity(Generic[K, V]):
    """``build(key)`` memoised by the key object's identity: snapshots built one after another
    share their offers' pricing objects, and a replay hands the engine the same offer object
    while its capacity is unchanged. Each entry keeps its key alive, which keeps its id safe."""

    def __init__(self, build: Callable[[K], V], limit: int) -> None:
        self._build = build
        self._limit = limit
        self._memo: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        hit = self._memo.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1]
        value = self._build(key)
        if len(self._memo) >= self._limit:
            self._memo.clear()
        self._memo[id(key)] = (key, value)
        return value


def _price_facts_of(pricing: Pricing) -> _PriceFacts:
    """Kind, numerators, denominator, unit and GPU-hour price of a pricing."""
    unit = ""
    num_b = 0
    usd = _ZERO
    if isinstance(pricing, PerGPUHour):
        kind = PER_GPU_HOUR
        usd = pricing.usd
        num_a, den = usd.as_integer_ratio()
        den *= int(MILLIS_PER_HOUR)  # numerator * gpu_millis / den is the job's cost
    elif isinstance(pricing, PerToken):
        kind = PER_TOKEN
        n_in, d_in = pricing.input_usd_per_million.as_integer_ratio()
        n_out, d_out = pricing.output_usd_per_million.as_integer_ratio()
        num_a, num_b, den = n_in * d_out, n_out * d_in, d_in * d_out * int(MILLION)
    else:
        kind = PER_UNIT
        num_a, den = pricing.usd_per_unit.as_integer_ratio()
        unit = pricing.unit
    return (kind, num_a, num_b, den, unit, usd)


_price_facts = _ByIdentity(_price_facts_of, 65_536)


def _facts(offer: ExternalOffer) -> OfferFacts:
    kind, num_a, num_b, den, unit, usd = _price_facts(offer.pricing)
    blocked = "ProviderPaused" if offer.paused else "CircuitOpen" if offer.circuit_open else None
    return (
        offer,
        f"{offer.provider}/{offer.gpu_product}",
        offer.provider,
        offer.gpu_product,
        kind,
        num_a,
        num_b,
        den,
        unit,
        offer.memory_bytes,
        offer.region,
        TRUST_RANK[offer.trust_tier],
        blocked,
        offer.available,
        offer.active_jobs >= offer.max_concurrent_jobs,
        offer.start_latency_seconds,
        1.0 - offer.error_rate,
        offer.carbon_intensity,
        offer.tasks,
        offer.labels.get(MODEL_LABEL),
        usd,
        offer.start_latency_seconds + LATENCY_SOFTENING_SECONDS,
    )


_offer_row = _ByIdentity(_facts, 4_096)


def money(facts: OfferFacts, job: JobQuantities) -> tuple[Decimal, Decimal]:
    """Price per GPU-hour and cost of the job at this offer, in Decimal, as ``cost`` computes
    them (same operations in the same order, so the same roundings)."""
    pricing = facts[0].pricing
    kind = facts[4]
    gpu_millis = job.gpu_millis
    if kind == PER_GPU_HOUR:
        gpu_millis = job.millis_on(facts[3])
        usd = facts[20]
        return usd, usd * gpu_millis / MILLIS_PER_HOUR
    if kind == PER_TOKEN:
        tokens: PerToken = pricing  # type: ignore[assignment]
        cost = (
            job.tokens_in * tokens.input_usd_per_million
            + job.tokens_out * tokens.output_usd_per_million
        ) / MILLION
    else:
        units: PerUnit = pricing  # type: ignore[assignment]
        cost = units.usd_per_unit * units_per_request(job.task, units.unit) * job.requests
    if gpu_millis <= 0:
        return cost, cost
    return cost * MILLIS_PER_HOUR / gpu_millis, cost
