"""Output lines, in the OpenAI Batch output format (what vLLM's ``run-batch`` writes too):
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hybridgpu.results.reader import Request


def batch_line(
    key: str,
    request: Request,
    status_code: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> bytes:
    """One output line (JSON, no newline) for the answer to ``request``."""
    request_id = (headers or {}).get("x-request-id") or (
        str(body.get("id")) if isinstance(body, dict) and body.get("id") else ""
    )
    line = {
        "id": f"batch_req_{key}-{request.index}",
        "custom_id": request.custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": error,
    }
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()
