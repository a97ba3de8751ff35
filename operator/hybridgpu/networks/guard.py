"""The adapter boundary: whatever a network answers, the operator sees a value or a NetworkError.

Adapters parse answers with plain ``response.json()``, ``int(...)`` and ``Decimal(...)``; a
non-JSON 200, a field of the wrong type or a number out of range would raise ``ValueError``,
``KeyError``, ``TypeError``, ``decimal.InvalidOperation`` or ``OverflowError`` into the
caller: a provider's refresh loop or a job's handling, which only expect NetworkErrors.
:func:`guarded` wraps the protocol methods of every adapter class (``AdapterBase`` applies it
to each subclass) so such errors become :class:`MalformedAnswer`, and checks what ``status``
returns against the bounds every status write needs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx

from hybridgpu.networks.base import RemoteStatus
from hybridgpu.networks.bounds import (
    MAX_USD_PER_GPU_HOUR,
    MONEY_LIMIT,
    amount_problem,
    count_problem,
)
from hybridgpu.networks.errors import MalformedAnswer, NetworkError

GUARDED_METHODS = ("list_offers", "submit", "find", "status", "cancel", "result")
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # json.JSONDecodeError, UnicodeDecodeError, int("abc"), pydantic errors
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,  # decimal.InvalidOperation, OverflowError, ZeroDivisionError
    RecursionError,  # JSON nested deeper than the interpreter's stack
    httpx.DecodingError,
)
MAX_REQUESTS_REPORTED = 100_000_000
MAX_RESULT_CHARS = 2048
"""Longest output reference (URL, id) taken from a network."""
MAX_MESSAGE_CHARS = 256
"""Longest text of a network (``status_msg`` and the like) passed on to status and Events."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

F = TypeVar("F", bound=Callable[..., Any])


class Guarded(Protocol):
    """What :func:`guarded` needs of the adapter it wraps."""

    name: str

    def redact(self, text: str) -> str: ...

    def note_malformed(self) -> None: ...

    def note_answered(self) -> None: ...


def malformed(adapter: Guarded, what: str, exc: BaseException) -> MalformedAnswer:
    """A MalformedAnswer for ``exc``, redacted before it is cut short (so no key prefix leaks)."""
    if isinstance(exc, json.JSONDecodeError):
        detail = f"not JSON ({exc.msg} at position {exc.pos})"
    else:
        detail = adapter.redact(f"{type(exc).__name__}: {exc}")[:200]
    return MalformedAnswer(adapter.name, f"{what}: unexpected answer: {detail}")


def safe_text(adapter: Guarded, text: str) -> str:
    """A network's text as status may show it: redacted first, then on one line and cut."""
    text = _CONTROL.sub(" ", adapter.redact(str(text)))
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def status_problem(status: RemoteStatus) -> str | None:
    """Why a RemoteStatus cannot go into an InferenceJob's status, or None."""
    return (
        amount_problem(status.accrued_usd, MONEY_LIMIT, "accrued cost")
        or (
            None
            if status.price_per_gpu_hour is None
            else amount_problem(
                status.price_per_gpu_hour, MAX_USD_PER_GPU_HOUR, "price per GPU-hour"
            )
        )
        or count_problem(status.completed, MAX_REQUESTS_REPORTED, "completed requests")
        or count_problem(status.total, MAX_REQUESTS_REPORTED, "total requests")
    )


def guarded(name: str, method: F) -> F:
    """``method`` of an adapter, with parse errors of the network's answer as MalformedAnswer."""
    if getattr(method, "__hybridgpu_guarded__", False):
        return method

    @functools.wraps(method)
    async def wrapper(self: Guarded, *args: Any, **kwargs: Any) -> Any:
        try:
            value = await method(self, *args, **kwargs)
        except NetworkError:
            raise
        except PARSE_ERRORS as exc:
            self.note_malformed()
            raise malformed(self, name, exc) from exc
        if name == "status" and isinstance(value, RemoteStatus):
            problem = status_problem(value)
            if problem is not None:
                self.note_malformed()
                raise MalformedAnswer(self.name, f"status: {problem}")
            value = dataclasses.replace(value, message=safe_text(self, value.message))
        if (
            name == "result"
            and value is not None
            and (not isinstance(value, str) or len(value) > MAX_RESULT_CHARS)
        ):
            raise MalformedAnswer(
                self.name, f"result: output reference is not text of {MAX_RESULT_CHARS} chars"
            )
        self.note_answered()
        return value

    wrapper.__hybridgpu_guarded__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def guard_class(cls: type) -> None:
    """Wrap the protocol methods ``cls`` itself defines (inherited ones are wrapped already)."""
    for name in GUARDED_METHODS:
        method = cls.__dict__.get(name)
        if method is not None:
            setattr(cls, name, guarded(name, method))


__all__ = ["GUARDED_METHODS", "PARSE_ERRORS", "guard_class", "guarded", "malformed"]
