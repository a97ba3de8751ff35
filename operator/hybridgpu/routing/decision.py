"""What the routing engine answers: the chosen target (or why none), and every candidate ranked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Literal, NamedTuple

from hybridgpu.api.inferencejob import Candidate, Decision
from hybridgpu.routing.snapshot import ExternalOffer

Outcome = Literal["Routed", "Wait", "Rejected"]
BackendName = Literal["InCluster", "External"]
IN_CLUSTER = "in-cluster"
STATUS_CANDIDATE_LIMIT = 20


class ScoredCandidate(NamedTuple):
    """One place the job could go, as the engine judged it.

    A NamedTuple rather than a dataclass: the engine builds one per offer per decision and
    tuple construction is several times cheaper, while staying immutable.
    """

    name: str
    """``in-cluster/<product>`` or ``<provider>/<product>``."""
    backend: BackendName
    provider: str
    """ComputeProvider name, or ``in-cluster``."""
    gpu_product: str
    price_per_gpu_hour: Decimal
    """The offer's price normalised to USD per GPU-hour for this job."""
    estimated_cost: Decimal
    """Estimated USD cost of the whole job there."""
    expected_start_seconds: float
    """Seconds from now until the job would be running there."""
    score: float | None
    """Weighted score in 0..1, higher is better; None when infeasible."""
    feasible: bool
    reason: str
    """CamelCase: why it was rejected, or ``Feasible``."""
    offer: ExternalOffer | None = None
    """The external offer this candidate came from (None in-cluster)."""
    estimate: str = ""
    """What the cost rests on: ``Work 34.6 GPU-h`` (throughput table), ``EstimatedDuration
    1 GPU-h`` (the job's own figure), ``PerToken`` or ``PerUnit``."""


class RoutingDecision:
    """The engine's answer for one job at one instant.

    ``candidates`` may be given as a function that ranks them: the engine chooses the target
    without building the full explanation, which only the status, ``explain`` and tests read.
    The function takes how many of the best are wanted (None: all); ``candidates`` calls it
    once and keeps the result, ``top(n)`` asks for only ``n``.
    """

    __slots__ = (
        "_candidates",
        "_rank",
        "awaiting",
        "message",
        "outcome",
        "reason",
        "retry_after_seconds",
        "target",
    )

    outcome: Outcome
    target: ScoredCandidate | None
    reason: str
    """CamelCase, e.g. CheapestFeasible, NoCapacity, PriceCapExceeded."""
    message: str
    """One line for an Event: where and why."""
    retry_after_seconds: float | None
    """For Wait: how soon to decide again."""
    awaiting: tuple[str, ...]
    """For a Wait deferred for price: the busy places it waits for; capacity coming free at
    one of them is a reason to decide again before ``retry_after_seconds``."""

    def __init__(
        self,
        outcome: Outcome,
        target: ScoredCandidate | None,
        candidates: tuple[ScoredCandidate, ...]
        | Callable[[int | None], tuple[ScoredCandidate, ...]],
        reason: str,
        message: str,
        retry_after_seconds: float | None = None,
        awaiting: tuple[str, ...] = (),
    ) -> None:
        self.outcome = outcome
        self.target = target
        if isinstance(candidates, tuple):
            self._candidates: tuple[ScoredCandidate, ...] | None = candidates
            self._rank: Callable[[int | None], tuple[ScoredCandidate, ...]] | None = None
        else:
            self._candidates = None
            self._rank = candidates
        self.reason = reason
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        self.awaiting = awaiting

    @property
    def candidates(self) -> tuple[ScoredCandidate, ...]:
        """Best first; infeasible ones after the feasible, each with its reason."""
        if self._candidates is None:
            assert self._rank is not None
            self._candidates = self._rank(None)
            self._rank = None
        return self._candidates

    def top(self, n: int) -> tuple[ScoredCandidate, ...]:
        """The ``n`` best candidates (as ``candidates[:n]``), ranking no more than needed."""
        if self._candidates is not None or self._rank is None:
            return self.candidates[:n]
        return self._rank(n)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoutingDecision):
            return NotImplemented
        return (
            self.outcome,
            self.target,
            self.reason,
            self.message,
            self.retry_after_seconds,
            self.awaiting,
            self.candidates,
        ) == (
            other.outcome,
            other.target,
            other.reason,
            other.message,
            other.retry_after_seconds,
            other.awaiting,
            other.candidates,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RoutingDecision(outcome={self.outcome!r}, target={self.target!r}, "
            f"candidates={self.candidates!r}, reason={self.reason!r}, "
            f"message={self.message!r}, retry_after_seconds={self.retry_after_seconds!r})"
        )


def to_status(decision: RoutingDecision, policy_name: str, now: datetime) -> Decision:
    """The decision as the InferenceJob status model, with at most 20 candidates."""
    return Decision(
        time=now,
        policy=policy_name,
        outcome=decision.outcome,
        target=decision.target.name if decision.target else "",
        message=decision.message,
        retry_after_seconds=decision.retry_after_seconds,
        awaiting=list(decision.awaiting[:64]),
        candidates=[
            Candidate(
                name=c.name,
                backend=c.backend,
                provider=c.provider,
                gpu_product=c.gpu_product,
                price_per_gpu_hour=c.price_per_gpu_hour,
                estimated_cost=c.estimated_cost,
                expected_start_seconds=c.expected_start_seconds,
                score=None if c.score is None else round(c.score, 6),
                feasible=c.feasible,
                reason=c.reason,
                estimate=c.estimate,
            )
            for c in decision.top(STATUS_CANDIDATE_LIMIT)
        ],
    )
