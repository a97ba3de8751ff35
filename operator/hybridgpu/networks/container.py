"""What the container-marketplace adapters (Akash, Nosana, Vast.ai) share.

On these networks the job's container runs remotely; hybridgpu creates it, polls it and
destroys it. :class:`ContainerAdapter` holds the flow all three follow, and each adapter keeps
only its network's wire format:

* ``start`` finds the job already created for the idempotency key, or creates it;
* ``confirm`` reads what was created and checks its price against the cap again (whatever
  was created is cancelled when that raises one of ``cancel_on``);
* ``inspect`` reads the job as a :class:`RemoteJob`, or None when the network has forgotten it.

Cost is the network's hourly price for the job times the time it has run, measured on the
network's clock: start and end times from the job, "now" from the HTTP ``Date`` header of the
same response (so a skewed local clock, or a stand-in's simulated one, cannot distort it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import AdapterBase
from hybridgpu.networks.base import RemoteRef, RemoteState, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import NetworkError, NotFound, PriceAboveCap
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.units import format_duration

DEFAULT_IMAGE = "vllm/vllm-openai:latest"
KEY_ENV = "HYBRIDGPU_IDEMPOTENCY_KEY"
USD_PLACES = Decimal("0.00000001")


def job_env(job: InferenceJobSpec, key: str) -> dict[str, str]:
    """Environment for the job's container: its own env plus what hybridgpu tells it."""
    env = {var.name: var.value for var in job.env or []}
    env[KEY_ENV] = key
    env["HYBRIDGPU_TASK"] = job.task.value
    env["HYBRIDGPU_MODEL"] = job.model or ""
    env["HYBRIDGPU_REQUESTS"] = str(job.input.requests)
    env["HYBRIDGPU_ESTIMATED_DURATION"] = format_duration(job.estimated_duration)
    return env


def unwrap(body: Any) -> Any:
    """Strip Akash Console's ``{"data": ...}`` envelopes (documented both with and without)."""
    while isinstance(body, dict) and set(body) <= {"data", "pagination"} and "data" in body:
        body = body["data"]
    return body


def decimal_of(value: Any) -> Decimal | None:
    """A Decimal from a JSON string or number (numbers via str, so no binary-float noise).

    A value that is there but no finite number (NaN, Infinity, ``1e999`` read as a float)
    comes back as Infinity: it is above every cap, and offer screening drops it with a reason
    instead of the offer vanishing unexplained.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else Decimal("Infinity")


def epoch_of(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def server_time(response: httpx.Response) -> float:
    """The server's clock from the ``Date`` header, else ours."""
    header = response.headers.get("Date")
    if header:
        try:
            return parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def accrued(price_per_hour: Decimal | None, seconds: float | None) -> Decimal:
    """Cost of running ``seconds`` at ``price_per_hour`` USD."""
    if price_per_hour is None or seconds is None:
        return Decimal(0)
    hours = Decimal(str(round(max(seconds, 0.0), 3))) / Decimal(3600)
    return (price_per_hour * hours).quantize(USD_PLACES)


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """One network's view of a job, reduced to what the operator needs."""

    state: RemoteState
    message: str = ""
    price_per_hour: Decimal | None = None
    """USD per hour for the whole job (all its GPUs)."""
    gpus: int = 1
    started: float | None = None
    ended: float | None = None
    now: float | None = None
    """The network's clock when it answered (epoch seconds)."""
    ran_seconds: float | None = None
    """Run time as the network reports it, when it does; else ended (or now) minus started."""

    def run_seconds(self) -> float | None:
        """How long the job has run (or ran)."""
        if self.ran_seconds is not None:
            return self.ran_seconds
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else self.now
        return (end if end is not None else time.time()) - self.started

    @property
    def price_per_gpu_hour(self) -> Decimal | None:
        """The hourly price per GPU."""
        if self.price_per_hour is None:
            return None
        return self.price_per_hour / max(self.gpus, 1)


class ContainerAdapter(AdapterBase):
    """The create / confirm / poll / destroy flow of a container marketplace."""

    cancel_on: tuple[type[NetworkError], ...] = (PriceAboveCap,)
    """Errors of ``confirm`` after which what was created is cancelled."""
    unattended = True
    """The work runs on the network by itself: once its id is recorded, a restarted operator
    only polls it (a client-driven batch, by contrast, must be sent again from its checkpoint)."""

    def __init__(
        self,
        name: str,
        spec: ComputeProviderSpec,
        credential: str | None,
        policy: HttpPolicy,
        auth_headers: Mapping[str, str],
    ) -> None:
        super().__init__(name, spec, credential, policy, auth_headers)
        self._totals: dict[str, int] = {}
        self._spent: dict[str, Decimal] = {}

    async def fetch(self, path: str) -> tuple[Any, float] | None:
        """GET ``path``: its JSON body and the server's clock, or None when it is gone (404)."""
        try:
            response = await self.client.request("GET", path, retry=True)
        except NotFound:
            return None
        return response.json(), server_time(response)

    async def start(
        self,
        job: InferenceJobSpec,
        key: str,
        gpu_product: str,
        cap: Decimal | None,
    ) -> str:
        """Find the job created for ``key`` or create it; return its id on the network."""
        raise NotImplementedError

    async def lookup(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str | None:
        """The id of the job created for ``key``, if the network has one (creates nothing)."""
        raise NotImplementedError

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Check what was created (its price against ``cap``)."""
        raise NotImplementedError

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """The job as the network shows it now; None when the network has forgotten it."""
        raise NotImplementedError

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop (destroy, close) the job; one already finished or gone is fine."""
        raise NotImplementedError

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
        """Create the job (or find the one created for the key) and check its price."""
        # The container reads its own input (HYBRIDGPU_INPUT_URL in its env, put in the
        # job's spec.env by the controller) and writes its output itself.
        del checkpoint, requests, results
        job_id = await self.start(job, idempotency_key, gpu_product, max_price_per_gpu_hour)
        ref = RemoteRef(self.name, job_id, idempotency_key)
        self._totals[ref.id] = job.input.requests
        self.note_submitted(ref)
        try:
            await self.confirm(ref, job, max_price_per_gpu_hour)
        except self.cancel_on:
            await self.cancel(ref)
            raise
        return ref

    async def find(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
    ) -> RemoteRef | None:
        """The job created for the key, found the way ``start`` finds it."""
        found = await self.lookup(job, idempotency_key, gpu_product, max_price_per_gpu_hour)
        return None if found is None else RemoteRef(self.name, found, idempotency_key)

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """The network's state of the job, its progress and its cost so far."""
        total = self._totals.get(ref.id, 0)
        spent = self._spent
        remote = await self.inspect(ref)
        if remote is None:
            return RemoteStatus(
                "Lost",
                total=total,
                accrued_usd=spent.get(ref.id, Decimal(0)),
                message=f"{ref.id} is gone",
            )
        cost = accrued(remote.price_per_hour, remote.run_seconds())
        # A network that stops reporting run time (say, once a job ended) must not lower
        # what was already spent.
        cost = max(cost, spent.get(ref.id, Decimal(0)))
        spent[ref.id] = cost
        status = RemoteStatus(
            remote.state,
            completed=total if remote.state == "Succeeded" else 0,
            total=total,
            accrued_usd=cost,
            price_per_gpu_hour=remote.price_per_gpu_hour,
            message=remote.message,
        )
        return self.observe(ref, status)
