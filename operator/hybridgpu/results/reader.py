"""Input JSONL, read as a stream: one request per line, checked before anything is sent.

A line is an OpenAI Batch input line ``{"custom_id", "method", "url", "body"}`` (the request
is ``body``), or for other pipelines a Livepeer request body with a ``custom_id`` field beside
its own fields. :func:`scan` reads the whole object once before dispatch and raises
:class:`InputError` (with a CamelCase ``reason``) for a missing object, a line that is not a
JSON object (naming the line), a missing or repeated ``custom_id`` (naming both lines), or an
input over the size limit. Memory: one line at a time, plus 8 bytes per request for the
duplicate check (a sorted array of 64-bit digests; only on a match is the input read again
to name the lines).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from array import array
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hybridgpu.results.store import ResultStore, StoreError
from hybridgpu.results.urls import ObjectURL

Body = dict[str, Any]
MAX_CUSTOM_ID_CHARS = 512


class InputError(ValueError):
    """Input that can never be sent as it is; ``reason`` is CamelCase for the condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a batch: its position, the user's id for it and the body to send."""

    index: int
    custom_id: str
    body: Body


@dataclass(frozen=True, slots=True)
class InputSummary:
    total: int
    bytes: int


def parse_line(raw: bytes, line_no: int, field: str) -> tuple[str, Body] | None:
    """(custom_id, body) of one input line; None for a blank line."""
    if not raw.strip():
        return None
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(
            "InputInvalid", f"{field} line {line_no}: not JSON ({str(exc)[:120]})"
        ) from None
    if not isinstance(item, dict):
        raise InputError("InputInvalid", f"{field} line {line_no}: not a JSON object")
    return split_item(item, f"{field} line {line_no}", required=True)


def split_item(item: Body, where: str, *, required: bool, index: int = 0) -> tuple[str, Body]:
    """(custom_id, body) of one request object (an input line or an inline item)."""
    custom_id = item.get("custom_id")
    if custom_id is None and not required:
        custom_id = f"request-{index}"
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        raise InputError(
            "InputInvalid",
            f"{where}: custom_id must be a string of 1 to {MAX_CUSTOM_ID_CHARS} characters",
        )
    if "body" in item:
        body = item["body"]
        if not isinstance(body, dict):
            raise InputError("InputInvalid", f"{where}: body is not a JSON object")
        url = item.get("url")
        if url is not None and not (isinstance(url, str) and url.endswith("/chat/completions")):
            raise InputError(
                "InputInvalid", f"{where}: url {url!r} is not served (only /v1/chat/completions)"
            )
        return custom_id, dict(body)
    return custom_id, {k: v for k, v in item.items() if k != "custom_id"}


def _digest(custom_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "big")


def _duplicates(digests: array[int]) -> int | None:
    ordered = sorted(digests)
    for a, b in itertools.pairwise(ordered):
        if a == b:
            return a
    return None


def check_unique(ids: Iterator[tuple[int, str]], what: str) -> None:
    """Raise DuplicateCustomId naming both places when a custom_id repeats."""
    seen: dict[str, int] = {}
    for where, custom_id in ids:
        if custom_id in seen:
            raise InputError(
                "DuplicateCustomId",
                f"{what} {where}: custom_id {custom_id!r} is also on {what} {seen[custom_id]}",
            )
        seen[custom_id] = where


async def scan(
    store: ResultStore, url: ObjectURL, *, max_bytes: int, max_requests: int
) -> InputSummary:
    """Read the whole input once and check it (see the module docstring)."""
    field = f"spec.input.source ({url})"
    meta = await _head(store, url, field)
    if meta is None:
        raise InputError("InputNotFound", f"{field}: no such object")
    size = int(meta.get("size") or 0)
    if size > max_bytes:
        raise InputError(
            "InputTooLarge", f"{field}: {size} bytes; the policy allows at most {max_bytes}"
        )
    digests: array[int] = array("Q")
    line_no = 0
    try:
        async for raw in store.lines(url):
            line_no += 1
            parsed = parse_line(raw, line_no, field)
            if parsed is None:
                continue
            if len(digests) >= max_requests:
                raise InputError("InputTooLarge", f"{field}: more than {max_requests} requests")
            digests.append(_digest(parsed[0]))
    except StoreError as exc:
        raise InputError("InputUnreadable", f"{field}: {exc.message}") from None
    if not digests:
        raise InputError("InputInvalid", f"{field}: no requests in the object")
    if _duplicates(digests) is not None:
        await _name_duplicate(store, url, field)
    return InputSummary(len(digests), size)


async def _head(store: ResultStore, url: ObjectURL, field: str) -> dict[str, Any] | None:
    try:
        return await store.head(url)
    except StoreError as exc:
        raise InputError("InputUnreadable", f"{field}: {exc.message}") from None


async def _name_duplicate(store: ResultStore, url: ObjectURL, field: str) -> None:
    # A 64-bit digest matched: read again to name the lines (or, if only the digests
    # collided, find nothing and accept the input).
    first: dict[int, tuple[str, int]] = {}
    line_no = 0
    async for raw in store.lines(url):
        line_no += 1
        parsed = parse_line(raw, line_no, field)
        if parsed is None:
            continue
        digest = _digest(parsed[0])
        if digest in first and first[digest][0] == parsed[0]:
            raise InputError(
                "DuplicateCustomId",
                f"{field} line {line_no}: custom_id {parsed[0]!r} is also on line "
                f"{first[digest][1]}",
            )
        first.setdefault(digest, (parsed[0], line_no))


async def stream_requests(store: ResultStore, url: ObjectURL) -> AsyncIterator[Request]:
    """The input's requests in order (already checked by :func:`scan`)."""
    field = f"spec.input.source ({url})"
    index = 0
    line_no = 0
    async for raw in store.lines(url):
        line_no += 1
        parsed = parse_line(raw, line_no, field)
        if parsed is None:
            continue
        yield Request(index, parsed[0], parsed[1])
        index += 1


def item_requests(items: Sequence[Body], field: str) -> list[Request]:
    """Requests of inline or configMap items (``custom_id`` optional: ``request-<index>``)."""
    out = []
    for index, item in enumerate(items):
        custom_id, body = split_item(item, f"{field}[{index}]", required=False, index=index)
        out.append(Request(index, custom_id, body))
    check_unique(((r.index, r.custom_id) for r in out), field + " item")
    return out


def to_jsonl(requests: Sequence[Request]) -> bytes:
    """Requests as input JSONL (OpenAI Batch lines), for runners that read them by URL."""
    return b"".join(
        json.dumps(
            {
                "custom_id": r.custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": r.body,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for r in requests
    )
