"""Helpers for container-marketplace adapters (Akash, Nosana, Vast.ai)."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.units import format_duration

DEFAULT_IMAGE = "vllm/vllm-openai:latest"
KEY_ENV = "HYBRIDGPU_IDEMPOTENCY_KEY"


def job_env(job: InferenceJobSpec, key: str) -> dict[str, str]:
    """Environment for the job's container: its own env plus what hybridgpu tells it."""
    env = {var.name: var.value for var in job.env or []}
    env[KEY_ENV] = key
    env["HYBRIDGPU_TASK"] = job.task.value
    env["HYBRIDGPU_MODEL"] = job.model or ""
    env["HYBRIDGPU_REQUESTS"] = str(job.input.requests)
    env["HYBRIDGPU_ESTIMATED_DURATION"] = format_duration(job.estimated_duration)
    return env


def unwrap(body: Any) -> Any:
    """Strip Akash Console's ``{"data": ...}`` envelopes (documented both with and without)."""
    while isinstance(body, dict) and set(body) <= {"data", "pagination"} and "data" in body:
        body = body["data"]
    return body


def decimal_of(value: Any) -> Decimal | None:
    """A Decimal from a JSON string or number (numbers via str, so no binary-float noise)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def epoch_of(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def accrued(price_per_hour: Decimal | None, start: float | None, end: float | None) -> Decimal:
    """Cost of running at ``price_per_hour`` from ``start`` to ``end`` (or now)."""
    if price_per_hour is None or start is None:
        return Decimal(0)
    seconds = max((end if end is not None else time.time()) - start, 0.0)
    return (price_per_hour * Decimal(str(round(seconds, 3))) / Decimal(3600)).quantize(
        Decimal("0.00000001")
    )
