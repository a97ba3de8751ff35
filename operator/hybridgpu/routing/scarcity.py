"""Which pools are scarce: the demand of jobs that can run on one pool and nowhere else.

An unconstrained job that takes the only pool some constrained jobs can use leaves them
nothing (gpuspec33: unconstrained pods that run for months on the 16-GPU Tesla-T4 pool, the
cheapest when they arrive, make the T4-only pods that come later late). The engine therefore
keeps a pool for the jobs that can use only it while any were seen recently
(``InClusterPool.reserved``), and a job that can go elsewhere at a modest premium passes the
pool over (``engine``, ``inCluster.scarcity``). Only the past is used, as the operator knows
no more: demand seen within a window, not the jobs to come. After the idea of
fragmentation-aware placement (Weng et al., "Beware of Fragmentation", ATC '23), which scores
a placement by the GPUs it makes unusable for the workload seen so far.

Pure: the operator feeds it from its job cache, the replay from its events.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from hybridgpu.routing.decision import ScoredCandidate
from hybridgpu.routing.snapshot import InClusterPool


def sole_pool(
    products: Iterable[str] | None,
    gpus: int,
    pools: Iterable[tuple[str, int]],
    offer_products: Iterable[str],
) -> str | None:
    """The one pool a job can run on, if it can run on no other pool nor on any offer.

    ``pools`` are (product, GPUs of the biggest node); ``offer_products`` the products the
    external offers have. A job without ``gpu.products`` accepts anything, so it has none.
    """
    if products is None:
        return None
    wanted = frozenset(products)
    if not wanted or any(p in wanted for p in offer_products):
        return None
    fitting = [product for product, biggest in pools if product in wanted and biggest >= gpus]
    return fitting[0] if len(fitting) == 1 else None


@dataclass(slots=True)
class SoleDemand:
    """GPUs held or wanted, over time, by the jobs that can use only one pool.

    ``change`` at each arrival (+GPUs), end or rejection (-GPUs) of such a job, in time order;
    ``peak`` is the most held or wanted at once from ``now - window`` to ``now``.
    """

    times: dict[str, list[float]] = field(default_factory=dict)
    levels: dict[str, list[int]] = field(default_factory=dict)

    def change(self, product: str, when: float, gpus: int) -> None:
        times = self.times.setdefault(product, [])
        levels = self.levels.setdefault(product, [])
        level = (levels[-1] if levels else 0) + gpus
        if times and times[-1] == when:
            levels[-1] = level  # several changes at one instant: only the last level held
        else:
            times.append(when)
            levels.append(level)

    def peak(self, product: str, now: float, window: float) -> int:
        times = self.times.get(product)
        if not times:
            return 0
        levels = self.levels[product]
        # The level holding at the window's start, then every level reached within it.
        first = max(bisect.bisect_right(times, now - window) - 1, 0)
        last = bisect.bisect_right(times, now)
        return max(levels[first:last], default=0)


def reserved_gpus(sole_peak: int, allocatable: int) -> int:
    """GPUs a pool keeps for jobs that can run only there: all of them, while such jobs held
    or wanted any within the window (``sole_peak`` > 0), else none.

    The whole pool rather than the recent peak: sole demand comes in bursts that the past
    does not size (gpuspec33: one Tesla-T4-only pod for 40 days, then 8 GPUs of them at once),
    and a flexible job that came in between holds the GPUs for months. With the peak, 89.99 %
    of latency-sensitive jobs started in time there; with the whole pool 96.76 % (BENCHMARKS).
    """
    return allocatable if sole_peak > 0 else 0


def sole_seen(
    jobs: Iterable[tuple[Iterable[str] | None, int, datetime | None]],
    pools: Iterable[InClusterPool],
    offer_products: Iterable[str],
    now: datetime,
) -> dict[str, datetime]:
    """Per pool product, when jobs that can run only there last held or wanted it (``now``
    while one is unfinished): the operator's view of :class:`SoleDemand`, from its jobs.

    ``jobs`` are (gpu.products, gpu.count, completion time or None while unfinished).
    """
    sizes = [(p.gpu_product, p.max_gpus_per_node or p.allocatable) for p in pools]
    offered = frozenset(offer_products)
    seen: dict[str, datetime] = {}
    for products, gpus, completed in jobs:
        product = sole_pool(products, gpus, sizes, offered)
        if product is None:
            continue
        when = min(completed, now) if completed is not None else now
        if product not in seen or when > seen[product]:
            seen[product] = when
    return seen


def reserve_pools(
    pools: tuple[InClusterPool, ...],
    seen: Mapping[str, datetime],
    now: datetime,
    window: timedelta,
) -> tuple[InClusterPool, ...]:
    """The pools with ``reserved`` set by :func:`reserved_gpus` from ``sole_seen``."""
    if not seen:
        return pools
    return tuple(
        replace(p, reserved=reserved_gpus(1, p.allocatable))
        if p.gpu_product in seen and now - seen[p.gpu_product] <= window
        else p
        for p in pools
    )


def kept_from(
    candidates: Iterable[ScoredCandidate],
    target: ScoredCandidate | None,
    on_time: bool,
    reserved: Mapping[str, int],
    premium_percent: int,
) -> frozenset[str]:
    """Products of the pools a job must not evict on: those kept for their sole demand
    (``reserved``), when the engine's answer starts the job in time elsewhere for at most
    ``premium_percent`` more than the pool would cost it.

    Eviction is the other way onto a pool: without this a job routed to a network for
    scarcity evicted best-effort work on the scarce pool instead, as that cost less
    (gpuspec33: 243 such evictions onto Tesla-T4 by jobs without a product constraint).
    """
    if not premium_percent or target is None or not on_time:
        return frozenset()
    factor = 1 + Decimal(premium_percent) / 100
    return frozenset(
        c.gpu_product
        for c in candidates
        if c.backend == "InCluster"
        and c.name != target.name
        and reserved.get(c.gpu_product, 0) > 0
        and target.estimated_cost <= c.estimated_cost * factor
    )
