"""The admission queue: which jobs a cycle decides, in which order, and what wakes a waiting one.

One library for both clocks. The operator's admission loop (``controller/admission.py``) runs
it on the wall clock and writes each decision to the API server; the replay
(``simulate/replay.py``) runs it on a virtual clock and applies each decision to its model of
the cluster and the market. A cycle takes the queue's jobs (:meth:`AdmissionQueue.take`),
decides them in :func:`order_key` order, each on capacity that holds back what the decisions
before it took, and reports each outcome back (:meth:`AdmissionQueue.decided`).

A job joins a cycle when it is requested (it arrived, its spec changed, its retry came due,
its queue recheck fired, it was evicted) or when it waits and something it waits for
happened:

* capacity came free at one of its places (:meth:`AdmissionQueue.released`). Kueue requeues
  the inadmissible workloads of a queue when capacity there frees; here the woken jobs are
  decided oldest first while the GPUs free at their places last (:meth:`AdmissionQueue.take`),
  so a release of one GPU neither decides every job waiting for eight nor every job waiting
  for one. The others wait on, for the next release or their retry.
* a price may have dropped at a free place it found too dear
  (:meth:`AdmissionQueue.repriced`): it is decided again.
* preemptible work started (:meth:`AdmissionQueue.evictable`): jobs that may still evict,
  those whose ``startWithin`` is not past, are decided again, since they may evict it now.
  Nothing came free, so no other job is woken.

A job waiting for the GPUs it evicted (*nominated*, kube-scheduler's term) is decided in every
cycle until it has them, first within its priority (:func:`order_key`). Nothing here does I/O
or reads a clock; keys are whatever the caller names jobs by (uids, trace indexes).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hybridgpu.routing.decision import RoutingDecision, ScoredCandidate
from hybridgpu.routing.engine import DEFERRED, WAITABLE

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a job waits, as far as waking it goes."""

    gpus: int
    places: frozenset[str] = frozenset()
    """Candidate names (``in-cluster/<product>``, ``<provider>/<product>``) whose freed
    capacity may let it start; empty: any release."""
    evict_until: float | None = None
    """The clock's second until which it may still evict preemptible work (its queue time
    plus ``startWithin``); None: it never evicts."""
    order: tuple[int, bool, float] = (0, False, 0.0)
    """Its place in the queue (:func:`queue_order`): the first woken jobs get the capacity a
    release freed."""
    dearer: frozenset[str] = frozenset()
    """Places it found free but too dear (:func:`dearer_places`): woken when their price may
    have dropped (:meth:`AdmissionQueue.repriced`)."""


def provider_of(place: str) -> str:
    return place.partition("/")[0]


def matches(awaiting: Collection[str], places: Collection[str]) -> bool:
    """Whether a place in ``awaiting`` was named in ``places``. A bare ``<provider>`` (or
    ``in-cluster``) in ``places`` stands for every product of it: a network's concurrency
    limit, and the queue of an unknown pool, are not tied to one product."""
    return any(p in places or provider_of(p) in places for p in awaiting)


def wake_places(decision: RoutingDecision) -> frozenset[str]:
    """Where released capacity may let a job told to wait start: deferred for price, the busy
    cheap places it waits for; otherwise every candidate blocked by capacity alone."""
    if decision.target is not None:  # routed, but told to wait for a GPU there (evicted)
        return frozenset({decision.target.name})
    if decision.reason == DEFERRED:
        return frozenset(decision.awaiting)
    return frozenset(c.name for c in decision.candidates if c.reason in WAITABLE)


def dearer_places(decision: RoutingDecision) -> frozenset[str]:
    """The free external places a job deferred for price found too dear: a price drop there
    may let it go (a release there does not: they were free). In-cluster prices change only
    with the policy, which wakes every job anyway."""
    return frozenset(
        c.name for c in decision.candidates if c.reason == DEFERRED and c.backend == "External"
    )


EVICTED_RECHECK_SECONDS = 30.0
"""The soonest an evicted job waiting for a free GPU is decided again without being woken."""


def evicted_would_queue(evicted: bool, target: ScoredCandidate) -> bool:
    """Whether a job evicted from its last attempt would be sent to a busy pool: its Pod would
    wait in kube-scheduler's queue, where nothing ranks it behind the job that evicted it, and
    could take back the GPUs that job was promised (the e2e test caught it doing so). It waits
    in admission instead, woken when a GPU there frees."""
    return evicted and target.backend == "InCluster" and target.expected_start_seconds > 0


def evicted_recheck_seconds(target: ScoredCandidate) -> float:
    """When an evicted job told to wait for a GPU of ``target``'s pool looks again unwoken:
    when the engine expects that GPU. A release there wakes it sooner; deciding it every 30 s
    meanwhile cost the replay 0.4 % more and half again its time (BENCHMARKS.md, "One
    admission loop")."""
    return max(EVICTED_RECHECK_SECONDS, target.expected_start_seconds)


def told_to_wait(
    gpus: int,
    queued_since: float,
    *,
    start_within: float | None,
    evicts: bool,
    places: frozenset[str] = frozenset(),
    dearer: frozenset[str] = frozenset(),
    priority: int = 0,
    evicting: bool = False,
) -> Waiting:
    """Why a job told to wait waits, for the operator's loop and the replay alike: ``places``
    (:func:`wake_places`) and ``dearer`` (:func:`dearer_places`) wake it; while its
    ``startWithin`` lasts, counted from when it joined the queue, and ``evicts`` (its policy
    may evict for it), so does preemptible work starting."""
    until = queued_since + start_within if evicts and start_within is not None else None
    return Waiting(
        gpus,
        places,
        evict_until=until,
        order=queue_order(priority, evicting, queued_since),
        dearer=dearer,
    )


def queue_order(priority: int, evicting: bool, queued_since: float) -> tuple[int, bool, float]:
    """The order a cycle decides its jobs in (before a tie-break): higher priority first;
    within a priority the jobs waiting for GPUs they evicted, so that nothing older takes
    those GPUs; then the longest queued (since creation, or since its last eviction: Kueue
    requeues an evicted workload by its eviction time)."""
    return (-priority, not evicting, queued_since)


def order_key(
    priority: int, evicting: bool, queued_since: float, tie: str | int
) -> tuple[int, bool, float, str | int]:
    """:func:`queue_order`, then ``tie`` (the job's uid or index), for a total order."""
    return (*queue_order(priority, evicting, queued_since), tie)


class AdmissionQueue(Generic[K]):
    """The jobs that need a decision and the jobs that wait, keyed by ``K``."""

    def __init__(self) -> None:
        self.requested: set[K] = set()
        """Decided in the next cycle, whatever capacity it finds."""
        self.woken: set[K] = set()
        """Waiting jobs whose places saw a release: decided next if one of them fits."""
        self.waiting: dict[K, Waiting] = {}
        """Jobs whose last decision was to wait."""
        self.nominated: set[K] = set()
        """Jobs waiting for the GPUs they evicted."""

    @property
    def busy(self) -> bool:
        """Whether a cycle has anything to take."""
        return bool(self.requested or self.woken)

    def request(self, key: K) -> None:
        self.requested.add(key)

    def forget(self, key: K) -> None:
        """The job is gone, or something other than admission is to happen to it."""
        self.requested.discard(key)
        self.woken.discard(key)
        self.waiting.pop(key, None)
        self.nominated.discard(key)

    def released(self, places: Collection[str] | None) -> bool:
        """Capacity may have come free at ``places`` (None: anywhere, e.g. a policy changed):
        wake the waiting jobs that wait for one of them. Returns whether any woke."""
        before = len(self.woken)
        for key, waiting in self.waiting.items():
            if places is None or not waiting.places or matches(waiting.places, places):
                self.woken.add(key)
        return len(self.woken) > before

    def repriced(self, places: Collection[str]) -> bool:
        """Prices may have dropped at ``places``: decide again the jobs that found one of them
        too dear. Returns whether any was."""
        found = {key for key, w in self.waiting.items() if w.dearer and matches(w.dearer, places)}
        self.requested |= found
        return bool(found)

    def evictable(self, now: float) -> bool:
        """Preemptible work started: decide again the waiting jobs that may still evict.
        Returns whether any was."""
        found = {
            key
            for key, waiting in self.waiting.items()
            if waiting.evict_until is not None and now < waiting.evict_until
        }
        self.requested |= found
        return bool(found)

    def take(self, free: Callable[[str], int | None]) -> set[K]:
        """The jobs the next cycle decides (the nominated ones come on top: :meth:`cycle_keys`).

        Woken jobs are taken in :func:`queue_order` while the free GPUs at their places
        last (``free``: GPUs free at a place for a job that arrives now; None when unknown,
        which counts as enough for any number): a release of two GPUs decides the first jobs
        they can hold, not every job waiting there. A woken job that fits the free GPUs but
        finds them promised to a job before it this cycle stays woken, for the next cycle to
        look again (the job before it may have gone elsewhere); one that does not fit waits
        on."""
        taken = self.requested
        found: dict[str, int | None] = {}  # free at each place as the cycle starts: read once
        promised: dict[str, int] = {}  # of those, what jobs taken before have claimed
        again: set[K] = set()
        woken = [(self.waiting[k], k) for k in self.woken - taken if k in self.waiting]
        woken.sort(key=lambda item: (item[0].order, str(item[1])))
        for waiting, key in woken:
            fitting = []
            for place in sorted(waiting.places):
                if place not in found:
                    found[place] = free(place)
                gpus = found[place]
                if gpus is None or gpus >= waiting.gpus:
                    fitting.append((place, gpus))
            if waiting.places and not fitting:
                continue  # too big for what came free: it waits on
            room = next(
                (
                    (place, gpus)
                    for place, gpus in fitting
                    if gpus is None or gpus - promised.get(place, 0) >= waiting.gpus
                ),
                None,
            )
            if not waiting.places or room is not None:
                taken.add(key)
                if room is not None and room[1] is not None:
                    promised[room[0]] = promised.get(room[0], 0) + waiting.gpus
            else:
                again.add(key)
        self.requested, self.woken = set(), again
        return taken

    def cycle_keys(self, taken: Iterable[K]) -> set[K]:
        """``taken`` and the nominated jobs: a cycle's whole set. The nominated set is
        rebuilt from the cycle's outcomes, so a job gone or moved on drops out."""
        keys = {*taken, *self.nominated}
        self.nominated = set()
        return keys

    def decided(self, key: K, waiting: Waiting | None) -> None:
        """Record a decision: ``waiting`` when the job was told to wait (None when it was
        placed, rejected, or handed on)."""
        if waiting is None:
            self.waiting.pop(key, None)
        else:
            self.waiting[key] = waiting

    def nominate(self, key: K) -> None:
        """The job waits for GPUs it evicted: it is in every cycle until it has them."""
        self.nominated.add(key)
