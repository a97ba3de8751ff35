"""A runner's checkpoint: one JSONL object, read at start through a GET URL, saved through a
PUT URL, holding the output lines finished so far in input order (docs/results.md,
"Checkpoints of in-cluster runners").

Every attempt of a job is given the same object, so an attempt evicted, killed by its
deadline or lost with its node leaves what it finished to the next one. A PUT replaces the
object whole (S3 has no partial writes), so a save cut short leaves the previous one.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import IO

import httpx

from hybridgpu.runner.jsonl import BadInput, split_lines

log = logging.getLogger("hybridgpu.runner")

EXIT_INTERRUPTED = 75
"""SIGTERM, and the checkpoint holds every finished line: sysexits' EX_TEMPFAIL, "try
again", distinct from 143 (killed by SIGTERM before anything could be saved)."""
MISSING = frozenset({403, 404})
"""S3 answers 403, not 404, for a missing key to a signer that may not list the bucket."""
SAVE_SHARE = 10
"""A save waits at least this many times as long as the last one took: a checkpoint is the
whole output so far, so saving on a fixed clock would spend ever more of the run on PUTs."""


@dataclass
class Settings:
    checkpoint_url: str = ""
    resume_url: str = ""
    every_requests: int = 1000
    """Save after this many requests sent since the last save..."""
    every_seconds: float = 300.0
    """...or this long after it, whichever comes first."""
    drain_seconds: float = 20.0
    """After SIGTERM, how long the request in flight may take before it is abandoned; the
    rest of the Pod's grace period (60 s) is the final save's."""

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoint_url and self.resume_url)


class Interrupted(Exception):
    """SIGTERM arrived: stop before the next request."""


class Abandoned(BaseException):
    """The request in flight outlived the drain time. A BaseException, as KeyboardInterrupt
    is, so that no ``except Exception`` on the way out of httpx swallows it."""


class Stop:
    """SIGTERM's handler: asks the batch to stop between requests, and arms a timer that
    abandons the request in flight if it takes longer than the drain time."""

    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.requested = False
        self._sending = False

    @contextmanager
    def installed(self, active: bool = True) -> Iterator[Stop]:
        """The handlers, while the batch runs; not ``active`` (nowhere to save to): SIGTERM
        keeps its default, exit 143, since 75 would promise a checkpoint."""
        if not active:
            yield self
            return
        # Signal handlers can only be set from the main thread; elsewhere (an embedding
        # program) SIGTERM keeps its own meaning.
        try:
            term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:
            yield self
            return
        alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, alarm)
            signal.signal(signal.SIGTERM, term)

    @contextmanager
    def sending(self) -> Iterator[None]:
        """The one stretch the drain timer may cut short: a request whose answer is lost."""
        self._sending = True
        try:
            yield
        finally:
            self._sending = False

    def disarm(self) -> None:
        """From here on nothing is abandoned: the final save must not be cut short."""
        signal.setitimer(signal.ITIMER_REAL, 0)

    def check(self) -> None:
        if self.requested:
            raise Interrupted

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            log.warning("SIGTERM: stopping after the request in flight, then saving")
            signal.setitimer(signal.ITIMER_REAL, max(self.drain_seconds, 0.001))

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._sending:
            raise Abandoned


@dataclass
class Kept:
    index: int
    custom_id: str | None
    line: bytes
    transient: bool
    """A 5xx or no answer at all: it may well go through this time."""
    error: bool

    def answers(self, custom_id: str | None) -> bool:
        """Whether the line is worth keeping for the request with ``custom_id``: another id
        means the input changed since, and a transient failure is sent again."""
        return self.custom_id == custom_id and not self.transient


class Resume:
    """The checkpoint's lines, met in index order as the input is read."""

    def __init__(self, lines: Iterator[Kept] | None = None, covered: int = 0) -> None:
        self._lines = lines if lines is not None else iter(())
        self._next: Kept | None = None
        self.covered = covered
        """Input positions the stored checkpoint covers (its last index + 1)."""
        self.kept = self.resent = 0

    @classmethod
    def fetch(cls, http: httpx.Client, url: str, spool: IO[bytes]) -> Resume:
        """The checkpoint at ``url``, downloaded into ``spool`` and read from there twice
        (to count, then line by line beside the input): memory holds one line."""
        if not url or not _download(http, url, spool):
            return cls()
        covered = count = 0
        for kept in _ordered(spool):
            covered, count = kept.index + 1, count + 1
        log.info("checkpoint: %d finished lines to resume from", count)
        return cls(_ordered(spool), covered)

    def take(self, index: int, custom_id: str | None) -> Kept | None:
        """The finished line of request ``index``, if the checkpoint has one worth keeping."""
        while self._next is None or self._next.index < index:
            found = next(self._lines, None)
            if found is None:
                return None
            self._next = found
        if self._next.index != index:
            return None
        kept, self._next = self._next, None
        if not kept.answers(custom_id):
            self.resent += 1
            return None
        self.kept += 1
        return kept


PutFn = Callable[[str, IO[bytes], int, str], None]
"""``put(url, spool, size, what)``: one PUT of the spool's first ``size`` bytes."""


class Saver:
    """When to PUT the spool (every finished line, in index order) as the checkpoint."""

    def __init__(self, settings: Settings, covered: int) -> None:
        self.settings = settings
        self.covered = covered
        """Input positions the stored checkpoint covers: a save that covers no more would
        throw away the lines beyond, which this attempt has not reached yet."""
        self.sent = 0
        self._last = time.monotonic()
        self._took = 0.0

    def sent_one(self) -> None:
        self.sent += 1

    def due(self, lines: int) -> bool:
        if not self.settings.enabled or lines <= self.covered or not self.sent:
            return False
        wait = max(self.settings.every_seconds, SAVE_SHARE * self._took)
        return self.sent >= self.settings.every_requests or time.monotonic() - self._last >= wait

    def worth_saving(self, lines: int) -> bool:
        return self.settings.enabled and lines > self.covered and self.sent > 0

    def save(self, spool: IO[bytes], lines: int, put: PutFn) -> bool:
        """PUT the spool; False (logged) when the store did not take it."""
        started = time.monotonic()
        size = spool.tell()
        try:
            put(self.settings.checkpoint_url, spool, size, "checkpoint")
        except Exception as exc:  # a failed save costs only resending; never the batch
            log.warning("saving the checkpoint failed: %s", exc)
            return False
        finally:
            spool.seek(size)
        self._took = time.monotonic() - started
        self._last = time.monotonic()
        self.covered, self.sent = lines, 0
        log.info("checkpoint: saved %d lines, %d bytes", lines, size)
        return True


def _download(http: httpx.Client, url: str, spool: IO[bytes]) -> bool:
    try:
        with http.stream("GET", url) as response:
            if response.status_code in MISSING:
                log.info("no checkpoint: starting from the first request")
                return False
            if response.status_code != 200:
                log.warning(
                    "reading the checkpoint answered HTTP %d: starting from the first request",
                    response.status_code,
                )
                return False
            for chunk in response.iter_bytes():
                spool.write(chunk)
    except httpx.HTTPError as exc:
        # The exception's text may hold the URL, a credential: its type only.
        log.warning(
            "reading the checkpoint failed (%s): starting from the first request",
            type(exc).__name__,
        )
        spool.truncate(0)
        return False
    return True


def _ordered(spool: IO[bytes]) -> Iterator[Kept]:
    # Indexes must rise: a line out of order cannot be matched and is sent again.
    spool.seek(0)
    last = -1
    for _, line in _file_lines(spool):
        kept = parse_line(line)
        if kept is not None and kept.index > last:
            last = kept.index
            yield kept


def _file_lines(spool: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    def chunks() -> Iterator[bytes]:
        while chunk := spool.read(1 << 20):
            yield chunk

    try:
        yield from split_lines(chunks())
    except BadInput as exc:  # a line too long to be ours: what came before still counts
        log.warning("checkpoint: %s; the rest is sent again", exc)


def parse_line(line: bytes) -> Kept | None:
    """A checkpoint line with its ``index``, or None for one that cannot be matched to a
    request (not JSON, no index, a custom_id that is not a string)."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    index, custom_id = record.get("index"), record.get("custom_id")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    if custom_id is not None and not isinstance(custom_id, str):
        return None
    response = record.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    transient = not isinstance(status, int) or status >= 500
    error = record.get("error") is not None
    return Kept(index, custom_id, line.rstrip(b"\n") + b"\n", transient, error)
