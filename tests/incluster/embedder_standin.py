"""A stand-in for a user's own batch image (``task: container``): an embedding job.

It does what hybridgpu asks of any container (docs/incluster.md): read the input JSONL from
``HYBRIDGPU_INPUT_URL`` when the job has one (else make ``HYBRIDGPU_REQUESTS`` requests of
its own, as a job whose input lies elsewhere does), and write one output line per request,
OpenAI Batch output lines with an embeddings body, with one HTTP PUT to
``HYBRIDGPU_OUTPUT_URL``. Its arguments are the user's and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator

DIMENSIONS = 8


def _inputs() -> Iterator[str]:
    url = os.environ.get("HYBRIDGPU_INPUT_URL")
    if not url:
        for index in range(int(os.environ.get("HYBRIDGPU_REQUESTS", "1"))):
            yield f"request-{index}"
        return
    with urllib.request.urlopen(url, timeout=60) as response:
        for index, raw in enumerate(response):
            if raw.strip():
                yield str(json.loads(raw).get("custom_id") or f"request-{index}")


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 4) for b in digest[:DIMENSIONS]]


def main() -> int:
    model = os.environ.get("HYBRIDGPU_MODEL", "embedder")
    lines = []
    for index, custom_id in enumerate(_inputs()):
        body = {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": _vector(custom_id)}],
        }
        lines.append(
            json.dumps(
                {
                    "id": f"embed-{index}",
                    "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": "", "body": body},
                    "error": None,
                }
            )
        )
    data = ("\n".join(lines) + "\n").encode()
    request = urllib.request.Request(
        os.environ["HYBRIDGPU_OUTPUT_URL"],
        data=data,
        method="PUT",
        headers={"Content-Length": str(len(data))},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
