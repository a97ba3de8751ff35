"""Routers for the replay: RoutingPolicies through the real engine, and three baselines.

Baselines model what teams use without hybridgpu:

* ``in-cluster-fifo`` - a Kueue-like queue on the cluster alone; overflow waits.
* ``cloud-burst`` - the cluster when a GPU is free now, else on-demand cloud GPUs (kind cloud).
* ``cheapest-first`` - SkyPilot-like: the cluster and every provider SkyPilot can launch on
  (its installation page lists Kubernetes, AWS, GCP, Azure, CoreWeave, Lambda, RunPod and more,
  and Vast.ai; not Akash or Nosana) sorted by price per GPU-hour; the first with capacity now
  wins, failing over in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import CANCELLABLE_TYPES
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import Evict, RoutingPolicySpec
from hybridgpu.routing.admission import (
    evicted_recheck_seconds,
    evicted_would_queue,
    wake_places,
)
from hybridgpu.routing.decision import RoutingDecision, ScoredCandidate
from hybridgpu.routing.engine import decide
from hybridgpu.routing.preemption import Place, offer_worth_freeing, plan_eviction, rank
from hybridgpu.routing.requeue import requeue_after_seconds
from hybridgpu.routing.scarcity import kept_from
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, PerGPUHour, Snapshot
from hybridgpu.simulate.market import CLOUD_KINDS
from hybridgpu.simulate.replay import Action, JobRecord, PoolState, Replay
from hybridgpu.simulate.workload import SimJob
from hybridgpu.units import format_duration

EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
"""Origin of the virtual clock (the traces give seconds since their own start)."""
BASELINE_RETRY_SECONDS = 60.0
SKYPILOT_PROVIDERS = frozenset({"aws", "azure", "gcp", "coreweave", "lambda", "runpod", "vastai"})
NO_CONCURRENCY_LIMIT = 1_000_000


def job_spec(
    job: SimJob, start_within: float | None, preemptible: bool = False
) -> InferenceJobSpec:
    """The InferenceJob spec a trace job stands for (see docs/simulate.md for the mapping)."""
    spec: dict[str, Any] = {
        "task": job.task,
        "input": {"requests": 1},
        "gpu": {"count": job.gpus},
        "estimatedDuration": format_duration(timedelta(seconds=job.duration)),
        "policyRef": "simulated",
    }
    if job.task == "container":
        spec["image"] = f"trace/{job.name}"
    else:
        spec["model"] = "trace-llm"
        spec["input"]["inputTokens"] = job.input_tokens
        spec["input"]["outputTokens"] = job.output_tokens
    if job.products:
        spec["gpu"]["products"] = list(job.products)
    if start_within is not None:
        spec["startWithin"] = format_duration(timedelta(seconds=start_within))
    if preemptible:
        spec["preemptible"] = True
    return InferenceJobSpec.model_validate(spec)


class PolicyRouter:
    """A RoutingPolicy, decided by ``hybridgpu.routing.engine.decide`` as in the operator."""

    def __init__(
        self,
        name: str,
        policy: RoutingPolicySpec,
        specs: list[InferenceJobSpec],
        *,
        evict_on_networks: bool = True,
    ):
        self.name = name
        self.evict_on_networks = evict_on_networks
        """Whether work on networks that can cancel may be evicted too, as the operator does
        (docs/admission.md); off: in-cluster work only (``--no-evict-on-networks``)."""
        self.policy = policy
        self.specs = specs
        self.spent = Decimal(0)
        self.period_start = 0.0
        self._pricing: dict[str, PerGPUHour] = {}
        self._offer_seen: dict[str, tuple[tuple[int, int], ExternalOffer]] = {}
        """Each offer as last handed to the engine, with the (available, active jobs) it had."""
        preemption = policy.preemption
        self._checkpoint_seconds = (
            preemption.checkpoint_interval.total_seconds()
            if preemption is not None and preemption.evict is Evict.LOWER_RANK
            else None
        )
        """The checkpoint interval of a policy that evicts; None when it never does."""

    @property
    def evicts(self) -> bool:
        """Whether its latency-sensitive jobs may evict preemptible work (the replay wakes
        them when such work starts)."""
        return self._checkpoint_seconds is not None

    def route(self, index: int, replay: Replay, now: float) -> Action:
        """Build the snapshot the operator would see at ``now`` and ask the engine."""
        job = replay.jobs[index]
        budget = self.policy.budget
        if budget is not None and now - self.period_start >= budget.period.total_seconds():
            periods = (now - self.period_start) // budget.period.total_seconds()
            self.period_start += periods * budget.period.total_seconds()
            self.spent = Decimal(0)
        snapshot = Snapshot(
            now=EPOCH + timedelta(seconds=now),
            pools=self._pools(replay, now),
            offers=self._offers(replay),
            budget_spent=self.spent,
            inventory_final=True,
        )
        d = decide(
            self._spec(index, replay.records[index]),
            self.policy,
            snapshot,
            created_at=EPOCH + timedelta(seconds=job.arrival),
        )
        evict = self._eviction(index, replay, now, d)
        if evict is not None:
            return evict
        if d.outcome == "Routed" and d.target is not None:
            rec = replay.records[index]
            if evicted_would_queue(rec.evicted_at is not None, d.target):
                return Action(
                    "wait",
                    retry_seconds=evicted_recheck_seconds(d.target),
                    awaiting=wake_places(d),
                )
            if d.target.backend == "InCluster":
                # Left unscheduled, the job is routed again by the operator's own rule.
                recheck = requeue_after_seconds(self.policy)
                return Action("queue", d.target.gpu_product, recheck_seconds=recheck)
            self.spent += d.target.estimated_cost
            return Action("external", d.target.name)
        if d.outcome == "Wait":
            return Action(
                "wait",
                retry_seconds=d.retry_after_seconds or BASELINE_RETRY_SECONDS,
                awaiting=wake_places(d),
            )
        return Action("reject", d.reason)

    def _pools(self, replay: Replay, now: float) -> tuple[InClusterPool, ...]:
        """The pools as the operator sees them, each keeping GPUs for the jobs that can run
        only there when the policy's scarcity rule is on."""
        scarcity = self.policy.in_cluster.scarcity
        if not scarcity.max_premium_percent:
            return tuple(p.view(now) for p in replay.pools.values())
        window = scarcity.window.total_seconds()
        return tuple(
            p.view(now, replay.reserved(p.product, now, window)) for p in replay.pools.values()
        )

    def _kept(
        self,
        d: RoutingDecision,
        target: ScoredCandidate | None,
        left: float,
        replay: Replay,
        now: float,
    ) -> frozenset[str]:
        """Pools the scarcity rule keeps from this job, for eviction too."""
        scarcity = self.policy.in_cluster.scarcity
        if not scarcity.max_premium_percent or target is None:
            return frozenset()
        window = scarcity.window.total_seconds()
        reserved = {p: replay.reserved(p, now, window) for p in replay.pools}
        on_time = target.expected_start_seconds <= left
        return kept_from(d.candidates, target, on_time, reserved, scarcity.max_premium_percent)

    def _spec(self, index: int, rec: JobRecord) -> InferenceJobSpec:
        spec = self.specs[index]
        if rec.remaining == rec.job.duration:
            return spec
        # Evicted: what is left to run is the work since its last checkpoint and after.
        return spec.model_copy(update={"estimated_duration": timedelta(seconds=rec.remaining)})

    def _eviction(
        self, index: int, replay: Replay, now: float, d: RoutingDecision
    ) -> Action | None:
        """Preempt by the operator's rule (``routing.preemption.plan_eviction``), if it says to."""
        rec = replay.records[index]
        if self._checkpoint_seconds is None or rec.deadline is None:
            return None
        # Networks whose adapter can cancel: their offers blocked only by capacity are places
        # to free, and work there may be evicted.
        cancellable = (
            {
                s.offer.provider
                for s in replay.offers.values()
                if s.offer.provider_type in CANCELLABLE_TYPES
            }
            if self.evict_on_networks
            else set()
        )
        places: list[Place] = replay.places()
        costs: dict[str, Decimal] = {}
        budget = self.policy.budget
        money_left = None if budget is None else budget.limit - self.spent
        for c in d.candidates:
            if offer_worth_freeing(c, c.provider in cancellable, money_left):
                places.append(
                    replay.offer_place(c.name, c.price_per_gpu_hour, c.expected_start_seconds)
                )
                costs[c.name] = c.estimated_cost
        left = rec.deadline - (now - rec.job.arrival)
        target = d.target if d.outcome == "Routed" else None
        eviction = plan_eviction(
            target=target,
            deadline_seconds=left,
            gpus=rec.job.gpus,
            runs_for_seconds=rec.remaining,
            job_rank=self._rank(rec),
            products=rec.job.products,
            prices={p.product: p.price for p in replay.pools.values()},
            places=places,
            running=replay.preemptible_running(now, self._rank),
            checkpoint_seconds=self._checkpoint_seconds,
            cancellable=cancellable,
            kept=self._kept(d, target, left, replay, now),
        )
        if eviction is None:
            return None
        if eviction.external:
            self.spent += costs[eviction.place]
        return Action(
            "preempt",
            eviction.gpu_product,
            eviction=eviction,
            checkpoint_seconds=self._checkpoint_seconds,
        )

    def _rank(self, rec: JobRecord) -> int:
        # One policy per replay: the rank differs only by having a startWithin.
        return rank(self.policy.priority, rec.deadline is not None)

    def _offers(self, replay: Replay) -> tuple[ExternalOffer, ...]:
        out: list[ExternalOffer] = []
        for state in replay.offers.values():
            o = state.offer
            if o.provider_type is None:
                continue  # no hybridgpu adapter for this provider: policies cannot use it
            available = o.capacity - state.in_use
            kept = self._offer_seen.get(o.name)
            if kept is not None and kept[0] == (available, state.active_jobs):
                out.append(kept[1])  # the same object: the engine's offer table is memoised by it
                continue
            pricing = self._pricing.get(o.name)
            if pricing is None:
                pricing = self._pricing[o.name] = PerGPUHour(o.usd_per_gpu_hour)
            offer = ExternalOffer(
                provider=o.provider,
                provider_type=o.provider_type,
                gpu_product=o.gpu_product,
                memory_bytes=o.memory_bytes,
                pricing=pricing,
                available=available,
                region="global",
                trust_tier=o.trust_tier,
                start_latency_seconds=o.start_latency_seconds,
                error_rate=o.error_rate,
                active_jobs=state.active_jobs,
                max_concurrent_jobs=NO_CONCURRENCY_LIMIT,
            )
            self._offer_seen[o.name] = ((available, state.active_jobs), offer)
            out.append(offer)
        return tuple(out)


def _cheapest_start_now(job: SimJob, pools: list[PoolState]) -> PoolState | None:
    ready = [p for p in pools if not p.queue and p.fits_now(job.gpus)]
    return min(ready, key=lambda p: (p.price, p.product)) if ready else None


def _queue_target(job: SimJob, replay: Replay, now: float) -> Action:
    pools = replay.allowed_pools(job)
    if not pools:
        return Action("reject", "NoSuchProductInCluster")
    best = min(pools, key=lambda p: (replay.estimated_wait(p, job.gpus, now), p.price, p.product))
    return Action("queue", best.product)


class InClusterFifo:
    """Kueue-like: the cluster alone; a job starts on a free pool or waits in the shortest queue."""

    name = "in-cluster-fifo"
    evicts = False

    def route(self, index: int, replay: Replay, now: float) -> Action:
        """Start now if a pool is free, else join the queue expected to free up first."""
        job = replay.jobs[index]
        ready = _cheapest_start_now(job, replay.allowed_pools(job))
        if ready is not None:
            return Action("start", ready.product)
        return _queue_target(job, replay, now)


class CloudBurst:
    """The cluster when it has room now, else the cheapest on-demand cloud offer with capacity."""

    name = "cloud-burst"
    evicts = False

    def route(self, index: int, replay: Replay, now: float) -> Action:
        """Cluster first; overflow to clouds; queue in-cluster when clouds are full too."""
        job = replay.jobs[index]
        ready = _cheapest_start_now(job, replay.allowed_pools(job))
        if ready is not None:
            return Action("start", ready.product)
        clouds = [
            s
            for s in replay.offers.values()
            if s.offer.kind in CLOUD_KINDS
            and (job.products is None or s.offer.gpu_product in job.products)
            and s.offer.capacity - s.in_use >= job.gpus
        ]
        if clouds:
            best = min(clouds, key=lambda s: (s.offer.usd_per_gpu_hour, s.offer.name))
            return Action("external", best.offer.name)
        return _queue_target(job, replay, now)


class CheapestFirst:
    """SkyPilot-like: the cheapest offer anywhere with capacity now, failing over by price."""

    name = "cheapest-first"
    evicts = False

    def route(self, index: int, replay: Replay, now: float) -> Action:
        """Walk every option by price; wait and retry when none has capacity."""
        job = replay.jobs[index]
        options: list[tuple[Decimal, str, Action]] = [
            (p.price, p.product, Action("start", p.product))
            for p in replay.allowed_pools(job)
            if not p.queue and p.fits_now(job.gpus)
        ]
        options.extend(
            (s.offer.usd_per_gpu_hour, s.offer.name, Action("external", s.offer.name))
            for s in replay.offers.values()
            if s.offer.provider in SKYPILOT_PROVIDERS
            and (job.products is None or s.offer.gpu_product in job.products)
            and s.offer.capacity - s.in_use >= job.gpus
        )
        if not options:
            return Action("wait", retry_seconds=BASELINE_RETRY_SECONDS)
        return min(options, key=lambda o: (o[0], o[1]))[2]


BASELINES: dict[str, Callable[[], Any]] = {
    InClusterFifo.name: InClusterFifo,
    CloudBurst.name: CloudBurst,
    CheapestFirst.name: CheapestFirst,
}
