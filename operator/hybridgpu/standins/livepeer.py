"""Stand-in Livepeer AI gateway, as go-livepeer's gateway (``server/ai_mediaserver.go``) answers.

``POST /text-to-image`` → ``ImageResponse``, ``POST /llm`` → ``LLMResponse`` (or, with
``"stream": true``, server-sent ``data:`` chunks), ``POST /text-to-speech`` →
``AudioResponse``: the response schemas of the published gateway OpenAPI spec. Requests are
checked as the Go gateway checks them, not as that spec says: the gateway excludes request
bodies from its OpenAPI validation, a missing ``model_id`` means the pipeline's default
model, and ``/llm`` answers 400 ``missing required fields`` unless ``model``, ``messages``
(non-empty), ``stream`` and ``max_tokens`` are all present. Errors are the gateway's
``APIErrorResponse``: ``{"error": {"message": ...}}``, with the message replaced by
``Internal Server Error`` on 500 and ``Service Unavailable Error`` on 503 (``handleAPIError``
in ``server/handlers.go``); a 401 as the spec's ``HTTPError``. No price travels with a
response: a gateway reports none.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from hybridgpu.standins import media
from hybridgpu.standins.config import StandinConfig
from hybridgpu.standins.state import NetworkState, fail, read_json

_MESSAGES = {500: "Internal Server Error", 503: "Service Unavailable Error"}
LLM_REQUIRED = ("model", "messages", "stream", "max_tokens")
"""What go-livepeer's ``LLM()`` handler requires (``req.Model == nil || ... ``)."""


def error_body(status: int, message: str) -> dict[str, Any]:
    """go-livepeer's ``APIErrorResponse``; a 401 in the spec's ``HTTPError`` shape.

    go-livepeer's gateway authenticates nobody: the 401 comes from whatever fronts a hosted
    gateway, and the published spec's ``HTTPError`` (``{"detail": {"msg"}}``) is the only
    description of it (assumed; the livepeer-ai SDK parses 401s that way)."""
    if status == 401:
        return {"detail": {"msg": message}}
    return {"error": {"message": _MESSAGES.get(status, message)}}


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Livepeer gateway stand-in."""
    state = NetworkState("livepeer", config, error_body)

    async def pipeline(request: web.Request) -> web.StreamResponse:
        name = request.match_info["pipeline"]
        body = await read_json(request, state)
        if name == "llm":
            messages = body.get("messages")
            if any(body.get(f) is None for f in LLM_REQUIRED) or not messages:
                return fail(state, 400, "missing required fields")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                return fail(state, 400, "json: cannot unmarshal messages")
        elif name == "text-to-image" and not isinstance(body.get("prompt"), str):
            return fail(state, 400, "prompt field is required")
        elif name == "text-to-speech" and not isinstance(body.get("text"), str):
            return fail(state, 400, "text field is required")
        key = request.headers.get("Idempotency-Key", "")
        state.submissions[key or "-"] += 1
        if config.request_latency_seconds:
            await asyncio.sleep(config.request_latency_seconds)
        seq = state.new_id()
        if name == "text-to-image":
            count = int(body.get("num_images_per_prompt", 1))
            seed = media.digest(str(body["prompt"]))
            images = [
                {
                    "url": f"http://{request.host}/stream/{seq}/{seed}-{i}/image.png",
                    "seed": 1000 + seq,
                    "nsfw": False,
                }
                for i in range(max(count, 1))
            ]
            return web.json_response({"images": images})
        if name == "text-to-speech":
            seed = media.digest(str(body["text"]))
            return web.json_response(
                {"audio": {"url": f"http://{request.host}/stream/{seq}/{seed}/audio.wav"}}
            )
        prompt_words = sum(
            len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict)
        )
        completion = int(body["max_tokens"])
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion,
            "total_tokens": prompt_words + completion,
        }
        answer = {
            "id": f"chatcmpl-{seq}",
            "model": str(body["model"]),
            "created": int(state.clock.now()),
            "usage": usage,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": media.completion(body["messages"], completion),
                    },
                }
            ],
        }
        if not body["stream"]:
            return web.json_response(answer)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for delta, finish in (
            ({"role": "assistant", "content": "ok"}, ""),
            ({"role": "assistant", "content": ""}, "stop"),
        ):
            chunk = {**answer, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await stream.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await stream.write_eof()
        return stream

    app = web.Application(middlewares=[state.middleware(public=())])
    app.add_routes(state.control_routes())

    async def stream_file(request: web.Request) -> web.Response:
        # The gateway serves generated media under /stream/ for a while (the URLs expire).
        seed, name = request.match_info["seed"], request.match_info["name"]
        if name == "image.png":
            return web.Response(body=media.png(seed), content_type="image/png")
        return web.Response(body=media.wav(seed), content_type="audio/wav")

    app.add_routes(
        [
            web.post("/{pipeline:text-to-image|llm|text-to-speech}", pipeline),
            web.get(
                "/stream/{seq:[0-9]+}/{seed:[0-9a-f-]+}/{name:image.png|audio.wav}", stream_file
            ),
        ]
    )
    return app, state
