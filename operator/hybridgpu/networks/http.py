"""The HTTP policy every adapter shares: timeouts, retries, Retry-After, a circuit breaker.

* Explicit connect and read timeouts on every call.
* Retries with exponential backoff and full jitter (``uniform(0, min(cap, base * 2**n))``, as
  in the AWS Architecture Blog's "Exponential Backoff and Jitter"), only for idempotent calls
  or calls that carry an idempotency key; anything else fails on the first error so a POST
  is never sent twice by accident.
* ``Retry-After`` (seconds or an HTTP date) honoured on 429 and 503, capped by the policy.
* One circuit breaker per provider: ``failure_threshold`` consecutive failures open it; after
  ``open_seconds`` one probe is let through (HalfOpen); its success closes it again.
* The credential travels only in a header; every message that leaves this module passes
  through :class:`Redactor`, so it never reaches logs, exceptions or status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import re
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from hybridgpu.networks.errors import (
    BadRequest,
    CircuitOpen,
    NetworkError,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)

_BYPASS_BREAKER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "hybridgpu_bypass_breaker", default=False
)


@contextlib.contextmanager
def bypassing_breaker() -> Iterator[None]:
    """Calls made inside are sent even while the provider's circuit is open.

    For owed cancels only: the breaker spares a failing network our load, but a cancel is
    what stops the bill, and one call per owed cancel every 30 s is no load.
    """
    token = _BYPASS_BREAKER.set(True)
    try:
        yield
    finally:
        _BYPASS_BREAKER.reset(token)


log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "Closed", "Open", "HalfOpen"


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeouts, retries and circuit-breaker thresholds (seconds unless named otherwise)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 4
    """Tries per call, the first included, for calls that may be retried."""
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    retry_after_cap: float = 60.0
    """Longest Retry-After honoured; a longer one fails the call as RateLimited."""
    failure_threshold: int = 5
    rate_limited_threshold: int = 20
    """Consecutive 429s after which the circuit opens: one 429 says "slow down", not "down",
    but a network that answers nothing else is not usable."""
    open_seconds: float = 30.0
    window: int = 50
    """Recent calls remembered for the error rate."""


_SIGNED_QUERY = re.compile(
    r"\?[^\s\"'<>]*?"
    r"(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)="
    r"[^\s\"'<>]*",
    re.IGNORECASE,
)
"""The query of a presigned URL (S3 SigV4 or V2): whoever holds it may read or write the
object until it expires. Container networks are sent the job's URLs in its environment, and a
network that refuses a deployment may quote them back."""


def redact_signed_urls(text: str) -> str:
    """``text`` with the query of every presigned URL replaced (the path stays: it names the
    job's object, which helps, and grants nothing)."""
    return _SIGNED_QUERY.sub("?[redacted]", text)


class Redactor:
    """Removes a credential, and any presigned URL's signature, from text before it is
    logged or raised."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or None

    def __call__(self, text: str) -> str:
        """Return ``text`` with every occurrence of the credential replaced."""
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "[redacted]")
        return redact_signed_urls(text)


class CircuitBreaker:
    """Closed → Open after repeated failures → HalfOpen probe → Closed or Open again."""

    def __init__(
        self, threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """Closed, Open or HalfOpen."""
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self._open_seconds:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """Whether a call may be sent now (in HalfOpen, only one probe at a time)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the circuit."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """A call failed: count it, and open (again) when the threshold is reached."""
        self._failures += 1
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
        self._probing = False

    def trip(self) -> None:
        """Open the circuit now (the network keeps answering what cannot be used)."""
        self._opened_at = self._clock()
        self._probing = False

    def release_probe(self) -> None:
        """A probe ended with an answer that says nothing about health (e.g. a 4xx)."""
        self._probing = False


class Health:
    """Recent error rate and observed start latencies of one provider."""

    def __init__(self, window: int) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._latencies: deque[float] = deque(maxlen=window)

    def record(self, ok: bool) -> None:
        """Remember one call's outcome."""
        self._outcomes.append(ok)

    def record_start_latency(self, seconds: float) -> None:
        """Remember how long one job took from submission to running."""
        self._latencies.append(seconds)

    @property
    def error_rate(self) -> float:
        """Share of recent calls that failed (0 with no calls yet)."""
        if not self._outcomes:
            return 0.0
        return sum(1 for ok in self._outcomes if not ok) / len(self._outcomes)

    def start_latency(self) -> tuple[float | None, float | None]:
        """(p50, p95) of observed start latencies in seconds, or Nones with no data."""
        data = sorted(self._latencies)
        if not data:
            return None, None
        if len(data) == 1:
            return data[0], data[0]
        cuts = statistics.quantiles(data, n=20, method="inclusive")
        return statistics.median(data), cuts[18]


def seconds_to_utc_midnight(now: datetime | None = None) -> float:
    """Seconds until the next 00:00 UTC, when daily quotas reset."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Backoff before retry ``attempt`` (1-based): uniform in [0, min(cap, base·2^(n-1))]."""
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


class ProviderClient:
    """One provider's httpx client wrapped in the shared policy."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        auth_headers: Mapping[str, str],
        policy: HttpPolicy,
        redactor: Redactor,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.redact = redactor
        self.breaker = CircuitBreaker(policy.failure_threshold, policy.open_seconds)
        self._rate_limited = 0
        """429s in a row (any call), reset by any other answer."""
        self.health = Health(policy.window)
        self._sleep = sleep
        self._rng = rng or random.Random()
        timeout = httpx.Timeout(
            connect=policy.connect_timeout,
            read=policy.read_timeout,
            write=policy.read_timeout,
            pool=policy.connect_timeout,
        )
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(auth_headers),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        retry: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one call under the policy; return a 2xx response or raise a NetworkError.

        ``retry`` must be true only for idempotent calls or calls carrying an idempotency key.
        """
        attempts = self.policy.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            if not _BYPASS_BREAKER.get() and not self.breaker.allow():
                raise CircuitOpen(self.provider, "circuit breaker is open; call not sent")
            try:
                response = await self._client.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx.TimeoutException as exc:
                error: NetworkError = Unavailable(
                    self.provider, f"{method} {path}: timed out ({type(exc).__name__})"
                )
                delay = None
            except httpx.TransportError as exc:
                error = Unavailable(
                    self.provider, f"{method} {path}: connection failed ({type(exc).__name__})"
                )
                delay = None
            else:
                if response.is_success:
                    self._rate_limited = 0
                    self.breaker.record_success()
                    self.health.record(True)
                    return response
                error, delay = self._classify(method, path, response)
                if not error.retryable:
                    # A 4xx is the caller's problem, not a sign the network is down.
                    self.breaker.release_probe()
                    self.health.record(True)
                    raise error
            self.health.record(False)
            if not isinstance(error, RateLimited):
                self._rate_limited = 0
                self.breaker.record_failure()
            else:
                self._rate_limited += 1
                if self._rate_limited >= self.policy.rate_limited_threshold:
                    self._rate_limited = 0
                    self.breaker.trip()
                else:
                    self.breaker.release_probe()
            if attempt == attempts:
                raise error
            if delay is None:
                delay = full_jitter(
                    attempt, self.policy.backoff_base, self.policy.backoff_cap, self._rng
                )
            elif delay > self.policy.retry_after_cap:
                raise error
            log.debug(
                "%s: retrying %s %s in %.2fs (attempt %d/%d): %s",
                self.provider,
                method,
                path,
                delay,
                attempt + 1,
                attempts,
                error.message,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _classify(
        self, method: str, path: str, response: httpx.Response
    ) -> tuple[NetworkError, float | None]:
        status = response.status_code
        # Redacted before it is cut short, so that no prefix of a credential is left.
        excerpt = self.redact(response.text[:2000])[:200].replace("\n", " ")
        message = f"{method} {path}: HTTP {status}: {excerpt}"
        after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            if after is None and "quota" in response.text[:2000].lower():
                # A daily quota (Vast.ai's search_quota_exceeded) comes back at UTC midnight:
                # retrying it only spends what is left of the day's calls.
                after = seconds_to_utc_midnight()
            return RateLimited(self.provider, message, after), after
        if status == 503 and after is not None:
            return Unavailable(self.provider, message), after
        if status >= 500:
            return Unavailable(self.provider, message), None
        if status in (401, 403):
            return Unauthorized(
                self.provider, f"{method} {path}: HTTP {status}: credential refused", status
            ), None
        if status in (404, 410):
            return NotFound(self.provider, message, status), None
        return BadRequest(self.provider, message, status), None
