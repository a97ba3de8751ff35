"""Preemption in the admission loop: what may be evicted and where GPUs are free, read from the
job cache and the Pod indexes, and what one eviction promised within a cycle.

The rule itself is ``routing.preemption`` (the simulator applies the same). Nothing here is a
counter of its own: a restarted operator reads the same view from the same statuses and Pods.
GPUs of attempts already evicted whose Pods are still terminating count as free for the rule
(they are coming back), so a job waiting for them does not evict a second set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hybridgpu.api.inferencejob import AttemptOutcome, Backend, InferenceJobSpec
from hybridgpu.api.routingpolicy import Evict, RoutingPolicySpec
from hybridgpu.backends.cluster_backend import AttemptPod
from hybridgpu.controller.claims import ACTIVE_OUTCOMES
from hybridgpu.inventory.pools import (
    TERMINATED_PHASES,
    NodeRecord,
    PodRecord,
    gpus_in_use_by_node,
)
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.routing.decision import RoutingDecision
from hybridgpu.routing.engine import FEASIBLE, LATE
from hybridgpu.routing.preemption import Eviction, Place, Running, plan_eviction, rank
from hybridgpu.routing.scarcity import kept_from
from hybridgpu.units import parse_duration

HOLD_SECONDS = 600.0
"""How long a job that evicted work waits for those GPUs at most before it takes the engine's
answer again."""
EVICTABLE_REASONS = frozenset({FEASIBLE, LATE, "QueueTooLong"})
"""In-cluster candidates whose only fault is their queue: freeing GPUs there helps."""


@dataclass
class PreemptionView:
    """Evictable work and free GPUs per node, as one admission cycle sees them."""

    running: list[Running] = field(default_factory=list)
    free: dict[tuple[str, str], int] = field(default_factory=dict)
    """(product, node) -> free GPUs, counting those of evicted attempts still terminating."""
    names: dict[str, str] = field(default_factory=dict)
    """uid -> ``namespace/name`` of the evictable jobs (for messages)."""
    freeing: dict[str, tuple[str, str]] = field(default_factory=dict)
    """``namespace/name`` of a job that evicted work -> (product, node) where its victims'
    Pods are still terminating: it waits for those GPUs rather than evict again."""

    def describe(self, eviction: Eviction) -> str:
        if not eviction.victims:
            return (
                f"waiting for the GPUs of the work it evicted on node {eviction.node} "
                f"({eviction.gpu_product})"
            )
        victims = ", ".join(self.names.get(u, u) for u in eviction.victims)
        where = f"node {eviction.node}" if eviction.node else eviction.gpu_product
        return (
            f"evicting preemptible {victims} on {where} ({eviction.gpu_product}) to start "
            "within spec.startWithin; starts once their GPUs are free"
        )

    def places(self) -> list[Place]:
        return [Place(product, node, n) for (product, node), n in sorted(self.free.items())]

    def take(self, eviction: Eviction, gpus: int) -> None:
        """Hold what an eviction frees for the job it was for; its victims are gone."""
        gone = set(eviction.victims)
        freed = sum(r.gpus for r in self.running if r.uid in gone)
        self.running = [r for r in self.running if r.uid not in gone]
        key = (eviction.gpu_product, eviction.node)
        self.free[key] = self.free.get(key, 0) + freed - gpus


def _first_pod(records: Iterable[Any]) -> AttemptPod | None:
    for record in records:
        if isinstance(record, AttemptPod) and record.phase not in TERMINATED_PHASES:
            return record
    return None


def _ends_in(spec: Mapping[str, Any], ran: float) -> float | None:
    """Seconds until work that has run ``ran`` seconds is expected to end by itself."""
    try:
        return parse_duration(str(spec.get("estimatedDuration"))).total_seconds() - ran
    except ValueError:
        return None


def preemption_view(
    *,
    now: datetime,
    bodies: Iterable[Mapping[str, Any]],
    nodes: Iterable[NodeRecord],
    pods: Iterable[PodRecord],
    attempt_pod: Callable[[str], Iterable[Any]],
    priority: Callable[[str, str], int],
) -> PreemptionView:
    """Built from the cached job bodies (raw, not validated: this runs over every job)."""
    used = gpus_in_use_by_node(pods)
    free: dict[tuple[str, str], int] = {}
    for node in nodes:
        if node.schedulable:
            free[(node.gpu_product, node.name)] = max(node.allocatable - used.get(node.name, 0), 0)
    reserved: dict[str, int] = defaultdict(int)
    view = PreemptionView(free=free)
    for body in bodies:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        uid = str(meta.get("uid") or "")
        attempts = (body.get("status") or {}).get("attempts") or []
        for attempt in attempts:
            if attempt.get("backend") != Backend.IN_CLUSTER.value:
                continue
            outcome = attempt.get("outcome")
            product = str(attempt.get("gpuProduct") or "")
            gpus = int(attempt.get("gpus") or (spec.get("gpu") or {}).get("count") or 1)
            pod = _first_pod(attempt_pod(f"{uid}/{attempt.get('attempt')}"))
            if outcome == AttemptOutcome.PREEMPTED.value:
                if pod is not None and pod.node and (product, pod.node) in free:
                    free[(product, pod.node)] += gpus
                    ended = parse_timestamp(attempt.get("endTime"))
                    by = str(attempt.get("preemptedBy") or "")
                    # A Pod that never terminates must not hold its evictor for ever.
                    if by and ended and (now - ended).total_seconds() < HOLD_SECONDS:
                        view.freeing[by] = (product, pod.node)
                continue
            if outcome not in ACTIVE_OUTCOMES:  # (StrEnum members: equal to the raw strings)
                continue
            if pod is None or not pod.node:
                reserved[product] += gpus  # held by its reservation, on no node yet
                continue
            if spec.get("preemptible") is True:
                view.names[uid] = f"{meta.get('namespace')}/{meta.get('name')}"
                since = parse_timestamp(attempt.get("runningSince"))
                ran = (now - since).total_seconds() if since else 0.0
                view.running.append(
                    Running(
                        uid=uid,
                        gpu_product=product,
                        node=pod.node,
                        gpus=gpus,
                        rank=rank(
                            priority(
                                str(meta.get("namespace") or ""),
                                str(spec.get("policyRef") or "default"),
                            ),
                            spec.get("startWithin") is not None,
                        ),
                        running_seconds=ran,
                        ends_in_seconds=_ends_in(spec, ran),
                    )
                )
    # A reservation lands on some node of its product: take it from the freest ones, so that
    # no eviction counts on GPUs a decision already promised.
    for product, held in reserved.items():
        left = held
        for key in sorted((k for k in free if k[0] == product), key=lambda k: -free[k]):
            taken = min(free[key], left)
            free[key] -= taken
            left -= taken
            if left == 0:
                break
    return view


def preempts(policy: RoutingPolicySpec, spec: InferenceJobSpec) -> bool:
    """Whether a job may evict at all: its policy allows it and it has a startWithin."""
    return (
        policy.preemption is not None
        and policy.preemption.evict is Evict.LOWER_RANK
        and spec.start_within is not None
    )


def eviction_for(
    *,
    view: PreemptionView,
    spec: InferenceJobSpec,
    policy: RoutingPolicySpec,
    decision: RoutingDecision,
    created_at: datetime | None,
    now: datetime,
    job: str = "",
    reserved: Mapping[str, int] | None = None,
) -> Eviction | None:
    """The eviction the shared rule asks for, given the engine's ``decision`` for ``job``
    (``namespace/name``). ``reserved`` are the pools' GPUs kept for their sole demand
    (``InClusterPool.reserved``): the scarcity rule keeps the job from evicting there when
    the decision starts it in time elsewhere at a modest premium.

    While the GPUs an earlier eviction of the job frees are still coming back, it keeps
    waiting for them (an eviction without victims) rather than take the engine's answer,
    which cannot see them yet."""
    if not preempts(policy, spec) or policy.preemption is None or spec.start_within is None:
        return None  # (preempts() says all of it; the rest narrows the types)
    anchor = created_at or now
    deadline = (anchor + spec.start_within - now).total_seconds()
    helpful = [
        c for c in decision.candidates if c.backend == "InCluster" and c.reason in EVICTABLE_REASONS
    ]
    if not helpful:
        return None
    target = decision.target if decision.outcome == "Routed" else None
    if (
        target is not None
        and target.backend == "InCluster"
        and target.expected_start_seconds <= max(deadline, 0.0)
    ):
        return None  # it starts here in time: nothing to evict or wait for
    held = view.freeing.get(job)
    if held is not None and view.free.get(held, 0) >= spec.gpu.count:
        hold = Eviction(held[0], held[1], (), 0.0)
        view.take(hold, spec.gpu.count)
        return hold
    eviction = plan_eviction(
        target=target,
        deadline_seconds=deadline,
        gpus=spec.gpu.count,
        runs_for_seconds=spec.estimated_duration.total_seconds(),
        job_rank=rank(policy.priority, True),
        products=[c.gpu_product for c in helpful],
        prices={c.gpu_product: c.price_per_gpu_hour for c in helpful},
        places=view.places(),
        running=view.running,
        checkpoint_seconds=policy.preemption.checkpoint_interval.total_seconds(),
        kept=kept_from(
            decision.candidates,
            target,
            target is not None and target.expected_start_seconds <= deadline,
            reserved or {},
            policy.in_cluster.scarcity.max_premium_percent,
        ),
    )
    if eviction is not None:
        view.take(eviction, spec.gpu.count)
    return eviction
