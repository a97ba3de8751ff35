"""OpenAI-compatible adapter (io.net IO Intelligence, any vLLM server); client-driven.

``spec.endpoint`` is the base that ``/models`` and ``/chat/completions`` hang off, i.e. it
includes ``/v1`` (``https://api.intelligence.io.solutions/api/v1``, ``http://host:8000/v1``).
Each request is a non-streaming ``POST /chat/completions``; its cost is
``usage.prompt_tokens`` and ``usage.completion_tokens`` times the model's per-token price.

Prices come from the ComputeProvider's ``tokenPrices``, else from io.net's ``/models``
metadata ``input_token_price``/``output_token_price``, read as USD per token (an assumption:
io.net documents the fields as strings without a unit). A per-token endpoint does not say
which GPU serves it: offers carry ``gpu_product="unknown"``, the model in the label
``hybridgpu.dev/model``, and ``max_price_per_gpu_hour`` does not apply (the job's maxCost does).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.networks.adapter import AdapterBase
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.batch import BatchRunner, RequestResult
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.networks.requests import batch_requests
from hybridgpu.routing.snapshot import ExternalOffer, PerToken

MILLION = Decimal(1_000_000)
UNKNOWN_GPU = "unknown"
MODEL_LABEL = "hybridgpu.dev/model"
TYPICAL_START_SECONDS = 1.0


class OpenAIAdapter(AdapterBase):
    """Sends an llm batch to an OpenAI-compatible endpoint."""

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

    async def _models(self) -> dict[str, PerToken | None]:
        response = await self.client.request("GET", "/models", retry=True)
        body = response.json()
        models: dict[str, PerToken | None] = {}
        for entry in body.get("data", []) if isinstance(body, dict) else []:
            if not isinstance(entry, dict):
                continue
            model_id = entry.get("id") or entry.get("name")
            if isinstance(model_id, str):
                models[model_id] = self._price(model_id, entry.get("metadata"))
        return models

    def _price(self, model: str, metadata: Any) -> PerToken | None:
        for price in self.spec.token_prices:
            if price.model == model:
                return PerToken(price.input_per_million, price.output_per_million)
        if isinstance(metadata, dict):
            try:
                per_in = Decimal(str(metadata["input_token_price"])) * MILLION
                per_out = Decimal(str(metadata["output_token_price"])) * MILLION
            except (KeyError, InvalidOperation):
                return None
            return PerToken(per_in, per_out)
        return None

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per served model that has a known per-token price."""
        active = sum(1 for b in self.runner.batches.values() if b.status().state == "Running")
        offers = []
        for model, pricing in sorted((await self._models()).items()):
            if pricing is None:
                continue
            offers.append(
                ExternalOffer(
                    provider=self.name,
                    provider_type=self.spec.type,
                    gpu_product=UNKNOWN_GPU,
                    memory_bytes=0,
                    pricing=pricing,
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
                    labels={MODEL_LABEL: model},
                    tasks=frozenset({Task.LLM.value}),
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
        """Start (or rejoin) the batch of chat completions."""
        del gpu_product, max_price_per_gpu_hour  # per-token pricing: see module docstring
        if job.task is not Task.LLM:
            raise BadRequest(self.name, f"task {job.task.value} is not served (llm only)")
        model = job.model or ""
        pricing = self._price(model, None)
        if pricing is None:
            models = await self._models()
            if model not in models:
                raise BadRequest(self.name, f"model {model!r} is not served by this endpoint")
            pricing = models[model]
        if pricing is None:
            raise BadRequest(self.name, f"no per-token price known for model {model!r}")
        price = pricing
        bodies = []
        for body in batch_requests(job, requests):
            body.setdefault("model", model)
            body["stream"] = False
            bodies.append(body)
        ref = RemoteRef(self.name, f"batch-{idempotency_key}", idempotency_key)

        async def send(index: int, body: dict[str, Any]) -> RequestResult:
            response = await self.client.request(
                "POST",
                "/chat/completions",
                json=body,
                retry=True,
                headers={"Idempotency-Key": f"{idempotency_key}/{index}"},
            )
            usage = response.json().get("usage") or {}
            prompt = int(usage.get("prompt_tokens", 0))
            completion = int(usage.get("completion_tokens", 0))
            cost = (
                prompt * price.input_usd_per_million + completion * price.output_usd_per_million
            ) / MILLION
            return RequestResult(cost)

        self.runner.start(idempotency_key, bodies, send, checkpoint)
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
        """Chat completions return text, not a reference: always None."""
        del ref
        return None

    async def aclose(self) -> None:
        """Stop background batches and close the client."""
        await self.runner.aclose()
        await super().aclose()
