"""One admission loop: jobs that need a decision are decided in order, each on a snapshot
that already holds back what the decisions before it promised.

Kueue's scheduler does the same (take the queue heads, snapshot the cache, assign, *reserve*
in the cache, then write). Here the reservations are ``claims.Holdings``, derived from the job
statuses the cache holds, plus what this cycle has promised so far; nothing is a counter that
a restart could lose. Writes are version-checked: a decision computed from a stale status ends
in a 409, a re-read, and a new decision in the next cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from hybridgpu.api.inferencejob import AttemptOutcome, InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.claims import Charge, Holdings, PolicyKey, reserve
from hybridgpu.controller.errors import UnreadableStatus
from hybridgpu.controller.eviction import PreemptionView, eviction_for, preempts
from hybridgpu.controller.reconcile import (
    PREEMPTING,
    Deps,
    Emit,
    JobStep,
    Plan,
    RoutePlan,
)
from hybridgpu.jobs import conditions as cond
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.kube import Conflict
from hybridgpu.routing.admission import (
    AdmissionQueue,
    Waiting,
    dearer_places,
    order_key,
    told_to_wait,
    wake_places,
)
from hybridgpu.routing.decision import IN_CLUSTER, RoutingDecision, ScoredCandidate
from hybridgpu.routing.offerfacts import free_to_start
from hybridgpu.routing.preemption import Eviction
from hybridgpu.routing.scarcity import reserve_pools
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, Snapshot

log = logging.getLogger(__name__)

BATCH_WINDOW = 0.02
"""Seconds to gather a burst of arrivals into one cycle."""
WRITE_CONCURRENCY = 32


@dataclass
class World:
    """The capacity one admission cycle decides on; ``take`` holds back what a decision took."""

    now: datetime
    pools: tuple[InClusterPool, ...]
    offers: tuple[ExternalOffer, ...]
    holdings: Holdings
    period_start: Callable[[PolicyKey, RoutingPolicySpec], datetime]
    telemetry_available: bool = False
    preemption: Callable[[], PreemptionView] | None = None
    """Builds the view of evictable work (read only when a job may evict: it visits every
    cached job)."""
    sole_seen: Mapping[str, datetime] = field(default_factory=dict)
    """Per GPU product, when jobs that can run only on its pool last held or wanted it
    (``routing.scarcity.sole_seen``): such a pool is kept from other jobs for the policy's
    ``inCluster.scarcity.window``."""
    _snapshots: dict[PolicyKey, Snapshot] = field(default_factory=dict)
    _view: PreemptionView | None = None

    def snapshot(self, namespace: str, name: str, policy: RoutingPolicySpec) -> Snapshot:
        key = (namespace, name)
        found = self._snapshots.get(key)
        if found is None:
            since = self.period_start(key, policy)
            found = Snapshot(
                now=self.now,
                pools=self._pools(policy),
                offers=self.offers,
                budget_spent=self.holdings.committed(key, since),
                telemetry_available=self.telemetry_available,
            )
            self._snapshots[key] = found
        return found

    def _pools(self, policy: RoutingPolicySpec) -> tuple[InClusterPool, ...]:
        """The pools, each kept for its sole demand when the policy's scarcity rule is on."""
        scarcity = policy.in_cluster.scarcity
        if not scarcity.max_premium_percent:
            return self.pools
        return reserve_pools(self.pools, self.sole_seen, self.now, scarcity.window)

    def evict(
        self,
        job: str,
        spec: InferenceJobSpec,
        policy: RoutingPolicySpec,
        decision: RoutingDecision,
        created_at: datetime | None,
    ) -> tuple[Eviction, str] | None:
        """What the job should evict (the shared rule), held for it for the rest of the cycle.

        On a network, only where the job's cost there fits what its policy's budget has left
        (as this cycle holds it, the victims' estimates still committed): the engine turned
        the offer down for capacity before it looked at the budget, and an eviction must not
        free GPUs for a job the budget then rejects. The job's cost is charged for the rest
        of the cycle, so that no later decision promises the same dollars."""
        if self.preemption is None or not preempts(policy, spec):
            return None
        if self._view is None:
            self._view = self.preemption()
        key = (job.partition("/")[0], spec.policy_ref)
        budget = policy.budget
        left = None
        if budget is not None:
            left = budget.limit - self.snapshot(*key, policy).budget_spent
        found = eviction_for(
            view=self._view,
            spec=spec,
            policy=policy,
            decision=decision,
            created_at=created_at,
            now=self.now,
            job=job,
            reserved={p.gpu_product: p.reserved for p in self._pools(policy)},
            budget_left=left,
        )
        if found is None:
            return None
        if found.external:
            self._charge(key, decision, found)
        return found, self._view.describe(found)

    def _charge(self, policy: PolicyKey, decision: RoutingDecision, eviction: Eviction) -> None:
        """Hold the budget an eviction on a network promised its job, for this cycle."""
        for c in decision.candidates:
            if c.provider == eviction.provider and c.gpu_product == eviction.gpu_product:
                self.holdings.charge(Charge(policy, c.estimated_cost, None))
                self._snapshots.clear()
                return

    def free_gpus(self, place: str) -> int | None:
        """GPUs a job arriving now finds free at a candidate place, for waking waiting jobs
        (``routing.admission``): in a pool, as the engine counts them (``free_to_start``); on
        an offer, its available GPUs while the network has a slot. None for a place unknown
        here."""
        provider, _, product = place.partition("/")
        if not product:
            return None
        if provider == IN_CLUSTER:
            pool = next((p for p in self.pools if p.gpu_product == product), None)
            if pool is None:
                return None
            return free_to_start(pool.free, pool.queued, pool.max_free_per_node)
        found = [o for o in self.offers if o.provider == provider and o.gpu_product == product]
        if not found:
            return None
        return max((o.available for o in found if o.active_jobs < o.max_concurrent_jobs), default=0)

    def take(self, policy: PolicyKey, gpus: int, target: ScoredCandidate, runs_for: float) -> None:
        """Hold what a decision promised, so the next decision cannot promise it again."""
        if target.backend == "InCluster":
            back = target.expected_start_seconds + runs_for
            self.pools = tuple(
                reserve(p, gpus, [back] * gpus) if p.gpu_product == target.gpu_product else p
                for p in self.pools
            )
        else:
            self.offers = tuple(
                replace(
                    o,
                    active_jobs=o.active_jobs + 1,
                    available=(
                        max(o.available - gpus, 0)
                        if o.gpu_product == target.gpu_product
                        else o.available
                    ),
                )
                if o.provider == target.provider
                else o
                for o in self.offers
            )
            self.holdings.charge(Charge(policy, target.estimated_cost, None))
        # Every policy's snapshot shares the pools and offers; budgets are per policy but a
        # rebuilt snapshot costs little next to a promise made twice.
        self._snapshots.clear()


def _reason(step: JobStep, type_: str) -> str:
    found = cond.find_model(step.conditions, type_)
    return found.reason if found is not None else ""


def queued_since(
    created: datetime | None, last_outcome: object, last_end: datetime | None
) -> datetime | None:
    """When a job joined the queue: its creation, or the end of its last attempt when that
    was evicted (Kueue's requeuing by eviction time: an evicted job queues behind the work
    that evicted it, which would otherwise find it back on its GPUs)."""
    if last_outcome == AttemptOutcome.PREEMPTED and last_end is not None:
        return last_end
    return created


@dataclass
class Candidate:
    step: JobStep
    spec: InferenceJobSpec
    policy: RoutingPolicySpec
    priority: int
    created: datetime | None
    """When it joined the queue: its creation, or its last eviction."""
    evicting: bool = False
    """It waits for GPUs it evicted: decided first within its priority, so that nothing
    older takes them."""

    def queued_at(self, now: float) -> float:
        """When it joined the queue, on the clock of ``now`` (``now`` when unknown)."""
        return self.created.timestamp() if self.created is not None else now


class Admission:
    """The queue of jobs that need a decision, and the loop that decides them."""

    def __init__(
        self,
        *,
        deps: Callable[[], Deps],
        bodies: Callable[[str], dict[str, object] | None],
        world: Callable[[], World],
        emit_for: Callable[[dict[str, object]], Emit],
        done: Callable[[str, dict[str, object] | None, float | None], None],
        reread: Callable[[str, str, str], Awaitable[None]],
        priority: Callable[[str, str], int] = lambda _ns, _name: 0,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._gate = gate
        """Awaited before each cycle: no decision is made while this process is paused."""
        self._deps = deps
        self._bodies = bodies
        self._world = world
        self._emit_for = emit_for
        self._done = done
        self._reread = reread
        self._priority = priority
        self.queue: AdmissionQueue[str] = AdmissionQueue()
        """Who the next cycle decides, who waits and what wakes them (shared with the
        replay: ``routing.admission``)."""
        self._event = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.cycles = 0

    @property
    def waiting(self) -> Set[str]:
        """Jobs whose last decision was to wait."""
        return self.queue.waiting.keys()

    @property
    def nominated(self) -> Set[str]:
        """Jobs waiting for the GPUs they evicted. In memory: a restarted operator forgets
        it, and at worst an evicted job takes its GPUs back once, to be evicted again (it has
        lost nothing: it had not started)."""
        return self.queue.nominated

    def _kick(self) -> None:
        self._idle.clear()
        self._event.set()

    def request(self, uid: str) -> None:
        self.queue.request(uid)
        self._kick()

    async def idle(self) -> None:
        """Wait until no decision is pending: what can wait (Events) yields to decisions."""
        await self._idle.wait()

    def forget(self, uid: str) -> None:
        self.queue.forget(uid)

    def wake(self, places: frozenset[str] | None = None, repriced: bool = False) -> None:
        """Capacity may have come free at ``places`` (None: anywhere, e.g. a policy changed),
        and, if ``repriced``, prices there may have dropped: the jobs waiting for one of them
        are decided again (``routing.admission``)."""
        woken = self.queue.released(places)
        if repriced and places is not None:
            woken = self.queue.repriced(places) or woken
        if woken:
            self._kick()

    def wake_evictors(self) -> None:
        """Preemptible work started: decide again the waiting jobs that may still evict, those
        with a ``startWithin`` not yet past (the rule evicts nothing for a late job).

        Waking every waiting job gave the replay fewer jobs on time (gpuspec33, BENCHMARKS.md
        "Wake on preemptible starts"); the replay runs the same queue
        (``routing.admission``)."""
        if self.queue.evictable(datetime.now(UTC).timestamp()):
            self._kick()

    async def run(self) -> None:
        while True:
            await self._event.wait()
            await asyncio.sleep(BATCH_WINDOW)
            if self._gate is not None:
                await self._gate()
            self._event.clear()
            world: World | None = None
            try:
                world = self._world()
            except Exception:
                log.exception("reading the capacity to admit on failed")
            # Without a world, every woken job is taken: the cycle fails and retries them.
            uids = self.queue.take(world.free_gpus if world is not None else _unknown)
            try:
                await self.cycle(uids, world)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("admission cycle failed; its jobs are retried")
                for uid in uids:
                    self._done(uid, None, 10.0)
            if self.queue.busy:
                self._event.set()  # woken jobs left for the next cycle
            else:
                self._idle.set()

    def _candidates(self, uids: Iterable[str], deps: Deps) -> list[Candidate]:
        out = []
        for uid in uids:
            body = self._bodies(uid)
            if body is None:
                self.queue.forget(uid)
                continue
            try:
                step = JobStep(dict(body), deps, self._emit_for(body))
            except UnreadableStatus:
                self.queue.forget(uid)
                self._done(uid, None, 0.0)  # the workers fail it, naming the field
                continue
            needs = step.needs_admission()
            if needs is None:  # something else to do first (track, suspend, fail): the worker
                self.queue.forget(uid)
                self._done(uid, None, 0.0)
                continue
            spec, policy = needs
            created = parse_timestamp(step.meta.get("creationTimestamp"))
            last = step.attempts[-1] if step.attempts else None
            queued = created if last is None else queued_since(created, last.outcome, last.end_time)
            out.append(
                Candidate(
                    step,
                    spec,
                    policy,
                    self._priority(step.namespace, spec.policy_ref),
                    queued,
                    _reason(step, cond.ROUTED) == PREEMPTING,
                )
            )
        return out

    async def cycle(self, uids: Iterable[str], world: World | None = None) -> None:
        """Decide every job in ``uids`` that needs it, in order, then write the decisions."""
        # kube-scheduler's nominated Pods, in the loop's terms: a job waiting for the GPUs it
        # evicted is decided in every cycle, first within its priority, so that nothing
        # decided the moment the victims' Pods are gone takes those GPUs before it does.
        uids = self.queue.cycle_keys(uids)
        world = world or self._world()
        deps = replace(
            self._deps(), snapshot=world.snapshot, dispatch_inline=False, evict=world.evict
        )
        candidates = self._candidates(uids, deps)
        now = world.now.timestamp()
        candidates.sort(
            key=lambda c: order_key(c.priority, c.evicting, c.queued_at(now), c.step.uid)
        )
        writes = []
        for c in candidates:
            plan = c.step.plan_route(c.spec, c.policy)
            if plan.eviction is not None:
                self.queue.nominate(c.step.uid)
            if plan.kind is Plan.DISPATCH and plan.target is not None:
                world.take(
                    (c.step.namespace, c.spec.policy_ref),
                    c.spec.gpu.count,
                    plan.target,
                    c.spec.estimated_duration.total_seconds(),
                )
            writes.append((c, plan))
        self.cycles += 1
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def write(c: Candidate, plan: RoutePlan) -> None:
            async with limit:
                await self._commit(c, plan)

        await asyncio.gather(*(write(c, p) for c, p in writes))
        for c, plan in writes:
            for uid in plan.eviction.victims if plan.eviction is not None else ():
                await self._evict(uid, c, deps)

    async def _evict(self, uid: str, by: Candidate, deps: Deps) -> None:
        """The victim's side: its attempt ends Preempted (version-checked), then its Job goes."""
        body = self._bodies(uid)
        if body is None:
            return
        try:
            step = JobStep(dict(body), deps, self._emit_for(body))
        except UnreadableStatus:
            return
        try:
            if step.preempt(f"{by.step.namespace}/{by.step.name}") is None:
                self.request(by.step.uid)  # it ended meanwhile: its GPUs free themselves
                return
            await step.save()
            await step.settle_cancels(only_new=True)
            await step.save()
        except Conflict:
            # The victim moved on since the view was read: the evicting job decides again.
            await self._reread(step.namespace, step.name, step.uid)
            self.request(by.step.uid)
            return
        except Exception:
            log.exception("evicting %s/%s failed", step.namespace, step.name)
            self.request(by.step.uid)
            return
        self._done(step.uid, step.written, 0.0)

    async def _commit(self, c: Candidate, plan: RoutePlan) -> None:
        step = c.step
        try:
            delay = await step.commit_route(c.spec, plan)
        except Conflict:
            # Another writer (or a spec change) moved the job on: re-read, decide again.
            await self._reread(step.namespace, step.name, step.uid)
            self.request(step.uid)
            return
        except Exception:
            log.exception("writing the decision of %s/%s failed", step.namespace, step.name)
            self._done(step.uid, step.written, 10.0)
            return
        now = datetime.now(UTC).timestamp()
        waiting = _waiting(c, plan, now) if plan.kind is Plan.WAIT else None
        self.queue.decided(step.uid, waiting)
        self._done(step.uid, step.written, delay)


def _unknown(_place: str) -> int | None:
    return None


def _waiting(c: Candidate, plan: RoutePlan, now: float) -> Waiting:
    """What wakes a job told to wait (``routing.admission.told_to_wait``)."""
    decision = plan.decision
    return told_to_wait(
        c.spec.gpu.count,
        c.queued_at(now),
        start_within=None if c.spec.start_within is None else c.spec.start_within.total_seconds(),
        evicts=preempts(c.policy, c.spec) and c.created is not None,
        places=frozenset() if decision is None else wake_places(decision),
        dearer=frozenset() if decision is None else dearer_places(decision),
        priority=c.priority,
        evicting=c.evicting,
    )
