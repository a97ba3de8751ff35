"""Livepeer AI gateway adapter (client-driven).

Each request of the batch is one ``POST {endpoint}/{pipeline}`` with the JSON body the
gateway's OpenAPI spec defines (``TextToImageParams``, ``LLMRequest``, ``TextToSpeechParams``);
the other pipelines take multipart uploads of input media and are refused here as BadRequest.

Livepeer has no USD price API: orchestrators price in wei per pixel and gateways fall back to
any orchestrator when none is under the cap. Offers therefore come from the ComputeProvider's
``staticPrices`` (USD per GPU-hour), and each request's cost is that price times the batch's
GPU-hours divided by its requests. When a gateway reports the price it actually paid in the
``X-Price-Usd-Per-Gpu-Hour`` response header (the stand-in does; a self-hosted gateway can add
it in a proxy), the adapter checks it against the cap after every request.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.networks.adapter import GIB, AdapterBase
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.batch import BatchRunner, RequestResult
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest
from hybridgpu.networks.gpu_names import names_for
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.networks.requests import batch_requests
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

PIPELINES: dict[Task, str] = {
    Task.TEXT_TO_IMAGE: "text-to-image",
    Task.LLM: "llm",
    Task.TEXT_TO_SPEECH: "text-to-speech",
}
PRICE_HEADER = "X-Price-Usd-Per-Gpu-Hour"
TYPICAL_START_SECONDS = 30.0
"""A cold model loads in 30 s to 5 min on first request (Livepeer AI pipelines docs)."""


def livepeer_body(task: Task, model: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """Fill in the model field the gateway's schema requires for ``task``."""
    out = dict(body)
    if task is Task.LLM:
        out.setdefault("model", model or "")
        out.setdefault("messages", [])
    else:
        out.setdefault("model_id", model or "")
    return out


class LivepeerAdapter(AdapterBase):
    """Sends a batch through a Livepeer AI gateway."""

    def __init__(
        self,
        name: str,
        spec: ComputeProviderSpec,
        credential: str | None,
        policy: HttpPolicy,
        concurrency: int,
    ) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        super().__init__(name, spec, credential, policy, headers)
        self.runner = BatchRunner(concurrency)

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per static price; capacity is the provider's free job slots."""
        active = sum(1 for b in self.runner.batches.values() if b.status().state == "Running")
        offers = []
        for entry in self.spec.static_prices:
            offers.append(
                ExternalOffer(
                    provider=self.name,
                    provider_type=self.spec.type,
                    gpu_product=entry.gpu_product,
                    memory_bytes=names_for(entry.gpu_product).memory_gib * GIB,
                    pricing=PerGPUHour(entry.price_per_gpu_hour),
                    available=max(self.spec.max_concurrent_jobs - active, 0),
                    region=self.spec.region,
                    trust_tier=self.spec.trust_tier,
                    start_latency_seconds=self.start_latency[0] or TYPICAL_START_SECONDS,
                    error_rate=self.error_rate,
                    carbon_intensity=self.spec.carbon_intensity,
                    circuit_open=self.circuit_state == "Open",
                    paused=self.spec.paused,
                    active_jobs=active,
                    max_concurrent_jobs=self.spec.max_concurrent_jobs,
                    tasks=frozenset(t.value for t in PIPELINES),
                )
            )
        return offers

    async def submit(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
        checkpoint: Checkpoint | None = None,
        requests: list[dict[str, Any]] | None = None,
    ) -> RemoteRef:
        """Start (or rejoin) the batch; requests run in the background."""
        pipeline = PIPELINES.get(job.task)
        if pipeline is None:
            raise BadRequest(
                self.name, f"task {job.task.value} needs a multipart upload; not supported"
            )
        price = self.static_price(gpu_product)
        self.check_cap(price, max_price_per_gpu_hour, "before submission")
        bodies = [livepeer_body(job.task, job.model, b) for b in batch_requests(job, requests)]
        per_request_hours = job.gpu_hours() / max(len(bodies), 1)
        ref = RemoteRef(self.name, f"batch-{idempotency_key}", idempotency_key)

        async def send(index: int, body: dict[str, Any]) -> RequestResult:
            response = await self.client.request(
                "POST",
                f"/{pipeline}",
                json=body,
                retry=True,
                headers={"Idempotency-Key": f"{idempotency_key}/{index}"},
            )
            paid = _header_price(response.headers.get(PRICE_HEADER))
            self.check_cap(paid, max_price_per_gpu_hour, f"request {index}")
            effective = paid if paid is not None else price
            cost = (effective or Decimal(0)) * per_request_hours
            return RequestResult(cost, _first_url(response.json()), effective)

        batch = self.runner.start(idempotency_key, bodies, send, checkpoint)
        batch.price_per_gpu_hour = batch.price_per_gpu_hour or price
        self.note_submitted(ref)
        return ref

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """The batch's progress; Lost when this process does not run it (resubmit)."""
        batch = self.runner.batches.get(ref.idempotency_key)
        if batch is None:
            return RemoteStatus(
                "Lost", message="batch not running in this process; submit again with checkpoint"
            )
        return self.observe(ref, batch.status())

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop sending the batch's remaining requests."""
        await self.runner.cancel(ref.idempotency_key)

    async def result(self, ref: RemoteRef) -> str | None:
        """The first output URL the gateway returned, if any."""
        batch = self.runner.batches.get(ref.idempotency_key)
        if batch is None or not batch.outputs:
            return None
        return batch.outputs[min(batch.outputs)]

    async def aclose(self) -> None:
        """Stop background batches and close the client."""
        await self.runner.aclose()
        await super().aclose()


def _header_price(value: str | None) -> Decimal | None:
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _first_url(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    images = body.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        url = images[0].get("url")
        return url if isinstance(url, str) else None
    audio = body.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("url"), str):
        return str(audio["url"])
    return None
