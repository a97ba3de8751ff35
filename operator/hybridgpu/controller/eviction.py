"""Preemption in the admission loop: what may be evicted and where GPUs are free, read from the
job cache, the Pod indexes and the providers' offers, and what one eviction promised within a
cycle.

The rule itself is ``routing.preemption`` (the simulator applies the same). Nothing here is a
counter of its own: a restarted operator reads the same view from the same statuses and Pods.
GPUs of attempts already evicted whose Pods are still terminating count as free for the rule
(they are coming back), so a job waiting for them does not evict a second set. On a network
the same holds until the provider's next offer refresh after the eviction: until then the
offer still counts the victim's GPUs as taken.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import CANCELLABLE_TYPES
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
from hybridgpu.routing.decision import RoutingDecision, ScoredCandidate
from hybridgpu.routing.engine import FEASIBLE, LATE
from hybridgpu.routing.preemption import (
    Eviction,
    Place,
    Running,
    offer_worth_freeing,
    plan_eviction,
    rank,
)
from hybridgpu.routing.scarcity import kept_from
from hybridgpu.units import parse_duration

HOLD_SECONDS = 600.0
"""How long a job that evicted work waits for those GPUs at most before it takes the engine's
answer again."""
EVICTABLE_REASONS = frozenset({FEASIBLE, LATE, "QueueTooLong"})
"""In-cluster candidates whose only fault is their queue: freeing GPUs there helps."""
EVICTABLE_EXTERNAL = frozenset({AttemptOutcome.PENDING.value, AttemptOutcome.RUNNING.value})
"""External attempts that may be evicted: submitted, their id recorded (and seen by this
process: ``_external``). Not ``Dispatching``: a submit in flight could create the work after
the cancel went out, and it would run on."""
STAMP_RESOLUTION = timedelta(seconds=1)
"""Status times have whole seconds: a refresh within a second after an eviction's endTime may
have come before it."""
OfferKey = tuple[str, str]
"""(provider, GPU product): one network's offer."""


@dataclass
class PreemptionView:
    """Evictable work and free GPUs per node and per offer, as one admission cycle sees them."""

    running: list[Running] = field(default_factory=list)
    free: dict[tuple[str, str], int] = field(default_factory=dict)
    """(product, node) -> free GPUs, counting those of evicted attempts still terminating."""
    names: dict[str, str] = field(default_factory=dict)
    """uid -> ``namespace/name`` of the evictable jobs (for messages)."""
    freeing: dict[str, tuple[str, str]] = field(default_factory=dict)
    """``namespace/name`` of a job that evicted work -> (product, node) where its victims'
    Pods are still terminating: it waits for those GPUs rather than evict again."""
    offer_free: dict[OfferKey, int] = field(default_factory=dict)
    """GPUs of an offer beyond what its last refresh shows: those of evicted attempts the
    refresh still counted as taken (coming back), less what this cycle's evictions took."""
    slot_free: dict[str, int] = field(default_factory=dict)
    """provider -> slots beyond what its active attempts leave, from this cycle's evictions."""
    freeing_offers: dict[str, OfferKey] = field(default_factory=dict)
    """``namespace/name`` of a job that evicted work on a network -> the offer whose next
    refresh is still to show the freed GPUs: it waits for them rather than evict again (the
    engine, reading the offer, would still say NoCapacity)."""

    def describe(self, eviction: Eviction) -> str:
        if not eviction.victims:
            where = (
                f"on {eviction.provider} ({eviction.gpu_product}) to show in its next offer refresh"
                if eviction.external
                else f"on node {eviction.node} ({eviction.gpu_product})"
            )
            return f"waiting for the GPUs of the work it evicted {where}"
        victims = ", ".join(self.names.get(u, u) for u in eviction.victims)
        where = (
            eviction.provider
            if eviction.external
            else f"node {eviction.node}"
            if eviction.node
            else eviction.gpu_product
        )
        return (
            f"evicting preemptible {victims} on {where} ({eviction.gpu_product}) to start "
            "within spec.startWithin; starts once their GPUs are free"
        )

    def places(self) -> list[Place]:
        return [Place(product, node, n) for (product, node), n in sorted(self.free.items())]

    def offer_places(
        self, candidates: Iterable[ScoredCandidate], budget_left: Decimal | None
    ) -> list[Place]:
        """The network offers worth freeing for the job (``routing.preemption.
        offer_worth_freeing``: turned down for capacity alone, on a network that can cancel,
        its cost within ``budget_left``), with the GPUs and slots this cycle knows are
        coming back."""
        out = []
        for c in candidates:
            offer = c.offer
            if offer is None or not offer_worth_freeing(
                c, offer.provider_type in CANCELLABLE_TYPES, budget_left
            ):
                continue
            free = offer.available + self.offer_free.get((c.provider, c.gpu_product), 0)
            slots = offer.max_concurrent_jobs - offer.active_jobs
            out.append(
                Place(
                    c.gpu_product,
                    "",
                    max(free, 0),
                    provider=c.provider,
                    slots=max(slots + self.slot_free.get(c.provider, 0), 0),
                    price_per_gpu_hour=c.price_per_gpu_hour,
                    start_seconds=c.expected_start_seconds,
                )
            )
        return out

    def take(self, eviction: Eviction, gpus: int) -> None:
        """Hold what an eviction frees for the job it was for; its victims are gone."""
        gone = set(eviction.victims)
        victims = [r for r in self.running if r.uid in gone]
        self.running = [r for r in self.running if r.uid not in gone]
        if eviction.external:
            for r in victims:  # coming back, each to the offer of its own product
                key = (r.provider, r.gpu_product)
                self.offer_free[key] = self.offer_free.get(key, 0) + r.gpus
            key = (eviction.provider, eviction.gpu_product)
            self.offer_free[key] = self.offer_free.get(key, 0) - gpus
            # Every attempt holds one of the network's slots, whatever its product.
            provider = eviction.provider
            self.slot_free[provider] = self.slot_free.get(provider, 0) + len(victims) - 1
            return
        freed = sum(r.gpus for r in victims)
        node = (eviction.gpu_product, eviction.node)
        self.free[node] = self.free.get(node, 0) + freed - gpus


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


def _gpus(spec: Mapping[str, Any], attempt: Mapping[str, Any]) -> int:
    return int(attempt.get("gpus") or (spec.get("gpu") or {}).get("count") or 1)


def _running(
    body: Mapping[str, Any],
    attempt: Mapping[str, Any],
    *,
    now: datetime,
    priority: Callable[[str, str], int],
    node: str = "",
    provider: str = "",
) -> Running:
    """A preemptible attempt as the rule sees it (one not running yet has lost nothing)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    since = parse_timestamp(attempt.get("runningSince"))
    ran = (now - since).total_seconds() if since else 0.0
    return Running(
        uid=str(meta.get("uid") or ""),
        gpu_product=str(attempt.get("gpuProduct") or ""),
        node=node,
        gpus=_gpus(spec, attempt),
        rank=rank(
            priority(str(meta.get("namespace") or ""), str(spec.get("policyRef") or "default")),
            spec.get("startWithin") is not None,
        ),
        running_seconds=ran,
        ends_in_seconds=_ends_in(spec, ran),
        provider=provider,
    )


def _cancel_owed(body: Mapping[str, Any], attempt: Mapping[str, Any]) -> bool:
    owed = (body.get("status") or {}).get("pendingCancels") or []
    return any(
        isinstance(p, Mapping)
        and p.get("provider") == attempt.get("provider")
        and p.get("attempt") == attempt.get("attempt")
        for p in owed
    )


def _coming_back(
    view: PreemptionView,
    body: Mapping[str, Any],
    attempt: Mapping[str, Any],
    *,
    now: datetime,
    refreshed: Mapping[str, datetime | None],
) -> None:
    """The GPUs of an attempt evicted on a network, while its offer still counts them as
    taken: it was refreshed after the attempt was admitted and not since the eviction, or the
    network has not confirmed the cancel yet. Its evictor waits for them rather than evict a
    second set. (Admission, not running: some networks take the GPUs as soon as they accept
    the work, a Vast.ai instance, others only once they run it, an Akash lease; waiting for a
    refresh is right for both, while ``claims.Holdings.offers`` holds the GPUs until the work
    runs, so that neither is booked twice.)"""
    provider = str(attempt.get("provider") or "")
    since = refreshed.get(provider)
    started = parse_timestamp(attempt.get("startTime"))
    ended = parse_timestamp(attempt.get("endTime"))
    if since is None or started is None or ended is None or started >= since:
        return  # no offers to wait for, or the offer never counted it
    if since - ended >= STAMP_RESOLUTION and not _cancel_owed(body, attempt):
        return  # refreshed since the work stopped: the offer shows the GPUs
    if (now - ended).total_seconds() >= HOLD_SECONDS:
        return  # a cancel that never comes must not hold its evictor (and the offer) for ever
    key = (provider, str(attempt.get("gpuProduct") or ""))
    view.offer_free[key] = view.offer_free.get(key, 0) + _gpus(body.get("spec") or {}, attempt)
    by = str(attempt.get("preemptedBy") or "")
    if by:
        view.freeing_offers[by] = key


def _external(
    view: PreemptionView,
    body: Mapping[str, Any],
    attempt: Mapping[str, Any],
    *,
    now: datetime,
    refreshed: Mapping[str, datetime | None],
    priority: Callable[[str, str], int],
    submitted: Collection[str],
) -> None:
    """An external attempt: evictable when preemptible and submitted (``EVICTABLE_EXTERNAL``,
    its key in ``submitted``; the rule takes only those on networks that can cancel), or
    evicted and coming back."""
    outcome = attempt.get("outcome")
    if outcome == AttemptOutcome.PREEMPTED.value:
        _coming_back(view, body, attempt, now=now, refreshed=refreshed)
        return
    if outcome not in EVICTABLE_EXTERNAL or (body.get("spec") or {}).get("preemptible") is not True:
        return
    ref = (body.get("status") or {}).get("externalRef") or {}
    if ref.get("idempotencyKey") not in submitted:
        # Not submitted or polled by this process yet: after a restart the job's next step
        # submits it again under its key before it polls it, and that submit could come
        # after the cancel.
        return
    meta = body.get("metadata") or {}
    victim = _running(
        body, attempt, now=now, priority=priority, provider=str(attempt.get("provider") or "")
    )
    view.names[victim.uid] = f"{meta.get('namespace')}/{meta.get('name')}"
    view.running.append(victim)


def preemption_view(
    *,
    now: datetime,
    bodies: Iterable[Mapping[str, Any]],
    nodes: Iterable[NodeRecord],
    pods: Iterable[PodRecord],
    attempt_pod: Callable[[str], Iterable[Any]],
    priority: Callable[[str, str], int],
    refreshed: Mapping[str, datetime | None] | None = None,
    submitted: Collection[str] = (),
) -> PreemptionView:
    """Built from the cached job bodies (raw, not validated: this runs over every job).
    ``refreshed``: provider -> when its offers were last refreshed; ``submitted``: the
    idempotency keys this process has submitted or polled (``Registry.submitted``)."""
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
            if attempt.get("backend") == Backend.EXTERNAL.value:
                _external(
                    view,
                    body,
                    attempt,
                    now=now,
                    refreshed=refreshed or {},
                    priority=priority,
                    submitted=submitted,
                )
                continue
            if attempt.get("backend") != Backend.IN_CLUSTER.value:
                continue
            outcome = attempt.get("outcome")
            product = str(attempt.get("gpuProduct") or "")
            gpus = _gpus(spec, attempt)
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
                view.running.append(
                    _running(body, attempt, now=now, priority=priority, node=pod.node)
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


def _held(
    view: PreemptionView,
    job: str,
    gpus: int,
    target: ScoredCandidate | None,
    offers: Iterable[Place],
) -> Eviction | None:
    """An eviction without victims while what the job's earlier eviction frees is still
    coming back: the node's terminating Pods, or the offer's next refresh."""
    node = view.freeing.get(job)
    if node is not None and view.free.get(node, 0) >= gpus:
        return Eviction(node[0], node[1], (), 0.0)
    key = view.freeing_offers.get(job)
    if key is None:
        return None
    if target is not None and (target.provider, target.gpu_product) == key:
        return None  # refreshed: the engine sends it to the GPUs it freed
    for place in offers:
        # Gone from the candidates: the offer went, or its cost no longer fits the budget.
        if (place.provider, place.gpu_product) == key:
            if place.free >= gpus and (place.slots is None or place.slots >= 1):
                return Eviction(key[1], "", (), 0.0, key[0])
            return None
    return None


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
    budget_left: Decimal | None = None,
) -> Eviction | None:
    """The eviction the shared rule asks for, given the engine's ``decision`` for ``job``
    (``namespace/name``), on the nodes of the cluster or on the network offers the decision
    turned down for capacity alone (those whose cost fits ``budget_left``, None: no budget).
    ``reserved`` are the pools' GPUs kept for their sole demand (``InClusterPool.reserved``):
    the scarcity rule keeps the job from evicting there when the decision starts it in time
    elsewhere at a modest premium.

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
    offers = view.offer_places(decision.candidates, budget_left)
    if not helpful and not offers:
        return None
    target = decision.target if decision.outcome == "Routed" else None
    if (
        target is not None
        and target.backend == "InCluster"
        and target.expected_start_seconds <= max(deadline, 0.0)
    ):
        return None  # it starts here in time: nothing to evict or wait for
    held = _held(view, job, spec.gpu.count, target, offers)
    if held is not None:
        view.take(held, spec.gpu.count)
        return held
    eviction = plan_eviction(
        target=target,
        deadline_seconds=deadline,
        gpus=spec.gpu.count,
        runs_for_seconds=spec.estimated_duration.total_seconds(),
        job_rank=rank(policy.priority, True),
        products=[*(c.gpu_product for c in helpful), *(p.gpu_product for p in offers)],
        prices={c.gpu_product: c.price_per_gpu_hour for c in helpful},
        places=[*view.places(), *offers],
        running=view.running,
        checkpoint_seconds=policy.preemption.checkpoint_interval.total_seconds(),
        kept=kept_from(
            decision.candidates,
            target,
            target is not None and target.expected_start_seconds <= deadline,
            reserved or {},
            policy.in_cluster.scarcity.max_premium_percent,
        ),
        cancellable={p.provider for p in offers},
    )
    if eviction is not None:
        view.take(eviction, spec.gpu.count)
    return eviction
