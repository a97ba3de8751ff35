"""What unfinished jobs hold, derived from their statuses: GPUs, offer capacity, provider
slots and budget dollars.

Admission subtracts these from the snapshot before deciding, so no two decisions promise the
same GPU, slot or dollar. They are a cache of the jobs' statuses (as Kueue's scheduler cache is
of its Workloads), never a counter of their own: a restarted operator derives the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from hybridgpu.api.inferencejob import AttemptOutcome
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool
from hybridgpu.units import parse_duration, parse_money

ACTIVE_OUTCOMES = frozenset(
    {AttemptOutcome.DISPATCHING, AttemptOutcome.PENDING, AttemptOutcome.RUNNING}
)

PolicyKey = tuple[str, str]
"""(namespace, RoutingPolicy name)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Capacity held by a job's active attempt."""

    uid: str
    backend: str
    provider: str
    gpu_product: str
    gpus: int
    started: datetime | None
    reserve_gpus: bool
    """In-cluster and no Pod of the attempt seen yet: its GPUs are held by this reservation.
    Once the Pod exists the inventory counts it instead (never both)."""
    runs_for: float | None = None
    """The job's estimatedDuration in seconds: when reserved GPUs are expected back."""
    running_since: datetime | None = None
    """When the attempt was first seen running; None before (Dispatching, Pending)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """What one external attempt counts against its policy's budget."""

    policy: PolicyKey
    amount: Decimal
    """Committed: the accrued cost once ended; the larger of estimate and accrued before."""
    ended: datetime | None
    """None while the attempt is active (it counts in every period until it ends)."""
    uid: str = ""
    accrued: Decimal = Decimal(0)
    """What it has cost so far."""
    started: datetime | None = None
    """When the attempt was admitted: a policy deleted and created again under the same name
    is not charged for what its predecessor admitted."""


def _money(value: object) -> Decimal:
    return parse_money(str(value)) if value else Decimal(0)


def job_charges(body: Mapping[str, Any]) -> tuple[Charge, ...]:
    """Budget charges of one job: accrued cost of ended external attempts, and the larger of
    estimate and accrued cost of an active one, each to the policy it was admitted under."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    uid = str(meta.get("uid") or "")
    default_policy = str((body.get("spec") or {}).get("policyRef") or "default")
    out = []
    for attempt in (body.get("status") or {}).get("attempts") or []:
        if attempt.get("backend") != "External":
            continue
        policy = (namespace, str(attempt.get("policyRef") or default_policy))
        accrued = _money(attempt.get("cost"))
        started = parse_timestamp(attempt.get("startTime"))
        if attempt.get("outcome") in ACTIVE_OUTCOMES:
            amount = max(accrued, _money(attempt.get("estimatedCost")))
            out.append(Charge(policy, amount, None, uid, accrued, started))
        elif accrued:
            ended = parse_timestamp(attempt.get("endTime"))
            out.append(Charge(policy, accrued, ended, uid, accrued, started))
    return tuple(out)


def job_hold(body: Mapping[str, Any], pod_owners: Collection[str]) -> Hold | None:
    """The capacity a job's active attempt holds, if it has one."""
    attempts = (body.get("status") or {}).get("attempts") or []
    if not attempts or attempts[-1].get("outcome") not in ACTIVE_OUTCOMES:
        return None
    attempt = attempts[-1]
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    gpus = int(attempt.get("gpus") or (spec.get("gpu") or {}).get("count") or 1)
    in_cluster = attempt.get("backend") == "InCluster"
    try:
        runs_for: float | None = parse_duration(str(spec.get("estimatedDuration"))).total_seconds()
    except (TypeError, ValueError):
        runs_for = None
    owner = f"{meta.get('namespace')}/{meta.get('name')}/{attempt.get('attempt')}"
    return Hold(
        uid=str(meta.get("uid") or ""),
        backend=str(attempt.get("backend") or ""),
        provider=str(attempt.get("provider") or ""),
        gpu_product=str(attempt.get("gpuProduct") or ""),
        gpus=gpus,
        started=parse_timestamp(attempt.get("startTime")),
        reserve_gpus=in_cluster
        and owner not in pod_owners
        and f"{meta.get('uid')}/{attempt.get('attempt')}" not in pod_owners,
        runs_for=runs_for,
        running_since=(
            parse_timestamp(attempt.get("runningSince"))
            if attempt.get("outcome") == AttemptOutcome.RUNNING
            else None
        ),
    )


def owes_work_on(body: Mapping[str, Any], provider: str) -> bool:
    """Whether a job still has work on ``provider``: its active attempt runs there, or a
    cancel of work there is owed (``status.pendingCancels``)."""
    hold = job_hold(body, ())
    if hold is not None and hold.backend == "External" and hold.provider == provider:
        return True
    owed = (body.get("status") or {}).get("pendingCancels") or []
    return any(isinstance(p, Mapping) and p.get("provider") == provider for p in owed)


def committed(charges: Iterable[Charge], since: datetime) -> Decimal:
    """Charges of attempts still active or ended in the period that began at ``since``."""
    return sum((c.amount for c in charges if c.ended is None or c.ended >= since), Decimal(0))


@dataclass(frozen=True)
class Ledger:
    """The part of a policy's spend that outlives its jobs, from the RoutingPolicy's status."""

    period_start: datetime | None = None
    retired: Mapping[str, tuple[Decimal, datetime | None]] = field(default_factory=dict)
    """uid -> (cost, when) of deleted jobs, not yet folded into ``retired_spent``."""
    retired_spent: Decimal = Decimal(0)
    created: datetime | None = None
    """The policy's creationTimestamp: attempts admitted before it belong to another policy
    of the same name."""

    @classmethod
    def from_status(
        cls, status: Mapping[str, Any] | None, created: datetime | None = None
    ) -> Ledger:
        status = status or {}
        retired = {
            str(uid): (_money(entry.get("cost")), parse_timestamp(entry.get("at")))
            for uid, entry in (status.get("retired") or {}).items()
            if isinstance(entry, Mapping)
        }
        return cls(
            period_start=parse_timestamp(status.get("periodStart")),
            retired=retired,
            retired_spent=_money(status.get("retiredSpent")),
            created=created,
        )

    def base(self, since: datetime) -> Decimal:
        """Spend of deleted jobs in the period that began at ``since``."""
        folded = self.retired_spent if self.period_start == since else Decimal(0)
        return folded + sum(
            (cost for cost, at in self.retired.values() if at is None or at >= since),
            Decimal(0),
        )


@dataclass
class Holdings:
    """Everything unfinished jobs hold, summed, and what admission adds during one cycle."""

    reserved: Counter[str] = field(default_factory=Counter)
    """product -> GPUs reserved in-cluster without a Pod yet."""
    reserved_holds: list[Hold] = field(default_factory=list)
    provider_jobs: Counter[str] = field(default_factory=Counter)
    """provider -> active external attempts (its maxConcurrentJobs slots)."""
    offer_taken: list[Hold] = field(default_factory=list)
    """External holds, to subtract from offers refreshed before they started."""
    charges: dict[PolicyKey, list[Charge]] = field(default_factory=dict)
    ledgers: dict[PolicyKey, Ledger] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        bodies: Iterable[Mapping[str, Any]],
        pod_owners: Collection[str],
        *,
        finished: Iterable[Charge] = (),
        ledgers: Mapping[PolicyKey, Ledger] | None = None,
    ) -> Holdings:
        """What ``bodies`` (unfinished jobs) hold, plus the charges of finished jobs."""
        held = cls(ledgers=dict(ledgers or {}))
        for charge in finished:
            held.charge(charge)
        for body in bodies:
            for charge in job_charges(body):
                held.charge(charge)
            hold = job_hold(body, pod_owners)
            if hold is not None:
                held.add(hold)
        return held

    def add(self, hold: Hold) -> None:
        if hold.backend == "InCluster":
            if hold.reserve_gpus:
                self.reserved[hold.gpu_product] += hold.gpus
                self.reserved_holds.append(hold)
            return
        self.provider_jobs[hold.provider] += 1
        self.offer_taken.append(hold)

    def charge(self, charge: Charge) -> None:
        self.charges.setdefault(charge.policy, []).append(charge)

    def _live(self, policy: PolicyKey) -> list[Charge]:
        """Charges of jobs that exist; a deleted job's are in the ledger instead."""
        ledger = self.ledgers.get(policy)
        if ledger is None:
            return list(self.charges.get(policy, ()))
        created = ledger.created.replace(microsecond=0) if ledger.created else None
        # Timestamps have whole seconds; an attempt admitted in the policy's first second counts.
        return [
            c
            for c in self.charges.get(policy, ())
            if c.uid not in ledger.retired
            and (created is None or c.started is None or c.started >= created)
        ]

    def _base(self, policy: PolicyKey, since: datetime) -> Decimal:
        ledger = self.ledgers.get(policy)
        return ledger.base(since) if ledger is not None else Decimal(0)

    def committed(self, policy: PolicyKey, since: datetime) -> Decimal:
        """Spent plus what active attempts are still expected to cost: what admission holds
        against the budget."""
        return self._base(policy, since) + committed(self._live(policy), since)

    def spent(self, policy: PolicyKey, since: datetime) -> Decimal:
        """What external work charged to the policy has cost so far in the period."""
        return self._base(policy, since) + sum(
            (c.accrued for c in self._live(policy) if c.ended is None or c.ended >= since),
            Decimal(0),
        )

    def pools(
        self, pools: tuple[InClusterPool, ...], now: datetime | None = None
    ) -> tuple[InClusterPool, ...]:
        """Pools with reserved GPUs counted as in use, and expected back after the job's
        estimatedDuration (from its start, once known)."""
        held = self.reserved
        if not held:
            return pools
        releases: dict[str, list[float]] = {}
        for hold in self.reserved_holds:
            if hold.runs_for is None:
                continue
            elapsed = (now - hold.started).total_seconds() if now and hold.started else 0.0
            back = max(hold.runs_for - max(elapsed, 0.0), 0.0)
            releases.setdefault(hold.gpu_product, []).extend([back] * hold.gpus)
        return tuple(
            reserve(p, held[p.gpu_product], releases.get(p.gpu_product, ()))
            if held.get(p.gpu_product)
            else p
            for p in pools
        )

    def offers(
        self, offers: tuple[ExternalOffer, ...], refreshed: Mapping[str, datetime | None]
    ) -> tuple[ExternalOffer, ...]:
        """Offers with provider slots in use, and with the capacity taken by attempts the
        provider's last refresh may not show yet: those not running there yet, and those that
        started running after it (an older one is in the offer already).

        Not from admission: a network takes the GPUs when the work is placed (an Akash lease,
        a Nosana node picking the job up), which may be minutes later, and a refresh in
        between still offers them (two jobs were sent to one free Akash GPU that way)."""
        taken: Counter[tuple[str, str]] = Counter()
        for hold in self.offer_taken:
            since = refreshed.get(hold.provider)
            if _maybe_unseen(hold, since):
                taken[(hold.provider, hold.gpu_product)] += hold.gpus
        return tuple(
            replace(
                o,
                active_jobs=self.provider_jobs[o.provider],
                available=max(o.available - taken[(o.provider, o.gpu_product)], 0),
            )
            for o in offers
        )


def _maybe_unseen(hold: Hold, refreshed: datetime | None) -> bool:
    """Whether the provider's offer list, read at ``refreshed``, may still count the GPUs of
    ``hold`` as free: it does until the network runs the work."""
    if refreshed is None or hold.running_since is None or hold.started is None:
        return True
    return max(hold.started, hold.running_since) >= refreshed


def reserve(pool: InClusterPool, gpus: int, releases: Iterable[float] = ()) -> InClusterPool:
    """``pool`` with ``gpus`` more in use, coming back after ``releases`` seconds."""
    extra = tuple(releases)
    return replace(
        pool,
        in_use=pool.in_use + gpus,
        max_free_per_node=(
            None if pool.max_free_per_node is None else max(pool.max_free_per_node - gpus, 0)
        ),
        release_seconds=(
            tuple(sorted((*pool.release_seconds, *extra))) if extra else pool.release_seconds
        ),
    )
