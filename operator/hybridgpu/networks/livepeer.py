"""Livepeer AI gateway adapter (client-driven).

Each request of the batch is one ``POST {endpoint}/{pipeline}`` with the JSON body the
gateway's OpenAPI spec defines (``TextToImageParams``, ``LLMRequest``, ``TextToSpeechParams``);
the other pipelines take multipart uploads of input media and are refused here as BadRequest.
``/llm`` bodies always carry ``model``, ``messages``, ``stream`` (false) and ``max_tokens``:
go-livepeer's gateway (``server/ai_mediaserver.go``, ``LLM()``) answers 400 ``missing
required fields`` without any of them, though the published spec requires only ``messages``.
Errors come as ``{"error": {"message": ...}}`` (``handleAPIError``, ``server/handlers.go``).

Price: no gateway reports what a request cost. Orchestrators advertise prices in wei per
unit per capability and model (``capabilities_prices`` in their OrchestratorInfo, listed by a
self-hosted gateway's CLI endpoint ``/getNetworkCapabilities``), the gateway pays up to its
``-maxPricePerCapability`` and, when no orchestrator is under it, falls back to any. A USD
figure therefore exists only as the operator's own: offers come from the ComputeProvider's
``staticPrices`` (USD per GPU-hour, checked against the cap before submission), and each
request's cost is that price times the batch's GPU-hours divided by its requests (also the
cost of each request an earlier process completed). Keeping the gateway's own cap below the
static price is the operator's part.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.networks.adapter import GIB
from hybridgpu.networks.base import RemoteRef
from hybridgpu.networks.batch import BatchAdapter, BatchResults, RequestResult
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest
from hybridgpu.networks.gpu_names import names_for
from hybridgpu.networks.requests import batch_requests
from hybridgpu.results.formats import batch_line
from hybridgpu.results.media import copy_media
from hybridgpu.results.reader import Request
from hybridgpu.results.source import RequestSource
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

PIPELINES: dict[Task, str] = {
    Task.TEXT_TO_IMAGE: "text-to-image",
    Task.LLM: "llm",
    Task.TEXT_TO_SPEECH: "text-to-speech",
}
DEFAULT_MAX_TOKENS = 256
"""``LLMRequest.max_tokens``' default in the gateway spec."""
TYPICAL_START_SECONDS = 30.0
"""A cold model loads in 30 s to 5 min on first request (Livepeer AI pipelines docs)."""


def livepeer_body(
    task: Task, model: str | None, body: dict[str, Any], max_tokens: int | None = None
) -> dict[str, Any]:
    """Fill in the fields the gateway requires for ``task`` (``/llm``: model, messages, stream,
    max_tokens; the others: model_id)."""
    out = dict(body)
    if task is Task.LLM:
        out.setdefault("model", model or "")
        out.setdefault("messages", [])
        out.setdefault("stream", False)
        out.setdefault("max_tokens", max_tokens or DEFAULT_MAX_TOKENS)
    else:
        out.setdefault("model_id", model or "")
    return out


class LivepeerAdapter(BatchAdapter):
    """Sends a batch through a Livepeer AI gateway."""

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per static price; capacity is the provider's free job slots."""
        active = self.active_batches()
        return [
            self.offer(
                entry.gpu_product,
                memory_bytes=names_for(entry.gpu_product).memory_gib * GIB,
                pricing=PerGPUHour(entry.price_per_gpu_hour),
                available=max(self.spec.max_concurrent_jobs - active, 0),
                typical_start_seconds=TYPICAL_START_SECONDS,
                active_jobs=active,
                tasks=frozenset(t.value for t in PIPELINES),
            )
            for entry in self.spec.static_prices
        ]

    async def submit(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
        checkpoint: Checkpoint | None = None,
        requests: list[dict[str, Any]] | None = None,
        results: BatchResults | None = None,
    ) -> RemoteRef:
        """Start (or rejoin) the batch; requests run in the background. Each output line
        holds the gateway's answer with its media copied into the result store (a gateway's
        URLs expire) and their URLs replaced by the copies'."""
        pipeline = PIPELINES.get(job.task)
        if pipeline is None:
            raise BadRequest(
                self.name, f"task {job.task.value} needs a multipart upload; not supported"
            )
        price = self.static_price(gpu_product)
        self.check_cap(price, max_price_per_gpu_hour, "before submission")
        source = (
            results.source
            if results is not None
            else RequestSource.of_bodies(batch_requests(job, requests))
        ).mapped(lambda b: livepeer_body(job.task, job.model, b, job.input.output_tokens))
        per_request_hours = job.gpu_hours() / max(source.total, 1)
        holder: list[BatchResults] = []

        async def send(request: Request) -> RequestResult:
            body = request.body
            if job.task is Task.LLM and body.get("stream"):
                raise BadRequest(self.name, "streamed /llm requests are not supported")
            response = await self.post(f"/{pipeline}", idempotency_key, request.index, body)
            cost = (price or Decimal(0)) * per_request_hours
            answer = response.json()
            output = holder[0].output
            copied = await copy_media(self.media_client, self.name, answer, output, request.index)
            line = batch_line(
                idempotency_key, request, response.status_code, copied, response.headers
            )
            return RequestResult(cost, line, price)

        def prior_cost(body: dict[str, Any]) -> Decimal:
            del body  # every request of a batch is costed alike
            return (price or Decimal(0)) * per_request_hours

        ref, batch = await self.start_batch(
            idempotency_key, source, send, checkpoint, prior_cost, results
        )
        holder.append(batch.results)
        batch.price_per_gpu_hour = batch.price_per_gpu_hour or price
        return ref
