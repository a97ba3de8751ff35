"""``hybridgpu runner livepeer``: feed a Livepeer ai-runner the job's requests, upload results.

The ai-runner serves one pipeline (``POST /<pipeline>``, the request bodies of the Livepeer
AI OpenAPI spec, e.g. ``TextToImageParams``) in the same Pod. The runner waits for its
``GET /health``, streams the input JSONL (one request per line, see :mod:`.jsonl`), sends the
requests one at a time, writes one output line per request to a spool file on disk, and PUTs
that file to the output URL as one object. Media the runner answers with as ``http(s)`` URLs
are fetched and inlined as ``data:`` URLs (the ai-runner itself answers with data URLs), so
the output object holds everything and nothing expires.

A request the ai-runner refuses (4xx) or keeps failing (5xx, connection errors after
retries) is an error line, not a failed job; unreadable input lines (not JSON, not an
object) fail the job with exit code 2 naming the line, before anything is uploaded.
"""

from __future__ import annotations

import base64
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import httpx

from hybridgpu.runner.jsonl import BadInput, output_line, parse_request, split_lines

log = logging.getLogger("hybridgpu.runner")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
MAX_MEDIA_BYTES = 64 * 2**20


@dataclass
class Config:
    pipeline: str
    model: str
    runner_url: str
    input_url: str
    output_url: str
    ready_timeout: float = 1800.0
    """How long the ai-runner may take to load its model and answer /health."""
    request_timeout: float = 600.0
    retries: int = 3
    retry_delay: float = 2.0


class Failed(Exception):
    """Something the runner needs did not answer; the message says what (no URL in it)."""


def run(config: Config, client: httpx.Client | None = None) -> int:
    """The whole batch; returns the exit code."""
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(config.request_timeout, connect=10.0))
    try:
        wait_ready(http, config)
        with tempfile.TemporaryFile() as spool:
            written, errors = process(http, config, spool)
            size = spool.tell()
            spool.seek(0)
            upload(http, config, spool, size)
        log.info("wrote %d output lines (%d errors), %d bytes", written, errors, size)
        return EXIT_OK
    except BadInput as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    except Failed as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    finally:
        if own:
            http.close()


def wait_ready(http: httpx.Client, config: Config) -> None:
    deadline = time.monotonic() + config.ready_timeout
    while True:
        try:
            if http.get(f"{config.runner_url}/health", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"the ai-runner did not answer /health within {config.ready_timeout}s")
        time.sleep(0.5)


def process(http: httpx.Client, config: Config, spool: IO[bytes]) -> tuple[int, int]:
    """Send every input line; write one output line each. Returns (lines, error lines)."""
    written = errors = 0
    try:
        with http.stream("GET", config.input_url) as response:
            if response.status_code != 200:
                raise Failed(f"reading the input object answered HTTP {response.status_code}")
            for number, line in split_lines(response.iter_bytes()):
                custom_id, body = parse_request(number, line)
                status, answer, error = send(http, config, body)
                spool.write(output_line(written, custom_id, status, answer, error))
                written += 1
                errors += error is not None
                if written % 100 == 0:
                    log.info("%d requests done", written)
    except httpx.HTTPError as exc:
        raise Failed(f"reading the input object failed: {type(exc).__name__}") from None
    return written, errors


def send(
    http: httpx.Client, config: Config, body: dict[str, Any]
) -> tuple[int | None, Any, str | None]:
    """(status code, response body, error message) of one request, retried on 5xx/errors."""
    request = dict(body)
    request.setdefault("model_id", config.model)
    url = f"{config.runner_url}/{config.pipeline}"
    last: tuple[int | None, Any, str | None] = (None, None, "not sent")
    for attempt in range(config.retries + 1):
        if attempt:
            time.sleep(config.retry_delay * attempt)
        try:
            response = http.post(url, json=request)
        except httpx.HTTPError as exc:
            last = (None, None, f"the ai-runner did not answer: {type(exc).__name__}")
            continue
        answer = _json(response)
        if response.status_code < 400:
            return response.status_code, inline_media(http, answer), None
        last = (response.status_code, answer, _error_message(response.status_code, answer))
        if response.status_code < 500:
            break
    return last


def inline_media(http: httpx.Client, value: Any) -> Any:
    """``value`` with every ``{"url": "http(s)://..."}`` replaced by a ``data:`` URL."""
    if isinstance(value, list):
        return [inline_media(http, v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: inline_media(http, v) for k, v in value.items()}
    url = out.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        out["url"] = _data_url(http, url)
    return out


def _data_url(http: httpx.Client, url: str) -> str:
    with http.stream("GET", url) as response:
        if response.status_code != 200:
            raise Failed(f"fetching a result's media answered HTTP {response.status_code}")
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MAX_MEDIA_BYTES:
                raise Failed(f"a result's media is larger than {MAX_MEDIA_BYTES} bytes")
        kind = response.headers.get("content-type", "application/octet-stream").split(";")[0]
    return f"data:{kind};base64,{base64.b64encode(bytes(data)).decode()}"


def upload(http: httpx.Client, config: Config, spool: IO[bytes], size: int) -> None:
    """One PUT of the whole output (S3 presigned PUTs take one object of a known length)."""
    for attempt in range(config.retries + 2):
        if attempt:
            time.sleep(config.retry_delay * attempt)
        spool.seek(0)
        try:
            response = http.put(
                config.output_url, content=spool, headers={"Content-Length": str(size)}
            )
        except httpx.HTTPError as exc:
            log.warning("uploading the output failed: %s", type(exc).__name__)
            continue
        if 200 <= response.status_code < 300:
            return
        log.warning("uploading the output answered HTTP %d", response.status_code)
        if response.status_code < 500 and response.status_code not in (408, 429):
            break
    raise Failed("the output object could not be written")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:2000]}


def _error_message(status: int, answer: Any) -> str:
    # ai-runner errors are FastAPI's {"detail": {"msg": ...}}; the gateway's {"error": {...}}.
    if isinstance(answer, dict):
        for key in ("detail", "error"):
            inner = answer.get(key)
            if isinstance(inner, dict):
                text = inner.get("msg") or inner.get("message")
                if isinstance(text, str):
                    return f"HTTP {status}: {text[:500]}"
            if isinstance(inner, str):
                return f"HTTP {status}: {inner[:500]}"
    return f"HTTP {status}"
