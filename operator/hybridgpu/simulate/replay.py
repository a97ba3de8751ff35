"""A discrete-event replay of one workload under one router, with a virtual clock.

Which jobs are decided when, and in which order, is the operator's admission queue
(``routing.admission``): at each instant the replay takes its events (arrivals, ends,
retries, queue rechecks), then runs admission cycles until the queue is empty, each job
decided by the router and applied before the next is decided (docs/simulate.md, "One
admission loop").

The cluster is modelled node by node (a job's GPUs share a node, best fit), each GPU product has
a FIFO queue that lets smaller jobs past a blocked head (Kueue's BestEffortFIFO), and external
offers have a capacity in GPUs. Durations are the trace's; they are also the jobs'
``estimatedDuration``, so the engine's cost estimates are exact (an oracle assumption).

A policy with ``spec.preemption`` lets a latency-sensitive job evict preemptible work, in the
cluster or on a network offer whose adapter can cancel, by ``routing.preemption`` (the
operator's rule): a victim stops, is billed for the GPU time it used, and is routed again with
the work since its last checkpoint to redo.
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

from hybridgpu.routing.admission import AdmissionQueue, Waiting, order_key, told_to_wait
from hybridgpu.routing.cost import gpu_hour_cost
from hybridgpu.routing.decision import IN_CLUSTER
from hybridgpu.routing.offerfacts import free_to_start, node_ready_seconds
from hybridgpu.routing.preemption import Eviction, Place, Running
from hybridgpu.routing.scarcity import SoleDemand, reserved_gpus, sole_pool
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
CYCLES_PER_INSTANT = 64
"""Admission cycles run at most at one instant (each woken by the one before: an eviction
requeues its victims, a preemptible start wakes evictors); the rest run a second later."""

ActionKind = Literal["start", "queue", "external", "wait", "reject", "preempt"]


@dataclass(frozen=True, slots=True)
class Action:
    """What a router decided for a job: start or queue in a pool, go external, wait, reject."""

    kind: ActionKind
    target: str = ""
    """Pool product, or external offer name."""
    retry_seconds: float = 0.0
    recheck_seconds: float | None = None
    """For queue: if the job has not started this long after queueing, route it again."""
    awaiting: frozenset[str] = frozenset()
    """For wait: candidate names (``in-cluster/<product>``, offer names) whose freed capacity
    wakes the job early (``routing.admission.wake_places``); empty: any release."""
    eviction: Eviction | None = None
    """For preempt: the victims to stop and the node (index as a string) to start the job on."""
    checkpoint_seconds: float = 0.0
    """For preempt: the victims checkpoint this often since their start (the policy's
    ``checkpointInterval``), so each loses its run time modulo this (0: all of it)."""


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
    node_ends: list[list[float]] = field(default_factory=list)
    """The same, node by node (index as in ``node_free``)."""

    def free_to_start(self) -> int:
        """GPUs a job arriving now starts on at once, as the engine counts them."""
        return free_to_start(
            self.allocatable - self.in_use, self.queued_gpus, max(self.node_free, default=0)
        )

    def fits_now(self, gpus: int) -> bool:
        """Whether ``gpus`` GPUs are free on one node right now."""
        return max(self.node_free, default=0) >= gpus

    def place(self, gpus: int, end: float, node: int | None = None) -> int:
        """Take ``gpus`` on ``node``, or else on the fullest node that fits (best fit); returns
        the node index."""
        best = -1
        if node is not None:
            best = node if self.node_free[node] >= gpus else -1
        else:
            for i, free in enumerate(self.node_free):
                if free >= gpus and (best < 0 or free < self.node_free[best]):
                    best = i
        if best < 0:
            raise RuntimeError(f"no node of {self.product} has {gpus} free GPUs")
        self.node_free[best] -= gpus
        self.in_use += gpus
        for _ in range(gpus):
            bisect.insort(self.ends, end)
            bisect.insort(self.node_ends[best], end)
        return best

    def release(self, node: int, gpus: int, end: float) -> None:
        self.node_free[node] += gpus
        self.in_use -= gpus
        on_node = self.node_ends[node]
        for _ in range(gpus):
            del self.ends[bisect.bisect_left(self.ends, end)]
            del on_node[bisect.bisect_left(on_node, end)]

    def view(self, now: float, reserved: int = 0) -> InClusterPool:
        """The pool as the routing engine sees it at ``now``, keeping ``reserved`` GPUs for
        jobs that can run only here."""
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
            node_ready_seconds=node_ready_seconds(
                zip(self.node_free, self.node_ends, strict=True), self.largest_node, now
            ),
            reserved=reserved,
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
    preemptible: bool = False
    start: float | None = None
    """When it first started (an evicted job keeps its first start)."""
    end: float | None = None
    backend: str = ""
    target: str = ""
    cost: Decimal = Decimal(0)
    external_cost: Decimal = Decimal(0)
    """The part of ``cost`` paid to networks (an evicted job may run on both)."""
    rejected: str = ""
    remaining: float = 0.0
    """Seconds of work still to run: the duration, less what evictions left checkpointed."""
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    """GPU-seconds run since the last checkpoint when evicted, run again later."""
    evicted_at: float | None = None
    """When it was last evicted: it queues from then (``controller.admission.queued_since``)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """A job running on the cluster's GPUs now."""

    product: str
    node: int
    start: float
    end: float
    seq: int
    """The sequence number of its finish event: an evicted attempt's finish is stale."""


@dataclass(frozen=True, slots=True)
class ExternalAttempt:
    """A job submitted to an external offer now (it runs once the start latency is over)."""

    offer: str
    start: float
    """When it runs: submission plus the offer's start latency."""
    end: float
    seq: int
    """The sequence number of its finish event: an evicted attempt's finish is stale."""


class Router(Protocol):
    """A placement strategy: a RoutingPolicy through the engine, or a baseline."""

    name: str

    @property
    def evicts(self) -> bool:
        """Whether a job with a startWithin may evict preemptible work (it is then woken when
        such work starts)."""
        ...

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
    best_effort_p95_start_seconds: float
    """Over started jobs without a startWithin, from arrival to their first start."""
    preemptions: int
    preempted_jobs: int
    lost_gpu_hours: float
    """GPU time of work evicted before its next checkpoint (run, billed, and run again)."""
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
        preemptible: Callable[[SimJob], bool] | None = None,
    ) -> None:
        self.jobs = workload.jobs
        self.pools: dict[str, PoolState] = {}
        self.attempts: dict[int, Attempt] = {}
        """In-cluster jobs running now, by job index."""
        self.external: dict[int, ExternalAttempt] = {}
        """Jobs on external offers now, by job index."""
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
            pool.node_ends.append([])
            pool.allocatable += node.gpus
            pool.largest_node = max(pool.largest_node, node.gpus)
        self.total_gpus = sum(p.allocatable for p in self.pools.values())
        self.offers = {o.name: OfferState(o) for o in market}
        self.records = [
            JobRecord(
                j, start_within(j), preemptible is not None and preemptible(j), remaining=j.duration
            )
            for j in self.jobs
        ]
        self._events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._retry_seq: dict[int, int] = {}
        """The one retry event that is still due per waiting job; older ones are stale."""
        self._recheck_seq: dict[int, int] = {}
        """The one queue recheck still due per queued job (an evicted job may queue again)."""
        self.queue: AdmissionQueue[int] = AdmissionQueue()
        """The operator's admission queue (``routing.admission``), keyed by job index."""
        self._preemptible_started = False
        """Preemptible work started since the last cycle: the waiting evictors are woken."""
        self._spend: list[tuple[float, Decimal]] = []
        self._busy: list[tuple[float, int]] = []
        pool_sizes = [(p.product, p.largest_node) for p in self.pools.values()]
        offer_products = {o.gpu_product for o in market}
        self._sole = [sole_pool(j.products, j.gpus, pool_sizes, offer_products) for j in self.jobs]
        """Per job, the one pool it can run on when it can run nowhere else (else None)."""
        self._sole_demand = SoleDemand()

    # -- queries routers use ------------------------------------------------------------
    def reserved(self, product: str, now: float, window: float) -> int:
        """GPUs of ``product`` to keep for jobs that can run only there (``routing.scarcity``):
        all of the pool while any held or wanted GPUs within the last ``window`` seconds."""
        peak = self._sole_demand.peak(product, now, window)
        return reserved_gpus(peak, self.pools[product].allocatable)

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

    def places(self) -> list[Place]:
        """Free GPUs of every node, for the eviction rule (nodes named by their index)."""
        return [
            Place(pool.product, str(i), free)
            for pool in self.pools.values()
            for i, free in enumerate(pool.node_free)
        ]

    def offer_place(self, name: str, price: Decimal, start_seconds: float) -> Place:
        """An external offer's free GPUs, for the eviction rule (no slot limit: the replay
        models offers' capacity, not the networks' maxConcurrentJobs)."""
        state = self.offers[name]
        return Place(
            state.offer.gpu_product,
            "",
            state.offer.capacity - state.in_use,
            provider=state.offer.provider,
            price_per_gpu_hour=price,
            start_seconds=start_seconds,
        )

    def preemptible_running(self, now: float, rank_of: Callable[[JobRecord], int]) -> list[Running]:
        """The preemptible jobs running now, in the cluster and on external offers (one still
        in its start latency has run 0 s), for the eviction rule (uid: index)."""
        out: list[Running] = []
        for index, ext in self.external.items():
            rec = self.records[index]
            if rec.preemptible:
                offer = self.offers[ext.offer].offer
                out.append(
                    Running(
                        str(index),
                        offer.gpu_product,
                        "",
                        rec.job.gpus,
                        rank_of(rec),
                        max(now - ext.start, 0.0),
                        ext.end - now,
                        provider=offer.provider,
                    )
                )
        for index, attempt in self.attempts.items():
            rec = self.records[index]
            if rec.preemptible:
                out.append(
                    Running(
                        str(index),
                        attempt.product,
                        str(attempt.node),
                        rec.job.gpus,
                        rank_of(rec),
                        now - attempt.start,
                        attempt.end - now,
                    )
                )
        return out

    # -- the loop -----------------------------------------------------------------------
    def run(self, router: Router, progress: Callable[[int], None] | None = None) -> RunResult:
        """Replay every job under ``router``; ``progress`` is called with each arrival count."""
        for i, job in enumerate(self.jobs):
            self._push(job.arrival, 2, i)
        last_arrival = self.jobs[-1].arrival if self.jobs else 0.0
        give_up = last_arrival + GIVE_UP_AFTER_SECONDS
        arrived = 0
        while self._events:
            # Every event of one instant, then the admission cycles they call for: the
            # operator gathers a burst into one cycle the same way (``BATCH_WINDOW``).
            now = self._events[0][0]
            while self._events and self._events[0][0] == now:
                _, kind, seq, index = heapq.heappop(self._events)
                if kind == 0:
                    attempt = self.attempts.get(index)
                    if attempt is None or attempt.seq != seq:
                        continue  # evicted before it ended
                    self._finish_in_cluster(index, now)
                    self.queue.released((f"{IN_CLUSTER}/{attempt.product}",))
                elif kind == 1:
                    ext = self.external.get(index)
                    if ext is None or ext.seq != seq:
                        continue  # evicted before it ended
                    self._finish_external(index, now)
                    self.queue.released((self.records[index].target,))
                elif kind == 4:
                    if self._dequeue(index, seq):
                        self.queue.request(index)  # queued too long: routed again
                elif kind == 3:
                    if self._take_retry(index, seq):
                        self.queue.request(index)
                else:
                    self._sole_change(index, now, 1)
                    arrived += 1
                    if progress is not None and arrived % 256 == 0:
                        progress(arrived)
                    self.queue.request(index)
            self._admit(router, now, give_up)
        if progress is not None:
            progress(len(self.jobs))
        return self._result(router.name)

    def _sole_change(self, index: int, now: float, sign: int) -> None:
        """Count a job that can run only on one pool in or out of that pool's demand."""
        product = self._sole[index]
        if product is not None:
            self._sole_demand.change(product, now, sign * self.jobs[index].gpus)

    def _push(self, when: float, kind: int, index: int) -> None:
        self._seq += 1
        # Finishes (kind 0, 1) sort before arrivals (2), retries (3) and queue rechecks (4).
        heapq.heappush(self._events, (when, kind, self._seq, index))

    def _take_retry(self, index: int, seq: int) -> bool:
        """Whether retry ``seq`` is the one due for job ``index``; a stale one leaves the due
        one in place (a job woken early and deferred again, or evicted, has a newer one)."""
        if self._retry_seq.get(index) != seq:
            return False
        del self._retry_seq[index]
        return True

    def _admit(self, router: Router, now: float, give_up: float) -> None:
        """Run the operator's admission cycles at ``now`` until nothing more is due: take the
        queue's jobs, decide them in its order, each on what the ones before it took."""
        for _ in range(CYCLES_PER_INSTANT):
            if self._preemptible_started:
                self._preemptible_started = False
                if router.evicts:
                    self.queue.evictable(now)
            if not self.queue.busy:
                return
            taken = self.queue.cycle_keys(self.queue.take(self._free_at))
            for index in sorted(taken, key=lambda i: order_key(0, False, self._queued(i), i)):
                self._retry_seq.pop(index, None)  # decided now: a retry still due is stale
                if now > give_up:
                    self.records[index].rejected = "GaveUp"
                    self.queue.forget(index)
                    continue
                action = router.route(index, self, now)
                self.queue.decided(index, self._waiting(index, action, router))
                self._apply(index, action, now)
        # Still busy after as many cycles: the rest are decided a second later.
        for index in self.queue.take(self._free_at):
            self._push(now + 1.0, 3, index)
            self._retry_seq[index] = self._seq

    def _queued(self, index: int) -> float:
        rec = self.records[index]
        return rec.job.arrival if rec.evicted_at is None else rec.evicted_at

    def _waiting(self, index: int, action: Action, router: Router) -> Waiting | None:
        """What wakes a job told to wait (as ``controller.admission._waiting``)."""
        if action.kind != "wait":
            return None
        rec = self.records[index]
        return told_to_wait(
            rec.job.gpus,
            self._queued(index),
            start_within=rec.deadline,
            evicts=router.evicts,
            places=action.awaiting,
        )

    def _free_at(self, place: str) -> int | None:
        """GPUs a job arriving now finds free at a candidate place (as
        ``controller.admission.World.free_gpus``)."""
        provider, _, product = place.partition("/")
        if provider == IN_CLUSTER:
            pool = self.pools.get(product)
            if pool is None:
                return None
            return pool.free_to_start()
        state = self.offers.get(place)
        return None if state is None else state.offer.capacity - state.in_use

    def _apply(self, index: int, action: Action, now: float) -> None:
        rec = self.records[index]
        job = rec.job
        if action.kind in ("start", "queue"):
            # "start" asks for a free pool; if it is not free after all, the job queues. Free
            # GPUs beyond what the queue wants are the newcomer's, as the engine expects (the
            # queue's head may not fit on one node: BestEffortFIFO lets smaller jobs pass).
            pool = self.pools[action.target]
            if pool.free_to_start() >= job.gpus:
                self._start_in_cluster(index, pool, now)
            else:
                pool.queue.append(index)
                pool.queued_gpus += job.gpus
                rec.target = pool.product
                if action.recheck_seconds is not None:
                    self._push(now + max(action.recheck_seconds, 1.0), 4, index)
                    self._recheck_seq[index] = self._seq
        elif action.kind == "external":
            state = self.offers[action.target]
            offer = state.offer
            state.in_use += job.gpus
            state.active_jobs += 1
            start = now + offer.start_latency_seconds
            if rec.start is None:
                rec.start = start
            rec.backend = "External"
            rec.target = offer.name
            cost = _cost(offer.usd_per_gpu_hour, rec.remaining, job.gpus)
            self._charge(rec, cost, now)
            rec.external_cost += cost
            self._push(start + rec.remaining, 1, index)
            self.external[index] = ExternalAttempt(
                offer.name, start, start + rec.remaining, self._seq
            )
            if rec.preemptible:
                self._preemptible_started = True
        elif action.kind == "preempt" and action.eviction is not None:
            self._preempt(index, action.eviction, action.checkpoint_seconds, now)
        elif action.kind == "wait":
            self._push(now + max(action.retry_seconds, 1.0), 3, index)
            self._retry_seq[index] = self._seq
        else:
            rec.rejected = action.target or "Rejected"
            self._sole_change(index, now, -1)

    def _charge(self, rec: JobRecord, cost: Decimal, now: float) -> None:
        rec.cost += cost
        self._spend.append((now, cost))

    def _start_in_cluster(
        self, index: int, pool: PoolState, now: float, node: int | None = None
    ) -> None:
        rec = self.records[index]
        job = rec.job
        end = now + rec.remaining
        placed = pool.place(job.gpus, end, node)
        self._recheck_seq.pop(index, None)
        if rec.start is None:
            rec.start = now
        rec.backend = "InCluster"
        rec.target = pool.product
        # Charged in full now, as it will run to its end unless evicted (then refunded).
        self._charge(rec, _cost(pool.price, rec.remaining, job.gpus), now)
        self._busy.append((now, job.gpus))
        self._push(end, 0, index)
        self.attempts[index] = Attempt(pool.product, placed, now, end, self._seq)
        if rec.preemptible:
            self._preemptible_started = True

    def _preempt(self, index: int, eviction: Eviction, checkpoint: float, now: float) -> None:
        """Stop the victims, start job ``index`` on the node or offer they free, route them
        again."""
        victims = [int(uid) for uid in eviction.victims]
        for victim in victims:
            if victim in self.external:
                self._evict_external(victim, checkpoint, now)
            else:
                self._evict(victim, checkpoint, now)
        if eviction.external:
            # The freed capacity is the job's: submitted there now, as the operator does once
            # the victims' cancels are through.
            self._apply(index, Action("external", eviction.place), now)
        else:
            pool = self.pools[eviction.gpu_product]
            self._start_in_cluster(index, pool, now, int(eviction.node))
            self._start_queued(pool, now)
        # What the evictor left free is released, as the victims' Pods' deletion or cancels
        # notify the operator's queue.
        self.queue.released((eviction.place,))
        for victim in victims:
            # Requeued as the operator requeues an evicted job: decided again, now.
            self.records[victim].evicted_at = now
            self.queue.request(victim)

    def _evict(self, index: int, checkpoint: float, now: float) -> None:
        attempt = self.attempts.pop(index)
        rec = self.records[index]
        gpus = rec.job.gpus
        pool = self.pools[attempt.product]
        pool.release(attempt.node, gpus, attempt.end)
        self._busy.append((now, -gpus))
        ran = now - attempt.start
        lost = ran % checkpoint if checkpoint > 0 else ran
        # Billed for what it ran, lost part included, instead of the whole attempt.
        unused = _cost(pool.price, rec.remaining, gpus) - _cost(pool.price, ran, gpus)
        self._charge(rec, -unused, now)
        rec.remaining -= ran - lost
        rec.preemptions += 1
        rec.lost_gpu_seconds += lost * gpus

    def _evict_external(self, index: int, checkpoint: float, now: float) -> None:
        """Cancel a job on an external offer: its capacity frees now, it is billed for what it
        ran (nothing while in its start latency), and resumes from its last checkpoint."""
        ext = self.external.pop(index)
        rec = self.records[index]
        gpus = rec.job.gpus
        state = self.offers[ext.offer]
        state.in_use -= gpus
        state.active_jobs -= 1
        ran = max(now - ext.start, 0.0)
        lost = ran % checkpoint if checkpoint > 0 else ran
        price = state.offer.usd_per_gpu_hour
        unused = _cost(price, rec.remaining, gpus) - _cost(price, ran, gpus)
        self._charge(rec, -unused, now)
        rec.external_cost -= unused
        rec.remaining -= ran - lost
        rec.preemptions += 1
        rec.lost_gpu_seconds += lost * gpus

    def _finish_in_cluster(self, index: int, now: float) -> None:
        attempt = self.attempts.pop(index)
        pool = self.pools[attempt.product]
        job = self.jobs[index]
        pool.release(attempt.node, job.gpus, now)
        self._sole_change(index, now, -1)
        self.records[index].end = now
        self._busy.append((now, -job.gpus))
        self._start_queued(pool, now)

    def _start_queued(self, pool: PoolState, now: float) -> None:
        """Start the queued jobs that fit now, in queue order (smaller ones pass a blocked head)."""
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

    def _dequeue(self, index: int, seq: int) -> bool:
        """Take a still-queued job out of its pool's queue; False if it has started since the
        recheck ``seq`` was set."""
        if self._recheck_seq.get(index) != seq:
            return False
        del self._recheck_seq[index]
        rec = self.records[index]
        pool = self.pools[rec.target]
        pool.queue.remove(index)
        pool.queued_gpus -= rec.job.gpus
        return True

    def _finish_external(self, index: int, now: float) -> None:
        self.external.pop(index, None)
        rec = self.records[index]
        state = self.offers[rec.target]
        state.in_use -= rec.job.gpus
        state.active_jobs -= 1
        rec.end = now
        self._sole_change(index, now, -1)

    def _result(self, name: str) -> RunResult:
        started = [r for r in self.records if r.start is not None]
        delays = [r.start - r.job.arrival for r in started if r.start is not None]
        best_effort = [
            r.start - r.job.arrival for r in started if r.start is not None and r.deadline is None
        ]
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
            total_cost=sum((r.cost for r in self.records), Decimal(0)),
            external_cost=sum((r.external_cost for r in self.records), Decimal(0)),
            jobs=len(self.records),
            jobs_external=len(external),
            slo_jobs=len(slo),
            slo_met=met,
            p95_start_seconds=_p95(delays),
            unfinished=sum(1 for r in self.records if r.end is None),
            best_effort_p95_start_seconds=_p95(best_effort),
            preemptions=sum(r.preemptions for r in self.records),
            preempted_jobs=sum(1 for r in self.records if r.preemptions),
            lost_gpu_hours=sum(r.lost_gpu_seconds for r in self.records) / 3600,
            spend_series=_cumulative(self._spend),
            utilisation_series=_utilisation(self._busy, self.total_gpus),
        )


def _cost(usd_per_gpu_hour: Decimal, seconds: float, gpus: int) -> Decimal:
    # A ten-billionth of a dollar: exact sums over thousands of jobs, no 28-digit dust.
    cost = gpu_hour_cost(usd_per_gpu_hour, round(seconds * 1000) * gpus)
    return cost.quantize(MONEY_QUANTUM)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * 0.95), len(ordered) - 1)] if ordered else 0.0


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
