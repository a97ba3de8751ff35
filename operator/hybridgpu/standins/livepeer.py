"""Stand-in Livepeer AI gateway: the JSON pipelines of the gateway's OpenAPI spec.

``POST /text-to-image`` → ``ImageResponse``, ``POST /llm`` → ``LLMResponse``,
``POST /text-to-speech`` → ``AudioResponse``; errors as ``HTTPError`` (``{"detail": {"msg"}}``)
and ``HTTPValidationError`` (422). Each response also carries ``X-Price-Usd-Per-Gpu-Hour``:
the price of the (simulated) orchestrator that served it, the first offer configured for
livepeer, times the price faults.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from aiohttp import web

from hybridgpu.standins.config import StandinConfig
from hybridgpu.standins.state import NetworkState, read_json

PRICE_HEADER = "X-Price-Usd-Per-Gpu-Hour"
_REQUIRED = {
    "text-to-image": ("prompt", "model_id"),
    "llm": ("messages",),
    "text-to-speech": ("model_id",),
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Livepeer's HTTPError shape."""
    return {"detail": {"msg": message}}


def _validation_error(missing: list[str]) -> web.Response:
    detail = [
        {"loc": ["body", name], "msg": "Field required", "type": "missing"} for name in missing
    ]
    return web.json_response({"detail": detail}, status=422)


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Livepeer gateway stand-in."""
    state = NetworkState("livepeer", config, error_body)
    offers = config.offers_for("livepeer")
    base_price = offers[0].usd_per_gpu_hour if offers else Decimal("0.30")

    async def pipeline(request: web.Request) -> web.Response:
        name = request.match_info["pipeline"]
        body = await read_json(request, state)
        missing = [f for f in _REQUIRED[name] if f not in body]
        if missing:
            return _validation_error(missing)
        if name == "llm" and not isinstance(body["messages"], list):
            return web.json_response(
                {
                    "detail": [
                        {
                            "loc": ["body", "messages"],
                            "msg": "Input should be a valid list",
                            "type": "list_type",
                        }
                    ]
                },
                status=422,
            )
        key = request.headers.get("Idempotency-Key", "")
        state.submissions[key or "-"] += 1
        if config.request_latency_seconds:
            await asyncio.sleep(config.request_latency_seconds)
        seq = state.new_id()
        headers = {PRICE_HEADER: state.money(state.price(base_price, charged=True))}
        if name == "text-to-image":
            count = int(body.get("num_images_per_prompt", 1))
            images = [
                {
                    "url": f"http://{request.host}/stream/{seq}/image-{i}.png",
                    "seed": 1000 + seq,
                    "nsfw": False,
                }
                for i in range(max(count, 1))
            ]
            return web.json_response({"images": images}, headers=headers)
        if name == "text-to-speech":
            return web.json_response(
                {"audio": {"url": f"http://{request.host}/stream/{seq}/audio.wav"}}, headers=headers
            )
        prompt_words = sum(
            len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict)
        )
        completion = int(body.get("max_tokens", 256))
        return web.json_response(
            {
                "id": f"chatcmpl-{seq}",
                "model": str(body.get("model", "")),
                "created": int(state.clock.now()),
                "usage": {
                    "prompt_tokens": prompt_words,
                    "completion_tokens": completion,
                    "total_tokens": prompt_words + completion,
                },
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "ok " * min(completion, 8)},
                    }
                ],
            },
            headers=headers,
        )

    app = web.Application(middlewares=[state.middleware(public=())])
    app.add_routes(state.control_routes())
    app.add_routes([web.post("/{pipeline:text-to-image|llm|text-to-speech}", pipeline)])
    return app, state
