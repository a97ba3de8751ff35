"""Reading a JSONL object by HTTP GET as a stream of lines, and one output line's shape."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_LINE_BYTES = 16 * 2**20
"""The longest input line accepted: one request body with its media inlined."""


class BadInput(ValueError):
    """An input line that can never be sent; the message names the line (1-based)."""


def split_lines(
    chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of each non-blank line of a byte stream, holding at most one
    line (``max_line`` bytes) in memory."""
    pending = bytearray()
    number = 0
    for chunk in chunks:
        pending += chunk
        while (cut := pending.find(b"\n")) >= 0:
            number += 1
            line = bytes(pending[:cut])
            del pending[: cut + 1]
            if line.strip():
                yield number, line
        if len(pending) > max_line:
            raise BadInput(f"input line {number + 1}: longer than {max_line} bytes")
    if pending.strip():
        yield number + 1, bytes(pending)


def parse_request(number: int, line: bytes) -> tuple[str | None, dict[str, Any]]:
    """``(custom_id, body)`` of input line ``number``.

    A line is either an OpenAI-Batch-style envelope ``{"custom_id", "body", ...}`` or the
    pipeline's request body itself, with its ``custom_id`` beside the body's fields or
    without one (then it is known by its index)."""
    try:
        item = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"input line {number}: not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise BadInput(f"input line {number}: not a JSON object")
    if "body" in item and "custom_id" in item:
        custom_id, body = item["custom_id"], item["body"]
        if not isinstance(custom_id, str) or not custom_id:
            raise BadInput(f"input line {number}: custom_id must be a non-empty string")
        if not isinstance(body, dict):
            raise BadInput(f"input line {number}: body must be a JSON object")
        return custom_id, body
    custom_id = item.get("custom_id")
    if custom_id is not None:
        # A pipeline body with its custom_id beside its fields, as the operator's reader
        # takes it (results/reader.py): the id is the line's, not the ai-runner's.
        if not isinstance(custom_id, str) or not custom_id:
            raise BadInput(f"input line {number}: custom_id must be a non-empty string")
        return custom_id, {k: v for k, v in item.items() if k != "custom_id"}
    return None, item


def output_line(
    index: int,
    custom_id: str | None,
    status_code: int | None,
    body: Any,
    error: str | None,
) -> bytes:
    """One output line, in the OpenAI Batch output shape plus the request's ``index``."""
    record = {
        "id": f"hybridgpu-{index}",
        "custom_id": custom_id,
        "index": index,
        "response": None if status_code is None else {"status_code": status_code, "body": body},
        "error": None if error is None else {"message": error},
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
