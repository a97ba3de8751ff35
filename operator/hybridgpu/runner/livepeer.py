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
object) fail the job with exit code 2 naming the line, before any output is uploaded.

With checkpoint URLs (:mod:`.checkpoint`) the runner first reads the job's checkpoint and
sends only the requests it does not hold, saves the spool as the checkpoint every so often,
and on SIGTERM saves it once more and exits with 75: interrupted, resumable.
"""

from __future__ import annotations

import base64
import functools
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from hybridgpu.runner import checkpoint
from hybridgpu.runner.jsonl import BadInput, output_line, parse_request, split_lines

log = logging.getLogger("hybridgpu.runner")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = checkpoint.EXIT_INTERRUPTED
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
    checkpointing: checkpoint.Settings = field(default_factory=checkpoint.Settings)


class Failed(Exception):
    """Something the runner needs did not answer; the message says what (no URL in it)."""


@dataclass
class Tally:
    lines: int = 0
    errors: int = 0


def quiet_http_logs() -> None:
    """httpx logs every request's URL at INFO, and a presigned URL is a credential."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(config: Config, client: httpx.Client | None = None) -> int:
    """The whole batch; returns the exit code."""
    quiet_http_logs()  # here, not only in the CLI: whoever calls this logs no URL
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(config.request_timeout, connect=10.0))
    stop = checkpoint.Stop(config.checkpointing.drain_seconds)
    try:
        with stop.installed(config.checkpointing.enabled), tempfile.TemporaryFile() as spool:
            return _run(http, config, stop, spool)
    finally:
        if own:
            http.close()


def _run(http: httpx.Client, config: Config, stop: checkpoint.Stop, spool: IO[bytes]) -> int:
    with tempfile.TemporaryFile() as stored:
        settings = config.checkpointing
        resume = checkpoint.Resume.fetch(
            http, settings.resume_url if settings.enabled else "", stored
        )
        saver = checkpoint.Saver(settings, resume.covered)
        tally = Tally()
        try:
            wait_ready(http, config, stop)
            process(http, config, spool, stop, resume, saver, tally)
        except (checkpoint.Interrupted, checkpoint.Abandoned):
            stop.disarm()
            return interrupted(http, config, spool, saver, tally)
        except BadInput as exc:
            log.error("%s", exc)
            return EXIT_BAD_INPUT
        except Failed as exc:
            log.error("%s", exc)
            return EXIT_FAILED
    if resume.covered:
        log.info("resumed: %d lines kept, %d sent again", resume.kept, resume.resent)
    try:
        size = spool.tell()
        upload(http, config, config.output_url, spool, size, "output")
    except Failed as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    log.info("wrote %d output lines (%d errors), %d bytes", tally.lines, tally.errors, size)
    return EXIT_OK


def interrupted(
    http: httpx.Client, config: Config, spool: IO[bytes], saver: checkpoint.Saver, tally: Tally
) -> int:
    """After SIGTERM: save what the stored checkpoint lacks; 75 once it holds every line."""
    if not saver.worth_saving(tally.lines):
        log.warning("interrupted after %d lines; the checkpoint already holds them", tally.lines)
        return EXIT_INTERRUPTED
    put = functools.partial(upload, http, config)
    if saver.save(spool, tally.lines, put):
        log.warning("interrupted after %d lines, all in the checkpoint", tally.lines)
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def wait_ready(http: httpx.Client, config: Config, stop: checkpoint.Stop) -> None:
    deadline = time.monotonic() + config.ready_timeout
    while True:
        stop.check()
        try:
            if http.get(f"{config.runner_url}/health", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"the ai-runner did not answer /health within {config.ready_timeout}s")
        time.sleep(0.5)


def process(
    http: httpx.Client,
    config: Config,
    spool: IO[bytes],
    stop: checkpoint.Stop,
    resume: checkpoint.Resume,
    saver: checkpoint.Saver,
    tally: Tally,
) -> None:
    """One output line per input line into ``spool``, in input order: the checkpoint's
    when it holds one, else the ai-runner's answer; ``tally`` counts them."""
    put = functools.partial(upload, http, config)
    try:
        with http.stream("GET", config.input_url) as response:
            if response.status_code != 200:
                raise Failed(f"reading the input object answered HTTP {response.status_code}")
            for number, line in split_lines(response.iter_bytes()):
                stop.check()
                custom_id, body = parse_request(number, line)
                kept = resume.take(tally.lines, custom_id)
                if kept is not None:
                    spool.write(kept.line)
                    tally.errors += kept.error
                else:
                    with stop.sending():
                        status, answer, error = send(http, config, body)
                    spool.write(output_line(tally.lines, custom_id, status, answer, error))
                    tally.errors += error is not None
                    saver.sent_one()
                tally.lines += 1
                if tally.lines % 100 == 0:
                    log.info("%d requests done", tally.lines)
                if saver.due(tally.lines):
                    saver.save(spool, tally.lines, put)
    except httpx.HTTPError as exc:
        raise Failed(f"reading the input object failed: {type(exc).__name__}") from None


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


def upload(
    http: httpx.Client, config: Config, url: str, spool: IO[bytes], size: int, what: str
) -> None:
    """One PUT of the spool's first ``size`` bytes (S3 presigned PUTs take one object of a
    known length); ``what`` names the object in messages, which never hold the URL."""
    for attempt in range(config.retries + 2):
        if attempt:
            time.sleep(config.retry_delay * attempt)
        spool.seek(0)
        try:
            response = http.put(
                url, content=_first(spool, size), headers={"Content-Length": str(size)}
            )
        except httpx.HTTPError as exc:
            log.warning("uploading the %s failed: %s", what, type(exc).__name__)
            continue
        if 200 <= response.status_code < 300:
            return
        log.warning("uploading the %s answered HTTP %d", what, response.status_code)
        if response.status_code < 500 and response.status_code not in (408, 429):
            break
    raise Failed(f"the {what} object could not be written")


def _first(spool: IO[bytes], size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    # The spool grows after a checkpoint's PUT: send the bytes it held then, not more.
    left = size
    while left > 0 and (data := spool.read(min(chunk, left))):
        left -= len(data)
        yield data


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
