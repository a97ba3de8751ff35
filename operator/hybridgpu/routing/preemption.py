"""Which preemptible attempts a job may evict, in the cluster or on a network, and whether it
should.

Kueue's rule, on plain data: only work that ranks strictly lower may be evicted; candidates
are taken lowest rank first and, within a rank, most recently started first (the least work
lost); the set is then trimmed of any victim the job does not need after all. A place
(``Place``) is either one node of the cluster (a job's GPUs share a node, so the GPUs freed
must be on one node) or one external offer: a network's capacity of one GPU product, and the
network's slots (its ``maxConcurrentJobs``), which every attempt there holds one of, whatever
its product. Work on a network is evicted only where that network's adapter can cancel it
(``cancellable``: data the caller passes, the rule knows no adapter). The operator's
admission loop and the simulator call the same functions; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hybridgpu.routing.decision import IN_CLUSTER as CANDIDATE_IN_CLUSTER
from hybridgpu.routing.decision import ScoredCandidate

SECONDS_PER_HOUR = Decimal(3600)
CAPACITY_REASONS = frozenset({"NoCapacity", "ConcurrencyLimit"})
"""Reasons an offer is turned down for capacity alone: freeing GPUs or a slot there helps."""
IN_CLUSTER = ""
"""The ``provider`` of in-cluster work and places."""


@dataclass(frozen=True, slots=True)
class Running:
    """One preemptible attempt holding GPUs: the cluster's, or a network offer's."""

    uid: str
    gpu_product: str
    node: str
    """Where its GPUs are ("" when the caller does not know nodes: any one place per product;
    always "" on a network, where the place is the offer)."""
    gpus: int
    rank: int
    """Higher is more important (see :func:`rank`)."""
    running_seconds: float
    """How long it has run: the work lost on eviction is at most the time since its last
    checkpoint, which is at most this."""
    ends_in_seconds: float | None = None
    """When it is expected to end by itself (start + estimatedDuration - now); None: unknown."""
    provider: str = IN_CLUSTER
    """The network (ComputeProvider) it runs on; "" in the cluster."""


@dataclass(frozen=True, slots=True)
class Place:
    """Free GPUs of one node (or of one product, with node ""), or of one network offer."""

    gpu_product: str
    node: str
    free: int
    provider: str = IN_CLUSTER
    """The network whose offer this is; "" for a node of the cluster."""
    slots: int | None = None
    """Free slots of the network (its maxConcurrentJobs less its attempts); None: no limit.
    The job takes one; an attempt evicted on any of the network's products frees one."""
    price_per_gpu_hour: Decimal | None = None
    """The job's price here; None: the in-cluster price of the product (``prices``)."""
    start_seconds: float = 0.0
    """Seconds until the job would run here once freed (a network's start latency)."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """What to evict so that a job of ``gpus`` GPUs can start on ``gpu_product`` now."""

    gpu_product: str
    node: str
    victims: tuple[str, ...]
    lost_gpu_seconds: float
    """GPU-seconds of the victims' work since their last checkpoint, at most."""
    provider: str = IN_CLUSTER
    """The network whose offer the victims free; "" in the cluster."""

    @property
    def external(self) -> bool:
        return self.provider != IN_CLUSTER

    @property
    def place(self) -> str:
        """The candidate name of what it frees: ``in-cluster/<product>`` or
        ``<provider>/<product>``."""
        provider = self.provider if self.external else CANDIDATE_IN_CLUSTER
        return f"{provider}/{self.gpu_product}"


def rank(priority: int, latency_sensitive: bool) -> int:
    """One number to compare jobs by: the policy's priority first; within a priority a job with
    a startWithin outranks best-effort work."""
    return 2 * priority + (1 if latency_sensitive else 0)


def _lost(victim: Running, checkpoint_seconds: float | None) -> float:
    since = victim.running_seconds
    if checkpoint_seconds is not None:
        since = min(since, checkpoint_seconds)
    return victim.gpus * max(since, 0.0)


def _options(
    *,
    gpus: int,
    job_rank: int,
    products: Collection[str] | None,
    places: Iterable[Place],
    running: Sequence[Running],
    checkpoint_seconds: float | None,
    spare_ending_within: float | None,
    cancellable: Collection[str],
) -> Iterator[tuple[Place, Eviction]]:
    """Every place that lower-ranked work can be evicted from to start the job, with the
    fewest victims Kueue's order gives there."""
    by_node: dict[tuple[str, str], list[Running]] = {}
    by_provider: dict[str, list[Running]] = {}
    for r in running:
        if _ends_by(r, spare_ending_within) or r.rank >= job_rank:
            continue
        if r.provider == IN_CLUSTER:
            if products is None or r.gpu_product in products:
                by_node.setdefault((r.gpu_product, r.node), []).append(r)
        elif r.provider in cancellable:
            # Any product: an attempt of another product still frees one of the slots.
            by_provider.setdefault(r.provider, []).append(r)
    for place in places:
        if products is not None and place.gpu_product not in products:
            continue
        short = max(gpus - place.free, 0)
        if place.provider == IN_CLUSTER:
            pool = by_node.get((place.gpu_product, place.node), [])
            slots_short = 0
        elif place.provider in cancellable:
            pool = by_provider.get(place.provider, [])
            slots_short = 0 if place.slots is None else max(1 - place.slots, 0)
        else:
            continue
        if short == 0 and slots_short == 0:
            continue  # room already: the engine would have placed the job there
        picked = _pick(pool, place, short, slots_short)
        if picked is None:
            continue
        lost = sum(_lost(v, checkpoint_seconds) for v in picked)
        yield (
            place,
            Eviction(
                place.gpu_product,
                place.node,
                tuple(v.uid for v in picked),
                lost,
                place.provider,
            ),
        )


def _better(option: Eviction, best: Eviction | None) -> bool:
    return best is None or (option.lost_gpu_seconds, len(option.victims)) < (
        best.lost_gpu_seconds,
        len(best.victims),
    )


def choose_victims(
    *,
    gpus: int,
    job_rank: int,
    products: Collection[str] | None,
    places: Iterable[Place],
    running: Sequence[Running],
    checkpoint_seconds: float | None = None,
    spare_ending_within: float | None = None,
    cancellable: Collection[str] = (),
) -> Eviction | None:
    """The cheapest eviction that lets a ``gpus``-GPU job of ``job_rank`` start now on one of
    ``products`` (None: any), or None when no set of lower-ranked work frees enough on one
    place. ``checkpoint_seconds`` bounds the work a victim loses (its checkpoint interval).
    Among the places that can be freed, the one losing the fewest GPU-seconds wins, then the
    fewest victims; a place with room already needs no eviction and is not considered (the
    engine would have placed the job there). Work expected to end within
    ``spare_ending_within`` seconds is spared: its GPUs come free in time anyway, for the job
    or for one queued ahead of it, and evicting it would only lose its work. Work on a
    network, and the network's places, count only for networks in ``cancellable``."""
    best: Eviction | None = None
    for _, option in _options(
        gpus=gpus,
        job_rank=job_rank,
        products=products,
        places=places,
        running=running,
        checkpoint_seconds=checkpoint_seconds,
        spare_ending_within=spare_ending_within,
        cancellable=cancellable,
    ):
        if _better(option, best):
            best = option
    return best


def _ends_by(victim: Running, seconds: float | None) -> bool:
    ends = victim.ends_in_seconds
    return seconds is not None and ends is not None and ends <= seconds


def _frees(victim: Running, place: Place) -> int:
    """GPUs of ``place`` that evicting ``victim`` frees (0: only a network slot)."""
    if victim.provider == IN_CLUSTER:
        return victim.gpus
    return victim.gpus if victim.gpu_product == place.gpu_product else 0


def _pick(pool: Sequence[Running], place: Place, short: int, slots: int) -> list[Running] | None:
    """Kueue's order over ``pool``: lowest rank, then newest, taking each victim that frees
    something still short (GPUs of the place, or one network slot), then trimmed."""
    ordered = sorted(pool, key=lambda r: (r.rank, r.running_seconds, r.uid))
    picked: list[Running] = []
    freed = 0
    for victim in ordered:
        if freed >= short and len(picked) >= slots:
            break
        gives = _frees(victim, place)
        if (gives and freed < short) or len(picked) < slots:
            picked.append(victim)
            freed += gives
    if freed < short or len(picked) < slots:
        return None
    # Kueue's second pass: drop, latest-picked first, any victim the job can do without.
    for victim in reversed(list(picked)):
        if freed - _frees(victim, place) >= short and len(picked) - 1 >= slots:
            picked.remove(victim)
            freed -= _frees(victim, place)
    return picked


def worth_preempting(
    *,
    on_time_cost: Decimal | None,
    place_price_per_gpu_hour: Decimal,
    gpus: int,
    runs_for_seconds: float,
    lost_gpu_seconds: float,
) -> bool:
    """Whether evicting beats the engine's own answer: always when nothing starts the job in
    time (``on_time_cost`` None); otherwise only when running it in the freed place, plus the
    victims' lost work at that place's price, costs less than the on-time alternative."""
    if on_time_cost is None:
        return True
    gpu_seconds = Decimal(gpus) * Decimal(str(runs_for_seconds)) + Decimal(str(lost_gpu_seconds))
    return place_price_per_gpu_hour * gpu_seconds / SECONDS_PER_HOUR < on_time_cost


def plan_eviction(
    *,
    target: ScoredCandidate | None,
    deadline_seconds: float | None,
    gpus: int,
    runs_for_seconds: float,
    job_rank: int,
    products: Collection[str] | None,
    prices: Mapping[str, Decimal],
    places: Iterable[Place],
    running: Sequence[Running],
    checkpoint_seconds: float | None = None,
    cancellable: Collection[str] = (),
    kept: Collection[str] = (),
) -> Eviction | None:
    """What a job should evict, given the engine's answer for it (``target``: None when it was
    told to wait or rejected): nothing for best-effort work (``deadline_seconds`` None), for a
    job already past its deadline (``deadline_seconds`` <= 0: no eviction can start it in time
    any more, and work lost for it buys no SLO), or when the answer already starts it in the
    cluster in time; otherwise, of the evictions
    that let it start in time (a network's place only if its start latency is within the
    deadline) and are :func:`worth_preempting` against an answer on time elsewhere, the one
    losing the least work, sparing work that ends before the deadline. ``prices`` are the
    in-cluster pools' prices per GPU-hour (a network's place carries its own). ``kept``
    names in-cluster products the scarcity rule keeps from this job
    (``routing.scarcity.kept_from``): no eviction there."""
    if deadline_seconds is None or deadline_seconds <= 0:
        # Evicting for a late job made later arrivals late too (gpuspec33, BENCHMARKS.md).
        return None
    left = deadline_seconds
    on_time = target is not None and target.expected_start_seconds <= left
    if on_time and target is not None and target.backend == "InCluster":
        return None
    on_time_cost = target.estimated_cost if on_time and target is not None else None
    best: Eviction | None = None
    for place, option in _options(
        gpus=gpus,
        job_rank=job_rank,
        products=products,
        places=[
            p
            for p in places
            if (p.start_seconds <= left if p.provider != IN_CLUSTER else p.gpu_product not in kept)
        ],
        running=running,
        checkpoint_seconds=checkpoint_seconds,
        spare_ending_within=left,
        cancellable=cancellable,
    ):
        price = (
            place.price_per_gpu_hour
            if place.price_per_gpu_hour is not None
            else prices.get(place.gpu_product)
        )
        if price is None or not _better(option, best):
            continue
        if worth_preempting(
            on_time_cost=on_time_cost,
            place_price_per_gpu_hour=price,
            gpus=gpus,
            runs_for_seconds=runs_for_seconds,
            lost_gpu_seconds=option.lost_gpu_seconds,
        ):
            best = option
    return best


def offer_worth_freeing(
    candidate: ScoredCandidate, can_cancel: bool, budget_left: Decimal | None
) -> bool:
    """Whether a network offer the engine turned down is a place to free by eviction (the
    operator's and the replay's test alike): turned down for capacity alone, on a network
    that can cancel, and the job's cost there fits ``budget_left`` (None: no budget). The
    engine checks capacity before the budget, so an offer full now may be one the budget
    refuses once freed: evicting for it would free GPUs the job never takes."""
    return (
        candidate.backend == "External"
        and candidate.reason in CAPACITY_REASONS
        and can_cancel
        and (budget_left is None or candidate.estimated_cost <= budget_left)
    )
