"""A stand-in for the Livepeer ai-runner serving one pipeline, as go-livepeer starts it.

go-livepeer's AI worker (``ai/worker/docker.go``) starts the ai-runner image with
``PIPELINE`` and ``MODEL_ID`` in its environment and talks to it on container port 8000;
the runner answers ``GET /health`` once its model is loaded and ``POST /<pipeline>`` with the
bodies and responses of the Livepeer AI OpenAPI spec (tests/contract/specs/
livepeer-ai-gateway.openapi.yaml): ``TextToImageParams`` → ``ImageResponse`` (``images``:
``Media`` ``{url, seed, nsfw}``), ``TextToSpeechParams`` → ``AudioResponse``. The ai-runner
returns media as ``data:`` URLs; so does this stand-in, with a deterministic PNG or WAV made
from the request. Errors are FastAPI's ``{"detail": {"msg": ...}}`` (``HTTPError``).

``python -m tests.incluster.ai_runner_standin`` (the node agent maps the ai-runner image's
default command to this); ``HYBRIDGPU_AI_RUNNER_PORT`` overrides 8000 for unit tests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import sys
import time
import wave
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PORT = 8000


def png(seed: int, width: int = 4, height: int = 4) -> bytes:
    """A tiny valid PNG whose colour comes from ``seed``."""
    r, g, b = seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF
    raw = b"".join(b"\x00" + bytes((r, g, b)) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def wav(seed: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes((seed + i) & 0xFF for i in range(800)))
    return out.getvalue()


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def answer(pipeline: str, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if pipeline == "text-to-image":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return 422, {"detail": {"msg": "prompt field is required"}}
        seed = int(body.get("seed") or _seed(f"{body.get('model_id') or model}|{prompt}"))
        count = int(body.get("num_images_per_prompt") or 1)
        images = [
            {
                "url": "data:image/png;base64," + base64.b64encode(png(seed + i)).decode(),
                "seed": seed + i,
                "nsfw": False,
            }
            for i in range(count)
        ]
        return 200, {"images": images}
    if pipeline == "text-to-speech":
        text = body.get("text")
        if not isinstance(text, str):
            return 422, {"detail": {"msg": "text field is required"}}
        data = wav(_seed(text))
        return 200, {"audio": {"url": "data:audio/wav;base64," + base64.b64encode(data).decode()}}
    return 404, {"detail": {"msg": f"pipeline {pipeline} is not served here"}}


def serve(port: int) -> None:
    pipeline = os.environ.get("PIPELINE", "")
    model = os.environ.get("MODEL_ID", "")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._send(200, {"status": "OK"})
            self._send(404, {"detail": {"msg": "Not Found"}})
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._send(422, {"detail": {"msg": "body is not JSON"}})
            if self.path.strip("/") != pipeline:
                return self._send(404, {"detail": {"msg": "Not Found"}})
            time.sleep(float(os.environ.get("STANDIN_SECONDS_PER_REQUEST", "0")))
            if served := os.environ.get("STANDIN_REQUEST_LOG"):
                # Which requests reached a model, across attempts (a resumed batch sends fewer).
                with open(served, "a", encoding="utf-8") as out:
                    out.write(json.dumps(body.get("prompt")) + "\n")
            self._send(*answer(pipeline, model, body))
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(os.environ.get("HYBRIDGPU_AI_RUNNER_PORT", PORT)))
    sys.exit(0)
