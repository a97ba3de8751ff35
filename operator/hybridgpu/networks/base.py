"""The protocol every external GPU network adapter implements, and the factory.

The operator talks to every network through :class:`NetworkAdapter`::

    adapter = make_adapter(name, spec, credential, http_policy=None, batch_concurrency=8)
    offers = await adapter.list_offers()            # list[ExternalOffer], price in the
                                                    # network's unit (PerGPUHour/PerToken)
    ref = await adapter.submit(job, idempotency_key=key, gpu_product=product,
                               max_price_per_gpu_hour=cap, checkpoint=None, requests=None)
    st = await adapter.status(ref)                  # RemoteStatus
    await adapter.cancel(ref)                       # idempotent
    url = await adapter.result(ref)                 # str | None
    adapter.circuit_state, adapter.error_rate, adapter.start_latency  # for provider status
    await adapter.aclose()

Idempotency per key. A second ``submit`` with the same key returns the same remote job:

* livepeer, openai (client-driven: the operator sends each request itself): the batch runs
  in a background task of this process, keyed by the idempotency key; every request carries
  the header ``Idempotency-Key: <key>/<index>``. After a restart call ``submit`` again with the
  last persisted :class:`Checkpoint`: completed requests are not sent again.
* akash: the key is written into the SDL (``env: HYBRIDGPU_IDEMPOTENCY_KEY=<key>``), so the
  manifest version the chain records as ``deployment.hash`` is a function of (job, key);
  before creating, the adapter lists the account's deployments and reuses one with it.
* nosana: the job runs as a deployment named after the key; the adapter looks the name up
  (``GET /api/deployments?name=``) before creating one.
* vastai: the instance ``label`` is ``hybridgpu-<key>``; the adapter lists instances first.
  A destroyed instance is forgotten by Vast.ai, so only there does a submit after ``cancel``
  rent again; use a new key per attempt (the operator does).

``RemoteStatus.accrued_usd`` is the whole job's cost so far. For a client-driven batch that
includes the requests an earlier process completed (the checkpoint handed to ``submit``), each
costed by the adapter's estimate of one request, so the operator can store it as is. For
container networks it is the network's hourly price times the time the job has run, on the
network's clock (job start/end times, and the HTTP ``Date`` header for "now"); the stand-ins
report simulated time, so a 1-hour job bills an hour whatever their ``timeScale``.

Requests of a client-driven batch come from ``requests=`` if given (the operator loads a
configMapRef), else ``spec.input.inline``, else synthetic requests built from the task, model
and input/output token counts (see :mod:`hybridgpu.networks.requests`).

Prices are checked before and after submission: ``PriceAboveCap`` is raised (and anything
created is cancelled) when the network asks more than ``max_price_per_gpu_hour``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hybridgpu.api.computeprovider import ComputeProviderSpec, ProviderType
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer

if TYPE_CHECKING:
    # Imported for the annotation only: results.output imports networks.checkpoint.
    from hybridgpu.results.output import OutputSummary

RemoteState = Literal["Pending", "Running", "Succeeded", "Failed", "Lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"Succeeded", "Failed", "Lost"})


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """The operator's handle on one remote job; stored in status as :meth:`to_str`."""

    provider: str
    id: str
    idempotency_key: str

    def to_str(self) -> str:
        """``provider|id|key`` (none of the parts may hold ``|``)."""
        for part in (self.provider, self.id, self.idempotency_key):
            if "|" in part:
                raise ValueError(f"remote reference part {part!r} must not contain '|'")
        return f"{self.provider}|{self.id}|{self.idempotency_key}"

    @classmethod
    def from_str(cls, text: str) -> RemoteRef:
        """Parse :meth:`to_str` output; raises ValueError naming the problem."""
        parts = text.split("|")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"remote reference {text!r} is not 'provider|id|idempotencyKey'")
        return cls(parts[0], parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What the network says about a job now."""

    state: RemoteState
    completed: int = 0
    total: int = 0
    accrued_usd: Decimal = Decimal(0)
    price_per_gpu_hour: Decimal | None = None
    message: str = ""
    checkpoint: Checkpoint | None = None
    output: OutputSummary | None = None
    """A client-driven batch's output object, once composed."""
    started_at: datetime | None = None
    """When the work started running, where the backend knows (the cluster's Pods do)."""
    ended_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        """Whether the job will not change state any more."""
        return self.state in TERMINAL_STATES


class NetworkAdapter(Protocol):
    """One external GPU network, as the operator sees it."""

    name: str
    unattended: bool
    """Whether submitted work runs without this process: once its id is recorded, a restarted
    operator only polls it. False for client-driven batches, which this process sends itself
    and submits again from their checkpoint after a restart."""

    @property
    def circuit_state(self) -> str:
        """Closed, Open or HalfOpen."""
        ...

    @property
    def error_rate(self) -> float:
        """Share of recent calls that failed."""
        ...

    @property
    def start_latency(self) -> tuple[float | None, float | None]:
        """Observed (p50, p95) seconds from submission to running."""
        ...

    async def list_offers(self) -> list[ExternalOffer]:
        """The network's current offers."""
        ...

    async def submit(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
        checkpoint: Checkpoint | None = None,
        requests: list[dict[str, Any]] | None = None,
        results: Any = None,
    ) -> RemoteRef:
        """Start the job (or find the one already started with this key). ``results``: a
        client-driven batch's :class:`~hybridgpu.networks.batch.BatchResults` (its input and
        its output in the result store); container networks take no such thing."""
        ...

    async def find(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
    ) -> RemoteRef | None:
        """The work created for this key, if any (never creates anything).

        Finds what a crashed or failed submission may have left, so it can be cancelled.
        """
        ...

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """The job's state, progress and cost so far."""
        ...

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop the job; cancelling a finished or vanished job is fine."""
        ...

    async def result(self, ref: RemoteRef) -> str | None:
        """Where the job's output is (URL or id), if the network says."""
        ...

    async def aclose(self) -> None:
        """Release connections and stop background work."""
        ...


def make_adapter(
    name: str,
    spec: ComputeProviderSpec,
    credential: str | None,
    *,
    http_policy: HttpPolicy | None = None,
    batch_concurrency: int = 8,
) -> NetworkAdapter:
    """Build the adapter for ``spec.type``; ``credential`` is the Secret's value, if any."""
    # Imported here because every adapter module imports this one.
    from hybridgpu.networks import akash, livepeer, nosana, openai_compat, vastai

    policy = http_policy or HttpPolicy()
    if spec.type is ProviderType.LIVEPEER:
        return livepeer.LivepeerAdapter(name, spec, credential, policy, batch_concurrency)
    if spec.type is ProviderType.OPENAI:
        return openai_compat.OpenAIAdapter(name, spec, credential, policy, batch_concurrency)
    if spec.type is ProviderType.AKASH:
        return akash.AkashAdapter(name, spec, credential, policy)
    if spec.type is ProviderType.NOSANA:
        return nosana.NosanaAdapter(name, spec, credential, policy)
    if spec.type is ProviderType.VASTAI:
        return vastai.VastAdapter(name, spec, credential, policy)
    raise ValueError(f"spec.type: unknown provider type {spec.type!r}")  # pragma: no cover
