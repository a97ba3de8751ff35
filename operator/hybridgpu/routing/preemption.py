"""Which preemptible attempts a job may evict from the cluster's GPUs, and whether it should.

Kueue's rule, on plain data: only work that ranks strictly lower may be evicted; candidates
are taken lowest rank first and, within a rank, most recently started first (the least work
lost); the set is then trimmed of any victim the job does not need after all. A job's GPUs
share one node, so the GPUs freed must be on one node (``Place``). The operator's admission
loop and the simulator call the same functions; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hybridgpu.routing.decision import ScoredCandidate

SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class Running:
    """One preemptible attempt holding the cluster's GPUs."""

    uid: str
    gpu_product: str
    node: str
    """Where its GPUs are ("" when the caller does not know nodes: any one place per product)."""
    gpus: int
    rank: int
    """Higher is more important (see :func:`rank`)."""
    running_seconds: float
    """How long it has run: the work lost on eviction is at most the time since its last
    checkpoint, which is at most this."""
    ends_in_seconds: float | None = None
    """When it is expected to end by itself (start + estimatedDuration - now); None: unknown."""


@dataclass(frozen=True, slots=True)
class Place:
    """Free GPUs of one node (or of one product, with node "")."""

    gpu_product: str
    node: str
    free: int


@dataclass(frozen=True, slots=True)
class Eviction:
    """What to evict so that a job of ``gpus`` GPUs can start on ``gpu_product`` now."""

    gpu_product: str
    node: str
    victims: tuple[str, ...]
    lost_gpu_seconds: float
    """GPU-seconds of the victims' work since their last checkpoint, at most."""


def rank(priority: int, latency_sensitive: bool) -> int:
    """One number to compare jobs by: the policy's priority first; within a priority a job with
    a startWithin outranks best-effort work."""
    return 2 * priority + (1 if latency_sensitive else 0)


def _lost(victim: Running, checkpoint_seconds: float | None) -> float:
    since = victim.running_seconds
    if checkpoint_seconds is not None:
        since = min(since, checkpoint_seconds)
    return victim.gpus * max(since, 0.0)


def choose_victims(
    *,
    gpus: int,
    job_rank: int,
    products: Collection[str] | None,
    places: Iterable[Place],
    running: Sequence[Running],
    checkpoint_seconds: float | None = None,
    spare_ending_within: float | None = None,
) -> Eviction | None:
    """The cheapest eviction that lets a ``gpus``-GPU job of ``job_rank`` start now on one of
    ``products`` (None: any), or None when no set of lower-ranked work frees enough on one
    place. ``checkpoint_seconds`` bounds the work a victim loses (its checkpoint interval).
    Among the places that can be freed, the one losing the fewest GPU-seconds wins, then the
    fewest victims; a place with enough free GPUs already needs no eviction and is not
    considered (the engine would have placed the job there). Work expected to end within
    ``spare_ending_within`` seconds is spared: its GPUs come free in time anyway, for the job
    or for one queued ahead of it, and evicting it would only lose its work."""
    by_place: dict[tuple[str, str], list[Running]] = {}
    for r in running:
        if _ends_by(r, spare_ending_within):
            continue
        if r.rank < job_rank and (products is None or r.gpu_product in products):
            by_place.setdefault((r.gpu_product, r.node), []).append(r)
    best: Eviction | None = None
    for place in places:
        if products is not None and place.gpu_product not in products:
            continue
        short = gpus - place.free
        if short <= 0:
            continue
        pool = by_place.get((place.gpu_product, place.node), [])
        picked = _pick(pool, short)
        if picked is None:
            continue
        lost = sum(_lost(v, checkpoint_seconds) for v in picked)
        option = Eviction(place.gpu_product, place.node, tuple(v.uid for v in picked), lost)
        if best is None or (option.lost_gpu_seconds, len(option.victims)) < (
            best.lost_gpu_seconds,
            len(best.victims),
        ):
            best = option
    return best


def _ends_by(victim: Running, seconds: float | None) -> bool:
    ends = victim.ends_in_seconds
    return seconds is not None and ends is not None and ends <= seconds


def _pick(pool: Sequence[Running], short: int) -> list[Running] | None:
    ordered = sorted(pool, key=lambda r: (r.rank, r.running_seconds, r.uid))
    picked: list[Running] = []
    freed = 0
    for victim in ordered:
        if freed >= short:
            break
        picked.append(victim)
        freed += victim.gpus
    if freed < short:
        return None
    # Kueue's second pass: drop, latest-picked first, any victim the job can do without.
    for victim in reversed(list(picked)):
        if freed - victim.gpus >= short:
            picked.remove(victim)
            freed -= victim.gpus
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
) -> Eviction | None:
    """What a job should evict, given the engine's answer for it (``target``: None when it was
    told to wait or rejected): nothing for best-effort work (``deadline_seconds`` None) or
    when the answer already starts it in the cluster in time; otherwise the cheapest eviction
    that lets it start now, if :func:`worth_preempting` against an answer that is on time
    elsewhere, sparing work that ends before the deadline. ``prices`` are the in-cluster
    pools' prices per GPU-hour."""
    if deadline_seconds is None:
        return None
    on_time = target is not None and target.expected_start_seconds <= max(deadline_seconds, 0.0)
    if on_time and target is not None and target.backend == "InCluster":
        return None
    eviction = choose_victims(
        gpus=gpus,
        job_rank=job_rank,
        products=products,
        places=places,
        running=running,
        checkpoint_seconds=checkpoint_seconds,
        spare_ending_within=max(deadline_seconds, 0.0),
    )
    if eviction is None:
        return None
    price = prices.get(eviction.gpu_product)
    if price is None:
        return None
    worth = worth_preempting(
        on_time_cost=target.estimated_cost if on_time and target is not None else None,
        place_price_per_gpu_hour=price,
        gpus=gpus,
        runs_for_seconds=runs_for_seconds,
        lost_gpu_seconds=eviction.lost_gpu_seconds,
    )
    return eviction if worth else None
