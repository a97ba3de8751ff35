"""The RoutingPolicy kind: how a namespace trades price, latency, reliability and carbon."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from hybridgpu.api.common import (
    ApiModel,
    Condition,
    Duration,
    GPUPrice,
    LabelSelector,
    Money,
    Name,
    ObjectMeta,
    Quantity,
    StatusModel,
    conditions_field,
)
from hybridgpu.api.computeprovider import TrustTier
from hybridgpu.units import parse_quantity


class WhenExceeded(StrEnum):
    IN_CLUSTER_ONLY = "InClusterOnly"
    REJECT = "Reject"


class Weights(ApiModel):
    """Relative weights of the score's terms, 0-100 each."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.price + self.latency + self.reliability + self.carbon > 0",
                    "message": "at least one weight must be above 0",
                }
            ]
        }
    )

    price: int = Field(default=50, ge=0, le=100)
    """Weight of the estimated cost."""
    latency: int = Field(default=30, ge=0, le=100)
    """Weight of the expected time until the job runs."""
    reliability: int = Field(default=20, ge=0, le=100)
    """Weight of the backend's observed success rate."""
    carbon: int = Field(default=0, ge=0, le=100)
    """Weight of the backend's carbon intensity."""

    @model_validator(mode="after")
    def _some_weight(self) -> Weights:
        if self.price + self.latency + self.reliability + self.carbon == 0:
            raise ValueError("spec.weights: at least one weight must be above 0")
        return self


class BusyFrom(StrEnum):
    """What counts a pool's GPUs busy for the spillover rule."""

    REQUESTS = "Requests"
    """GPUs requested by bound Pods (nvidia.com/gpu), plus those pending for the product."""
    TELEMETRY = "Telemetry"
    """GPUs measured busy by DCGM (per GPU the larger of utilisation and framebuffer use),
    plus those pending; for GPUs shared by time-slicing or fractional requests, whose
    requests say little about load. Falls back to requests while telemetry is missing or
    stale, and the job's TelemetryAvailable condition says so."""


class Scarcity(ApiModel):
    """Keeps a pool that some jobs can use alone for them, while others have a place nearby.

    A pool is scarce while jobs that can run on no other place (their gpu.products name only
    its product among the pools and offers) held or wanted GPUs there within ``window``. A job
    that can also run elsewhere passes such a pool over (``ScarceProduct``) when another place
    on time costs at most ``maxPremiumPercent`` more; otherwise it takes the pool as before.
    """

    max_premium_percent: int = Field(default=100, ge=0, le=1000)
    """How much dearer, in percent of the estimated cost, the other place may be; 0 turns the
    rule off."""
    window: Duration = timedelta(days=7)
    """How long a pool stays scarce after the last job that can use only it was seen."""

    @model_validator(mode="after")
    def _positive_window(self) -> Scarcity:
        if self.window.total_seconds() <= 0:
            raise ValueError("spec.inCluster.scarcity.window: must be above 0")
        return self


class InClusterPolicy(ApiModel):
    """How the cluster's own GPUs are used."""

    enabled: bool = True
    """Whether jobs may run on the cluster's GPUs."""
    gpu_prices: list[GPUPrice] = Field(default_factory=list, max_length=64)
    """Owners' amortised price per GPU-hour per product, so in-cluster and external compare in
    one currency. An entry for gpuProduct 'default' applies to any product not listed."""
    spillover_utilization: int = Field(default=90, ge=1, le=100)
    """Percent of in-cluster GPUs in use above which jobs may spill over to external networks."""
    max_queue_time: Duration = timedelta(minutes=5)
    """How long an in-cluster job may wait unscheduled before it is re-routed."""
    busy_from: BusyFrom = BusyFrom.REQUESTS
    """Requests or Telemetry: how spilloverUtilization counts busy GPUs."""
    scarcity: Scarcity = Field(default_factory=Scarcity)
    """Whether jobs that could run elsewhere leave a pool to the jobs that can use only it."""

    def price_for(self, product: str) -> Decimal | None:
        """The amortised price for ``product``, falling back to the 'default' entry."""
        fallback = None
        for entry in self.gpu_prices:
            if entry.gpu_product == product:
                return entry.price_per_gpu_hour
            if entry.gpu_product == "default":
                fallback = entry.price_per_gpu_hour
        return fallback


class ExternalPolicy(ApiModel):
    """Which external networks may be used."""

    enabled: bool = True
    """Whether jobs may run on external networks."""
    providers: list[Name] = Field(default_factory=list)
    """Names of ComputeProviders that may be used; empty means every Ready one."""
    provider_selector: LabelSelector | None = None
    """Only ComputeProviders whose labels match."""
    max_price_per_gpu_hour: Money | None = None
    """Hard cap on any external offer, US dollars per GPU-hour."""
    min_trust_tier: TrustTier = TrustTier.COMMUNITY
    """Lowest trust tier allowed: community < verified < audited."""


class Budget(ApiModel):
    """A spending limit on external networks per period."""

    limit: Money
    """US dollars that external work may cost per period."""
    period: Duration = timedelta(days=30)
    """Length of a budget period, e.g. 720h."""
    when_exceeded: WhenExceeded = WhenExceeded.IN_CLUSTER_ONLY
    """InClusterOnly keeps routing in-cluster; Reject fails jobs that would need external GPUs."""


class Failover(ApiModel):
    """How a job moves on when a backend fails."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    """How many backends a job may try in all."""
    backoff: Duration = timedelta(seconds=10)
    """Pause before the next attempt."""
    max_run_time_factor: float = Field(default=2.0, ge=1.0, le=100.0)
    """An attempt running longer than the job's estimatedDuration times this is cancelled
    (reason DeadlineExceeded) and the job fails over."""


class Deferral(ApiModel):
    """Lets jobs without a startWithin wait for a cheap place rather than take a dear one now."""

    max_premium_percent: int = Field(default=10, ge=0, le=1000)
    """How much dearer, in percent of the estimated cost, a place free now may be than the
    cheapest place that could take the job once capacity frees (an in-cluster pool with a long
    queue, an offer out of capacity); a dearer place is not taken, the job waits instead."""
    max_wait: Duration = timedelta(days=14)
    """How long after its creation a job may wait so; after that it takes the best place free."""

    @model_validator(mode="after")
    def _positive_wait(self) -> Deferral:
        if self.max_wait.total_seconds() <= 0:
            raise ValueError("spec.deferral.maxWait: must be above 0")
        return self


class Evict(StrEnum):
    NEVER = "Never"
    LOWER_RANK = "LowerRank"


class Preemption(ApiModel):
    """Lets the policy's latency-sensitive jobs evict preemptible work from the cluster's GPUs
    and from full offers of networks that can cancel."""

    evict: Evict = Evict.LOWER_RANK
    """LowerRank: a job with a startWithin that nothing starts in time (or that would otherwise
    pay more elsewhere than the victims' lost work costs) evicts running in-cluster attempts,
    or submitted attempts on a network that can cancel (Pending or Running, where its cost fits
    the budget), of jobs with ``spec.preemptible: true`` and a lower rank (a lower policy
    priority; within one priority, work without a startWithin). Never: no eviction."""
    checkpoint_interval: Duration = timedelta(minutes=15)
    """How often the evicted work is assumed to have checkpointed: the work an eviction loses,
    and so what it costs, is priced as at most this long on the victim's GPUs."""

    @model_validator(mode="after")
    def _positive_interval(self) -> Preemption:
        if self.checkpoint_interval.total_seconds() <= 0:
            raise ValueError("spec.preemption.checkpointInterval: must be above 0")
        return self


class RoutingPolicySpec(ApiModel):
    """Weights, limits and budgets for routing the namespace's InferenceJobs."""

    weights: Weights = Field(default_factory=Weights)
    """Relative weights of price, latency, reliability and carbon."""
    in_cluster: InClusterPolicy = Field(default_factory=InClusterPolicy)
    """Use of the cluster's own GPUs."""
    external: ExternalPolicy = Field(default_factory=ExternalPolicy)
    """Use of external GPU networks."""
    budget: Budget | None = None
    """Spending limit on external networks; none means unlimited."""
    failover: Failover = Field(default_factory=Failover)
    """Failover limits."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Admission order between policies: jobs of a higher priority are decided first, then
    oldest first. Jobs of one policy are always decided oldest first."""
    deferral: Deferral | None = None
    """Cost-first waiting for jobs without a startWithin; none means they take the best place
    free now (or queue in-cluster within maxQueueTime)."""
    preemption: Preemption | None = None
    """Eviction of preemptible lower-ranked work, in the cluster or on networks that can
    cancel, for this policy's latency-sensitive jobs; none means they never evict."""
    max_input_size: Quantity | None = None
    """Largest spec.input.source object a job may name, as a quantity such as 1Gi (default
    1Gi); a larger one fails the job with InputTooLarge before anything is dispatched."""

    def max_input_bytes(self) -> int:
        """spec.maxInputSize in bytes (1 GiB when unset)."""
        return parse_quantity(self.max_input_size) if self.max_input_size else 2**30


class RetiredSpend(StatusModel):
    """External spend of a deleted InferenceJob, kept so that deleting jobs gives no budget back."""

    cost: Money
    """What the job's attempts charged to this policy cost, US dollars."""
    at: datetime | None = None
    """When the last of those attempts ended."""
    job: str = ""
    """The InferenceJob's name, to tell when it is gone for good."""


class RoutingPolicyStatus(StatusModel):
    """The spend ledger of the current budget period, and routing counts."""

    spent: Money | None = None
    """US dollars spent on external networks in the current period: the accrued cost of
    attempts charged to this policy, including those of jobs deleted since."""
    committed: Money | None = None
    """spent plus what running attempts are still expected to cost (the larger of their
    estimate and their accrued cost): the figure admission holds against the limit."""
    remaining: Money | None = None
    """budget.limit minus committed (0 when over); absent without a budget."""
    period_start: datetime | None = None
    """When the current budget period began."""
    retired: dict[str, RetiredSpend] = Field(default_factory=dict)
    """Spend of jobs deleted in this period, by UID, until it is folded into retiredSpent."""
    retired_spent: Money | None = None
    """Spend of deleted jobs of this period already folded in, US dollars."""
    routed_jobs: dict[str, int] = Field(default_factory=dict)
    """Jobs routed per target (in-cluster or provider name) in the current period."""
    conditions: list[Condition] = conditions_field()
    """BudgetExceeded and others."""
    observed_generation: int | None = None
    """The generation of the spec this status describes."""


class RoutingPolicy(ApiModel):
    """How a namespace's InferenceJobs are routed."""

    model_config = {"extra": "ignore"}

    api_version: str = "hybridgpu.dev/v1alpha1"
    """hybridgpu.dev/v1alpha1"""
    kind: str = "RoutingPolicy"
    """RoutingPolicy"""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: RoutingPolicySpec = Field(default_factory=RoutingPolicySpec)
    """Weights, limits and budgets."""
    status: RoutingPolicyStatus = Field(default_factory=RoutingPolicyStatus)
    """Observed spend, written by the operator."""
