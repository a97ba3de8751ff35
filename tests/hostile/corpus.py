"""Hostile inputs, as data: jobs beyond their bounds and odd network answers.

Each entry says what must happen to it, so the same corpus drives the schema tests (unit),
the API server tests (e2e), the adapter tests (contract) and, once the operator runs them
beside an ordinary job, the end-to-end hostile suite.

* :data:`REJECTED_BY_APISERVER`: specs the CRD refuses; ``field`` is the path as the API
  server writes it (``spec.env[0].value``), ``words`` a part of its message.
* :data:`FAILED_BY_OPERATOR`: specs the API server accepts (a schema cannot bound them) and
  the operator refuses when it reads the job, naming ``field``.
* :data:`ODD_ANSWERS`: stand-in faults (``POST /_faults``) and what the adapter makes of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class HostileJob:
    name: str
    spec: dict[str, Any]
    """Overrides of a small valid llm job's spec."""
    field: str
    words: str

    @property
    def model_field(self) -> str:
        """``field`` as pydantic's error location writes it (``spec.env.0.value``)."""
        return re.sub(r"\[(\d+)\]", r".\1", self.field)


REJECTED_BY_APISERVER: tuple[HostileJob, ...] = (
    HostileJob(
        "many-requests",
        {"input": {"requests": 1_000_001}},
        "spec.input.requests",
        "less than or equal to 1000000",
    ),
    HostileJob(
        "long-prompts",
        {"input": {"requests": 1, "inputTokens": 10_000_000}},
        "spec.input.inputTokens",
        "less than or equal to 131072",
    ),
    HostileJob(
        "long-answers",
        {"input": {"requests": 1, "outputTokens": 10_000_000}},
        "spec.input.outputTokens",
        "less than or equal to 131072",
    ),
    HostileJob(
        "long-env", {"env": [{"name": "A", "value": "v" * 9000}]}, "spec.env[0].value", "Too long"
    ),
    HostileJob("long-env-name", {"env": [{"name": "A" * 300}]}, "spec.env[0].name", "Too long"),
    HostileJob("long-command", {"command": ["sh"] * 33}, "spec.command", "Too many"),
    HostileJob("many-args", {"args": ["a"] * 129}, "spec.args", "Too many"),
    HostileJob("long-arg", {"args": ["a" * 5000]}, "spec.args[0]", "Too long"),
    HostileJob(
        "wide-inline",
        {"input": {"requests": 1, "inline": [{f"k{i}": i for i in range(65)}]}},
        "spec.input.inline[0]",
        "Too many",
    ),
    HostileJob("many-regions", {"regions": ["r"] * 33}, "spec.regions", "Too many"),
    HostileJob(
        "year-and-a-day",
        {"estimatedDuration": "8785h"},
        "spec.estimatedDuration",
        "must be at most 8760h",
    ),
    HostileJob(
        "forever",
        {"estimatedDuration": "99999999999h"},
        "spec.estimatedDuration",
        "spec.estimatedDuration",
    ),
    HostileJob("far-start", {"startWithin": "9000h"}, "spec.startWithin", "must be at most 8760h"),
)

FAILED_BY_OPERATOR: tuple[HostileJob, ...] = (
    HostileJob(
        "heavy-inline",
        {"input": {"requests": 70, "inline": [{"prompt": "p" * 1000} for _ in range(70)]}},
        "spec.input.inline",
        "at most 65536 bytes",
    ),
    HostileJob(
        "heavy-spec",
        {"args": ["a" * 4000] * 40},  # every entry within bounds, 160 KB together
        "spec",
        "at most 131072 bytes",
    ),
)


@dataclass(frozen=True)
class OddAnswer:
    name: str
    network: str
    faults: dict[str, Any]
    """The stand-in's ``/_faults`` body."""
    expect: Literal["MalformedAnswer", "Dropped"]
    """``list_offers`` raises MalformedAnswer, or the refresh drops the offers with a reason."""
    reason: str = ""
    """Part of the error message or the drop reason."""
    extra: dict[str, Any] = field(default_factory=dict)


def _replace(key: str, value: Any) -> dict[str, Any]:
    return {"replaceFields": {key: value}}


ODD_ANSWERS: tuple[OddAnswer, ...] = (
    *(
        OddAnswer(f"html-200-{n}", n, {"malformedNext": 10}, "MalformedAnswer", "not JSON")
        for n in ("akash", "openai", "nosana", "vastai")
    ),
    # The Akash adapter reads numbers as decimals: 1e999 GPUs is a whole number, far too big.
    OddAnswer(
        "infinite-capacity",
        "akash",
        _replace("available", {"$raw": "1e999"}),
        "Dropped",
        "available",
    ),
    OddAnswer(
        "text-capacity",
        "vastai",
        _replace("num_gpus", "lots"),
        "MalformedAnswer",
        "ValueError",
    ),
    OddAnswer("number-not-list", "vastai", _replace("offers", 5), "MalformedAnswer", "TypeError"),
    OddAnswer("negative-memory", "vastai", _replace("gpu_ram", -4096), "Dropped", "memory bytes"),
    *(
        OddAnswer(f"{price_name}-{n}", n, _replace(key, price), "Dropped", reason)
        for n, key in (
            ("vastai", "dph_total"),
            ("nosana", "usd_reward_per_hour"),
            ("openai", "input_token_price"),
        )
        for price_name, price, reason in (
            ("raw-1e999999", {"$raw": "1E+999999"}, "price per"),
            ("text-1e999999", "1E+999999", "price per"),
            ("negative", "-0.25", "negative"),
            ("billion", "1000000000", "not below the ceiling"),
            ("infinity", "Infinity", "not a finite number"),
            ("nan", "NaN", "not a finite number"),
        )
    ),
    OddAnswer(
        "odd-gpu-name",
        "nosana",
        _replace("gpu_types", ["RTX 4090 (Ti)"]),
        "Dropped",
        "product name",
    ),
)
