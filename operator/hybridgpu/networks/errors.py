"""Errors raised by network adapters.

Every message is built by hybridgpu from a status code, a path and a short excerpt of the
network's answer, then passed through the adapter's redactor, so it can go into Kopf's status
and Events without leaking a credential.
"""

from __future__ import annotations

from decimal import Decimal


class NetworkError(Exception):
    """Base of every adapter error: carries the provider name and a message safe to show."""

    retryable = False

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, message={self.message!r})"


class Unavailable(NetworkError):
    """The network did not answer usefully: timeout, connection refused or a 5xx."""

    retryable = True


class MalformedAnswer(Unavailable):
    """The network answered 2xx with something its API does not document: not JSON, a field
    of the wrong type, a number that is not finite or out of any sane range.

    Retryable like any other failure of the network (it counts against the circuit breaker,
    so a network that keeps answering garbage opens it and its jobs fail over)."""


class RateLimited(NetworkError):
    """429 (or 503 with Retry-After) still standing after the allowed retries."""

    retryable = True

    def __init__(self, provider: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(provider, message)
        self.retry_after = retry_after


class CircuitOpen(NetworkError):
    """The provider's circuit breaker is open: no call was sent."""

    retryable = True


class PriceAboveCap(NetworkError):
    """The network asks more per GPU-hour than the job allows."""

    def __init__(self, provider: str, price: Decimal, cap: Decimal, message: str = "") -> None:
        super().__init__(
            provider,
            message or f"price {price} USD/GPU-hour is above the cap of {cap} USD/GPU-hour",
        )
        self.price = price
        self.cap = cap


class JobLost(NetworkError):
    """The network no longer knows the job (it vanished mid-run or was never created)."""


class BadRequest(NetworkError):
    """The network refused the request as invalid (4xx other than 401/404/429)."""

    def __init__(self, provider: str, message: str, status: int | None = None) -> None:
        super().__init__(provider, message)
        self.status = status
        """The HTTP status it answered, when it was an answer."""


class Unauthorized(BadRequest):
    """The network refused the credential (401/403)."""


class NotFound(BadRequest):
    """The network has no such object (404/410)."""
