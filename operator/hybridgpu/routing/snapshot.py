"""What the routing engine sees: plain, immutable data about capacity and offers at one instant.

Built by the operator from Kopf indexes, Prometheus and the network adapters, or by the
simulator from a trace; the engine never does I/O of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ProviderType, TrustTier


@dataclass(frozen=True, slots=True)
class PerGPUHour:
    """Priced by the GPU-hour (Akash, Vast.ai, Nosana, in-cluster amortised price)."""

    usd: Decimal


@dataclass(frozen=True, slots=True)
class PerToken:
    """Priced by the token (OpenAI-compatible endpoints such as io.net IO Intelligence)."""

    input_usd_per_million: Decimal
    output_usd_per_million: Decimal


@dataclass(frozen=True, slots=True)
class PerUnit:
    """Priced by an output unit (Livepeer: pixels of output; audio: seconds).

    ``unit`` names what is counted (``pixel``, ``second``, ``request``); the cost model knows
    how many units a request of each task produces.
    """

    usd_per_unit: Decimal
    unit: str


Pricing = PerGPUHour | PerToken | PerUnit


@dataclass(frozen=True, slots=True)
class InClusterPool:
    """The cluster's GPUs of one product."""

    gpu_product: str
    memory_bytes: int
    allocatable: int
    """GPUs the nodes offer (sum of nvidia.com/gpu allocatable)."""
    in_use: int
    """GPUs requested by Pods bound to those nodes."""
    queued: int = 0
    """GPUs requested by pending Pods that want this product."""
    utilization_percent: float | None = None
    """Mean DCGM_FI_DEV_GPU_UTIL over the pool, when Prometheus is configured."""
    max_free_per_node: int | None = None
    """Largest number of free GPUs on one node (a job's GPUs must share a node)."""
    max_gpus_per_node: int | None = None
    """GPUs of the pool's biggest node: a job asking for more can never run here."""
    release_seconds: tuple[float, ...] = ()
    """Seconds from now until each GPU in use is expected back, ascending (one entry per GPU).
    Empty when unknown; the engine then assumes the policy's maxQueueTime."""
    node_ready_seconds: tuple[float, ...] = ()
    """Seconds from now until one node has ``g`` GPUs free, at index ``g - 1`` (``inf`` where
    no node's known releases get there; see ``routing.offerfacts.node_ready_seconds``). A
    job's GPUs share a node, so GPUs coming back on different nodes do not add up. Empty
    when unknown: the engine then counts the pool's releases alone."""
    unhealthy_gpus: int = 0
    """GPUs of nodes left out of ``allocatable`` because DCGM reports a fault on the node
    (XID error, uncorrectable remapped rows, row remap failure, failed health check)."""
    unhealthy_reason: str = ""
    """The first such fault, e.g. ``node t1: GPU 0: XID 79``."""
    unhealthy_in_use: int = 0
    """GPUs requested by Pods on those nodes (left out of ``in_use`` with them)."""
    unhealthy_max_free: int = 0
    """Largest number of free GPUs on one of those nodes."""
    measured_busy: float | None = None
    """GPUs of ``allocatable`` that DCGM measures busy (per GPU the larger of utilisation and
    framebuffer use), for policies that count busy by telemetry; None without telemetry."""
    reserved: int = 0
    """GPUs kept free for jobs that can run on no other pool or offer (``routing.scarcity``:
    the whole pool while such jobs were seen recently). A job that could also run elsewhere
    passes the pool over rather than eat into them, when the policy's ``inCluster.scarcity``
    allows and another place is close in price."""

    @property
    def free(self) -> int:
        return max(self.allocatable - self.in_use, 0)


@dataclass(frozen=True, slots=True)
class ExternalOffer:
    """One GPU product offered by one external network, as last refreshed."""

    provider: str
    """ComputeProvider name."""
    provider_type: ProviderType
    gpu_product: str
    memory_bytes: int
    pricing: Pricing
    available: int
    """GPUs (or concurrent job slots) available now."""
    region: str
    trust_tier: TrustTier
    start_latency_seconds: float
    """Typical time from submission to running (p50 observed, or the network's typical figure)."""
    error_rate: float = 0.0
    """Share of recent calls or jobs that failed, 0..1."""
    carbon_intensity: int | None = None
    """gCO2/kWh where the GPUs run."""
    circuit_open: bool = False
    paused: bool = False
    active_jobs: int = 0
    max_concurrent_jobs: int = 10
    labels: dict[str, str] = field(default_factory=dict)
    """The ComputeProvider's labels, for the policy's providerSelector."""
    tasks: frozenset[str] | None = None
    """Tasks the network can run (None: any)."""
    max_gpus_per_job: int | None = None
    """The most GPUs one job can have here (a Nosana job runs on one GPU; a Vast.ai instance
    has its bundle's GPUs); None: as many as are available."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the engine may know at ``now``."""

    now: datetime
    pools: tuple[InClusterPool, ...] = ()
    offers: tuple[ExternalOffer, ...] = ()
    budget_spent: Decimal = Decimal(0)
    """External spend of the job's RoutingPolicy in the current budget period."""
    telemetry_available: bool = False
    """Whether utilisation came from Prometheus (else requests alone)."""
    inventory_final: bool = False
    """Whether no GPU product, node or offer can appear later (a replay's fixed world). In a
    live cluster nodes and providers come and go, so a job nothing matches now waits."""
    offer_facts: Any = field(default=None, init=False, repr=False, compare=False)
    """The engine's per-offer precomputation (names, price units, trust ranks...), built on the
    first decision against this snapshot and reused by later ones; not part of its value."""
    pool_facts: Any = field(default=None, init=False, repr=False, compare=False)
    """Likewise for the in-cluster pools."""
