"""OpenAI-compatible adapter (io.net IO Intelligence, any vLLM server); client-driven.

``spec.endpoint`` is the base that ``/models`` and ``/chat/completions`` hang off, i.e. it
includes ``/v1`` (``https://api.intelligence.io.solutions/api/v1``, ``http://host:8000/v1``).
Each request is a non-streaming ``POST /chat/completions`` with ``max_completion_tokens``
(a ``max_tokens`` in a request is renamed: OpenAI deprecated it and its reasoning models
refuse it); its cost is
``usage.prompt_tokens`` and ``usage.completion_tokens`` times the model's per-token price. A
request an earlier process completed is costed from its body: its prompt's words as tokens
(an estimate; tokenizers differ) and its ``max_tokens`` as completion tokens.

Prices come from the ComputeProvider's ``tokenPrices``, else from io.net's ``/models``
(paginated: every page is read, following ``pagination.has_next`` with ``?page=``)
metadata ``input_token_price``/``output_token_price``, read as USD per token (an assumption:
io.net documents the fields as strings without a unit). A per-token endpoint does not say
which GPU serves it: offers carry ``gpu_product="unknown"``, the model in the label
``hybridgpu.dev/model``, and ``max_price_per_gpu_hour`` does not apply (the job's maxCost does).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.networks.base import RemoteRef
from hybridgpu.networks.batch import BatchAdapter, BatchResults, RequestResult
from hybridgpu.networks.bounds import MAX_TOKENS_PER_REQUEST, checked_count
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest
from hybridgpu.networks.requests import batch_requests
from hybridgpu.results.formats import batch_line
from hybridgpu.results.reader import Request
from hybridgpu.results.source import RequestSource
from hybridgpu.routing.snapshot import ExternalOffer, PerToken

MILLION = Decimal(1_000_000)
UNKNOWN_GPU = "unknown"
MODEL_LABEL = "hybridgpu.dev/model"
TYPICAL_START_SECONDS = 1.0
MAX_MODEL_PAGES = 50


def token_cost(price: PerToken, prompt: int, completion: int) -> Decimal:
    """USD for ``prompt`` input and ``completion`` output tokens."""
    return (
        prompt * price.input_usd_per_million + completion * price.output_usd_per_million
    ) / MILLION


def estimated_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """Prompt tokens (as words) and completion tokens (``max_tokens``) of a chat request."""
    messages = body.get("messages")
    prompt = sum(
        len(str(m.get("content", "")).split())
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    )
    completion = body.get("max_completion_tokens") or body.get("max_tokens")
    # Without a limit the length is the model's choice; nothing better than 0 is known.
    return prompt, completion if isinstance(completion, int) and completion > 0 else 0


class OpenAIAdapter(BatchAdapter):
    """Sends an llm batch to an OpenAI-compatible endpoint."""

    async def _models(self) -> dict[str, PerToken | None]:
        """Every served model, following io.net's ``pagination.has_next`` (``?page=``)."""
        models: dict[str, PerToken | None] = {}
        page = 1
        while page <= MAX_MODEL_PAGES:
            params = {"page": page} if page > 1 else None
            response = await self.client.request("GET", "/models", params=params, retry=True)
            body = response.json()
            for entry in body.get("data", []) if isinstance(body, dict) else []:
                if not isinstance(entry, dict):
                    continue
                # OpenAI and vLLM: ``id`` is the model; io.net: ``name`` (``model_id`` is a uuid).
                model_id = entry.get("name") if "model_id" in entry else entry.get("id")
                model_id = model_id or entry.get("name")
                if isinstance(model_id, str):
                    models[model_id] = self._price(model_id, entry.get("metadata"))
            pagination = body.get("pagination") if isinstance(body, dict) else None
            if not isinstance(pagination, dict) or not pagination.get("has_next"):
                break
            page += 1
        return models

    def _price(self, model: str, metadata: Any) -> PerToken | None:
        for price in self.spec.token_prices:
            if price.model == model:
                return PerToken(price.input_per_million, price.output_per_million)
        if isinstance(metadata, dict):
            try:
                per_in = Decimal(str(metadata["input_token_price"]))
                per_out = Decimal(str(metadata["output_token_price"]))
            except (KeyError, InvalidOperation):
                return None
            try:
                return PerToken(per_in * MILLION, per_out * MILLION)
            except ArithmeticError:
                # Beyond what Decimal holds: an offer that screening drops, with the reason.
                return PerToken(Decimal("Infinity"), Decimal("Infinity"))
        return None

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per served model that has a known per-token price."""
        active = self.active_batches()
        return [
            self.offer(
                UNKNOWN_GPU,
                memory_bytes=0,
                pricing=pricing,
                available=max(self.spec.max_concurrent_jobs - active, 0),
                typical_start_seconds=TYPICAL_START_SECONDS,
                active_jobs=active,
                labels={MODEL_LABEL: model},
                tasks=frozenset({Task.LLM.value}),
            )
            for model, pricing in sorted((await self._models()).items())
            if pricing is not None
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
        """Start (or rejoin) the batch of chat completions; each output line is in the
        OpenAI Batch output format."""
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

        def chat(body: dict[str, Any]) -> dict[str, Any]:
            body.setdefault("model", model)
            body["stream"] = False
            # OpenAI deprecated max_tokens, and its reasoning models refuse it; io.net's and
            # vLLM's chat APIs take max_completion_tokens too.
            if "max_tokens" in body and "max_completion_tokens" not in body:
                body["max_completion_tokens"] = body.pop("max_tokens")
            return body

        source = (
            results.source
            if results is not None
            else RequestSource.of_bodies(batch_requests(job, requests))
        ).mapped(chat)

        async def send(request: Request) -> RequestResult:
            index = request.index
            response = await self.post("/chat/completions", idempotency_key, index, request.body)
            answer = response.json()
            usage = answer.get("usage") or {}
            prompt, completion = (
                checked_count(
                    self.name, usage.get(field, 0), MAX_TOKENS_PER_REQUEST, f"usage.{field}"
                )
                for field in ("prompt_tokens", "completion_tokens")
            )
            line = batch_line(
                idempotency_key, request, response.status_code, answer, response.headers
            )
            return RequestResult(token_cost(price, prompt, completion), line)

        def prior_cost(body: dict[str, Any]) -> Decimal:
            return token_cost(price, *estimated_tokens(body))

        ref, _ = await self.start_batch(
            idempotency_key, source, send, checkpoint, prior_cost, results
        )
        return ref
