"""Stand-in OpenAI-compatible endpoint (io.net IO Intelligence flavour) under ``/v1``.

``GET /v1/models`` lists the configured models with io.net's ``metadata.input_token_price``
and ``output_token_price`` (USD per token, decimal strings), paginated as io.net's list is
(``?page=``; ``pagination.{total, page, page_size, total_pages, has_next, has_previous}``;
``modelsPageSize`` in the config, default 50); ``POST /v1/chat/completions``
answers a non-streaming ``chat.completion`` whose ``usage`` counts prompt words as tokens and
``max_completion_tokens``/``max_tokens`` (default 16) as completion tokens.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from aiohttp import web

from hybridgpu.standins import media
from hybridgpu.standins.config import StandinConfig
from hybridgpu.standins.state import NetworkState, fail, read_json

MILLION = Decimal(1_000_000)


def error_body(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The OpenAI-compatible stand-in."""
    state = NetworkState("openai", config, error_body)
    prices = {p.model: p for p in config.token_prices}

    async def models(request: web.Request) -> web.Response:
        try:
            page = max(int(request.query.get("page", 1)), 1)
        except ValueError:
            return fail(state, 400, "page: a number")
        size = config.models_page_size
        data = []
        for price in config.token_prices:
            data.append(
                {
                    "id": price.model,
                    "name": price.model,
                    "object": "model",
                    "created": 1_700_000_000,
                    "owned_by": "hybridgpu-standin",
                    "metadata": {
                        "input_token_price": state.money(
                            state.price(price.input_per_million) / MILLION, 12
                        ),
                        "output_token_price": state.money(
                            state.price(price.output_per_million) / MILLION, 12
                        ),
                    },
                }
            )
        pages = max((len(data) + size - 1) // size, 1)
        pagination = {
            "total": len(data),
            "page": page,
            "page_size": size,
            "total_pages": pages,
            "has_next": page < pages,
            "has_previous": page > 1,
        }
        chunk = data[(page - 1) * size : page * size]
        return web.json_response({"object": "list", "data": chunk, "pagination": pagination})

    async def completions(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return fail(state, 400, "'model' and a non-empty 'messages' list are required")
        if model not in prices:
            return fail(state, 404, f"The model `{model}` does not exist")
        key = request.headers.get("Idempotency-Key", "")
        state.submissions[key or "-"] += 1
        if config.request_latency_seconds:
            await asyncio.sleep(config.request_latency_seconds)
        prompt = sum(
            len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)
        )
        completion = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        return web.json_response(
            {
                "id": f"chatcmpl-{state.new_id()}",
                "object": "chat.completion",
                "created": int(state.clock.now()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length",
                        "message": {
                            "role": "assistant",
                            "content": media.completion(messages, completion),
                        },
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )

    app = web.Application(middlewares=[state.middleware(public=())])
    app.add_routes(state.control_routes())
    app.add_routes([web.get("/v1/models", models), web.post("/v1/chat/completions", completions)])
    return app, state
