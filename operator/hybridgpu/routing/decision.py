"""What the routing engine answers: the chosen target (or why none), and every candidate ranked."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The engine's answer for one job at one instant."""

    outcome: Outcome
    target: ScoredCandidate | None
    candidates: tuple[ScoredCandidate, ...]
    """Best first; infeasible ones after the feasible, each with its reason."""
    reason: str
    """CamelCase, e.g. CheapestFeasible, NoCapacity, PriceCapExceeded."""
    message: str
    """One line for an Event: where and why."""
    retry_after_seconds: float | None = None
    """For Wait: how soon to decide again."""


def to_status(decision: RoutingDecision, policy_name: str, now: datetime) -> Decision:
    """The decision as the InferenceJob status model, with at most 20 candidates."""
    return Decision(
        time=now,
        policy=policy_name,
        outcome=decision.outcome,
        target=decision.target.name if decision.target else "",
        message=decision.message,
        retry_after_seconds=decision.retry_after_seconds,
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
            )
            for c in decision.candidates[:STATUS_CANDIDATE_LIMIT]
        ],
    )
