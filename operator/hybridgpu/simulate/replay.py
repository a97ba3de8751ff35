"""A discrete-event replay of one workload under one router, with a virtual clock.

The cluster is modelled node by node (a job's GPUs share a node, best fit), each GPU product has
a FIFO queue that lets smaller jobs past a blocked head (Kueue's BestEffortFIFO), and external
offers have a capacity in GPUs. Durations are the trace's; they are also the jobs'
``estimatedDuration``, so the engine's cost estimates are exact (an oracle assumption).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from hybridgpu.routing.cost import gpu_hour_cost
from hybridgpu.routing.snapshot import InClusterPool
from hybridgpu.simulate.inputs import Node
from hybridgpu.simulate.market import MarketOffer
from hybridgpu.simulate.workload import SimJob, Workload

GIVE_UP_AFTER_SECONDS = 7 * 86400.0
"""A job still not started this long after the last arrival counts as unfinished."""
RELEASE_HINTS = 16
"""Extra release times handed to the engine beyond the GPUs the queue already wants."""
SAMPLES = 400
"""Points in the spend and utilisation time series."""
MONEY_QUANTUM = Decimal("1e-10")
WAKES_PER_RELEASE = 4
"""Waiting jobs routed again at most per release of capacity (the first that fit, FIFO)."""

ActionKind = Literal["start", "queue", "external", "wait", "reject"]


@dataclass(frozen=True, slots=True)
class Action:
    """What a router decided for a job: start or queue in a pool, go external, wait, reject."""

    kind: ActionKind
    target: str = ""
    """Pool product, or external offer name."""
    retry_seconds: float = 0.0
    recheck_seconds: float | None = None
    """For queue: if the job has not started this long after queueing, route it again."""
    awaiting: tuple[str, ...] = ()
    """For wait: places (pool products, offer names) whose freed capacity wakes the job early,
    as the operator wakes a job deferred for price."""


@dataclass(slots=True)
class PoolState:
    """The cluster's GPUs of one product, node by node."""

    product: str
    memory_bytes: int
    price: Decimal
    node_free: list[int]
    allocatable: int
    largest_node: int = 0
    """GPUs of the biggest node: a job needing more can never run here."""
    in_use: int = 0
    queued_gpus: int = 0
    queue: deque[int] = field(default_factory=deque)
    """Indexes of queued jobs, FIFO."""
    ends: list[float] = field(default_factory=list)
    """Expected release time of each GPU in use, ascending."""

    def fits_now(self, gpus: int) -> bool:
        """Whether ``gpus`` GPUs are free on one node right now."""
        return max(self.node_free, default=0) >= gpus

    def place(self, gpus: int, end: float) -> int:
        """Take ``gpus`` on the fullest node that fits (best fit); returns the node index."""
        best = -1
        for i, free in enumerate(self.node_free):
            if free >= gpus and (best < 0 or free < self.node_free[best]):
                best = i
        if best < 0:
            raise RuntimeError(f"no node of {self.product} has {gpus} free GPUs")
        self.node_free[best] -= gpus
        self.in_use += gpus
        for _ in range(gpus):
            bisect.insort(self.ends, end)
        return best

    def release(self, node: int, gpus: int, end: float) -> None:
        self.node_free[node] += gpus
        self.in_use -= gpus
        for _ in range(gpus):
            i = bisect.bisect_left(self.ends, end)
            del self.ends[i]

    def view(self, now: float) -> InClusterPool:
        """The pool as the routing engine sees it at ``now``."""
        hints = self.queued_gpus + RELEASE_HINTS
        return InClusterPool(
            gpu_product=self.product,
            memory_bytes=self.memory_bytes,
            allocatable=self.allocatable,
            in_use=self.in_use,
            queued=self.queued_gpus,
            max_free_per_node=max(self.node_free, default=0),
            max_gpus_per_node=self.largest_node,
            release_seconds=tuple(max(e - now, 0.0) for e in self.ends[:hints]),
        )


@dataclass(slots=True)
class OfferState:
    """An external offer and how much of it the replay uses now."""

    offer: MarketOffer
    in_use: int = 0
    active_jobs: int = 0


@dataclass(slots=True)
class JobRecord:
    """How one job fared."""

    job: SimJob
    deadline: float | None
    start: float | None = None
    backend: str = ""
    target: str = ""
    cost: Decimal = Decimal(0)
    rejected: str = ""


class Router(Protocol):
    """A placement strategy: a RoutingPolicy through the engine, or a baseline."""

    name: str

    def route(self, index: int, replay: Replay, now: float) -> Action:
        """Decide for job ``index`` at ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one replay."""

    policy: str
    total_cost: Decimal
    external_cost: Decimal
    jobs: int
    jobs_external: int
    slo_jobs: int
    slo_met: int
    p95_start_seconds: float
    unfinished: int
    spend_series: tuple[tuple[float, float], ...]
    utilisation_series: tuple[tuple[float, float], ...]

    @property
    def slo_attainment(self) -> float:
        """Share of jobs with a startWithin that started in time (1.0 when none had one)."""
        return self.slo_met / self.slo_jobs if self.slo_jobs else 1.0


class Replay:
    """The state of one replay: cluster, market, jobs and the event queue."""

    def __init__(
        self,
        workload: Workload,
        nodes: tuple[Node, ...],
        market: tuple[MarketOffer, ...],
        owned_prices: dict[str, Decimal],
        start_within: Callable[[SimJob], float | None],
    ) -> None:
        self.jobs = workload.jobs
        self.pools: dict[str, PoolState] = {}
        self.node_of: dict[int, tuple[str, int]] = {}
        for node in nodes:
            pool = self.pools.get(node.gpu_product)
            if pool is None:
                price = owned_prices.get(node.gpu_product)
                if price is None:
                    raise ValueError(
                        f"the price book has no in-cluster (owned) price for {node.gpu_product}"
                    )
                pool = self.pools[node.gpu_product] = PoolState(
                    node.gpu_product, node.memory_bytes, price, [], 0
                )
            pool.node_free.append(node.gpus)
            pool.allocatable += node.gpus
            pool.largest_node = max(pool.largest_node, node.gpus)
        self.total_gpus = sum(p.allocatable for p in self.pools.values())
        self.offers = {o.name: OfferState(o) for o in market}
        self.records = [JobRecord(j, start_within(j)) for j in self.jobs]
        self._events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._retry_seq: dict[int, int] = {}
        """The one retry event that is still due per waiting job; older ones are stale."""
        self._parked: dict[str, deque[int]] = {}
        """Jobs waiting for capacity at a place, by place, FIFO (entries may be stale)."""
        self._spend: list[tuple[float, Decimal]] = []
        self._busy: list[tuple[float, int]] = []

    # -- queries routers use ------------------------------------------------------------
    def allowed_pools(self, job: SimJob) -> list[PoolState]:
        """Pools whose product the job accepts and whose biggest node could hold it."""
        return [
            p
            for p in self.pools.values()
            if (job.products is None or p.product in job.products) and p.largest_node >= job.gpus
        ]

    def estimated_wait(self, pool: PoolState, gpus: int, now: float) -> float:
        """FIFO estimate of when ``gpus`` GPUs of ``pool`` are free for a newly queued job."""
        if not pool.queue and pool.fits_now(gpus):
            return 0.0
        needed = max(pool.queued_gpus + gpus - (pool.allocatable - pool.in_use), 1)
        if needed <= len(pool.ends):
            return max(pool.ends[needed - 1] - now, 0.0)
        return math.inf

    # -- the loop -----------------------------------------------------------------------
    def run(self, router: Router, progress: Callable[[int], None] | None = None) -> RunResult:
        """Replay every job under ``router``; ``progress`` is called with each arrival count."""
        for i, job in enumerate(self.jobs):
            self._push(job.arrival, 2, i)
        last_arrival = self.jobs[-1].arrival if self.jobs else 0.0
        give_up = last_arrival + GIVE_UP_AFTER_SECONDS
        arrived = 0
        while self._events:
            now, kind, seq, index = heapq.heappop(self._events)
            if kind == 0:
                product = self.node_of[index][0]
                self._finish_in_cluster(index, now)
                self._wake(product, router, now, give_up)
            elif kind == 1:
                self._finish_external(index)
                self._wake(self.records[index].target, router, now, give_up)
            elif kind == 4 and not self._dequeue(index):
                continue  # started meanwhile: nothing to re-route
            elif kind == 3 and self._retry_seq.pop(index, None) != seq:
                continue  # woken early and decided since: this retry is stale
            else:
                if kind == 2:
                    arrived += 1
                    if progress is not None and arrived % 256 == 0:
                        progress(arrived)
                rec = self.records[index]
                if now > give_up:
                    rec.rejected = "GaveUp"
                    continue
                self._apply(index, router.route(index, self, now), now)
        if progress is not None:
            progress(len(self.jobs))
        return self._result(router.name)

    def _push(self, when: float, kind: int, index: int) -> None:
        self._seq += 1
        # Finishes (kind 0, 1) sort before arrivals (2), retries (3) and queue rechecks (4).
        heapq.heappush(self._events, (when, kind, self._seq, index))

    def _wake(self, place: str, router: Router, now: float, give_up: float) -> None:
        """Route again the first jobs waiting for ``place`` that fit its free capacity now."""
        parked = self._parked.get(place)
        woken = 0
        while parked and woken < WAKES_PER_RELEASE:
            free = self._free_at(place)
            fitting = next(
                (i for i in parked if i in self._retry_seq and self.jobs[i].gpus <= free), None
            )
            if fitting is None:
                break
            parked.remove(fitting)
            del self._retry_seq[fitting]  # its timer is now stale
            woken += 1
            if now > give_up:
                self.records[fitting].rejected = "GaveUp"
                continue
            self._apply(fitting, router.route(fitting, self, now), now)
        if parked is not None:
            # Drop entries of jobs no longer waiting, so the scan above stays short.
            self._parked[place] = deque(i for i in parked if i in self._retry_seq)

    def _free_at(self, place: str) -> int:
        pool = self.pools.get(place)
        if pool is not None:
            return 0 if pool.queue else max(pool.node_free, default=0)
        state = self.offers[place]
        return state.offer.capacity - state.in_use

    def _apply(self, index: int, action: Action, now: float) -> None:
        rec = self.records[index]
        job = rec.job
        if action.kind in ("start", "queue"):
            # "start" asks for a free pool; if it is not free after all, the job queues.
            pool = self.pools[action.target]
            if not pool.queue and pool.fits_now(job.gpus):
                self._start_in_cluster(index, pool, now)
            else:
                pool.queue.append(index)
                pool.queued_gpus += job.gpus
                rec.target = pool.product
                if action.recheck_seconds is not None:
                    self._push(now + max(action.recheck_seconds, 1.0), 4, index)
        elif action.kind == "external":
            state = self.offers[action.target]
            offer = state.offer
            state.in_use += job.gpus
            state.active_jobs += 1
            start = now + offer.start_latency_seconds
            rec.start = start
            rec.backend = "External"
            rec.target = offer.name
            rec.cost = _cost(offer.usd_per_gpu_hour, job)
            self._spend.append((now, rec.cost))
            self._push(start + job.duration, 1, index)
        elif action.kind == "wait":
            self._push(now + max(action.retry_seconds, 1.0), 3, index)
            self._retry_seq[index] = self._seq
            for place in action.awaiting:
                self._parked.setdefault(place, deque()).append(index)
        else:
            rec.rejected = action.target or "Rejected"

    def _start_in_cluster(self, index: int, pool: PoolState, now: float) -> None:
        rec = self.records[index]
        job = rec.job
        end = now + job.duration
        node = pool.place(job.gpus, end)
        self.node_of[index] = (pool.product, node)
        rec.start = now
        rec.backend = "InCluster"
        rec.target = pool.product
        rec.cost = _cost(pool.price, job)
        self._spend.append((now, rec.cost))
        self._busy.append((now, job.gpus))
        self._push(end, 0, index)

    def _finish_in_cluster(self, index: int, now: float) -> None:
        product, node = self.node_of.pop(index)
        pool = self.pools[product]
        job = self.jobs[index]
        pool.release(node, job.gpus, now)
        self._busy.append((now, -job.gpus))
        if not pool.queue:
            return
        still: deque[int] = deque()
        while pool.queue:
            waiting = pool.queue.popleft()
            gpus = self.jobs[waiting].gpus
            if pool.fits_now(gpus):
                pool.queued_gpus -= gpus
                self._start_in_cluster(waiting, pool, now)
            else:
                still.append(waiting)
        pool.queue = still

    def _dequeue(self, index: int) -> bool:
        """Take a still-queued job out of its pool's queue; False if it has started."""
        rec = self.records[index]
        if rec.start is not None:
            return False
        pool = self.pools[rec.target]
        pool.queue.remove(index)
        pool.queued_gpus -= rec.job.gpus
        return True

    def _finish_external(self, index: int) -> None:
        rec = self.records[index]
        state = self.offers[rec.target]
        state.in_use -= rec.job.gpus
        state.active_jobs -= 1

    def _result(self, name: str) -> RunResult:
        started = [r for r in self.records if r.start is not None]
        delays = sorted(r.start - r.job.arrival for r in started if r.start is not None)
        p95 = delays[min(int(len(delays) * 0.95), len(delays) - 1)] if delays else 0.0
        slo = [r for r in self.records if r.deadline is not None]
        met = sum(
            1
            for r in slo
            if r.start is not None
            and r.deadline is not None
            and r.start - r.job.arrival <= r.deadline + 1e-9
        )
        external = [r for r in started if r.backend == "External"]
        return RunResult(
            policy=name,
            total_cost=sum((r.cost for r in started), Decimal(0)),
            external_cost=sum((r.cost for r in external), Decimal(0)),
            jobs=len(self.records),
            jobs_external=len(external),
            slo_jobs=len(slo),
            slo_met=met,
            p95_start_seconds=p95,
            unfinished=len(self.records) - len(started),
            spend_series=_cumulative(self._spend),
            utilisation_series=_utilisation(self._busy, self.total_gpus),
        )


def _cost(usd_per_gpu_hour: Decimal, job: SimJob) -> Decimal:
    # A ten-billionth of a dollar: exact sums over thousands of jobs, no 28-digit dust.
    cost = gpu_hour_cost(usd_per_gpu_hour, round(job.duration * 1000) * job.gpus)
    return cost.quantize(MONEY_QUANTUM)


def _cumulative(spend: list[tuple[float, Decimal]]) -> tuple[tuple[float, float], ...]:
    if not spend:
        return ()
    spend = sorted(spend, key=lambda s: s[0])
    step = max(len(spend) // SAMPLES, 1)
    total = Decimal(0)
    out: list[tuple[float, float]] = []
    for i, (when, cost) in enumerate(spend):
        total += cost
        if i % step == 0 or i == len(spend) - 1:
            out.append((when, float(total)))
    return tuple(out)


def _utilisation(busy: list[tuple[float, int]], total: int) -> tuple[tuple[float, float], ...]:
    if not busy or total == 0:
        return ()
    busy = sorted(busy, key=lambda b: b[0])
    step = max(len(busy) // SAMPLES, 1)
    level = 0
    out: list[tuple[float, float]] = []
    for i, (when, delta) in enumerate(busy):
        level += delta
        if i % step == 0 or i == len(busy) - 1:
            out.append((when, level / total))
    return tuple(out)
