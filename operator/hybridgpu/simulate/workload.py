"""Workload traces read into simulation jobs: the Alibaba GPU pod list and the Azure LLM trace.

The format is detected from the header line. Every error names the file, the line and the
column (1-based, in characters) of the offending field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hybridgpu.gpu_products import TRACE_GPU_PRODUCTS

ALIBABA_COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
LATENCY_SENSITIVE_QOS = frozenset({"LS", "Guaranteed"})
KNOWN_QOS = frozenset({"LS", "BE", "Burstable", "Guaranteed"})

# One GPU serving one Azure request: prefill and decode throughputs are assumptions (a 7-13B
# model on an A100-class GPU), used only to turn token counts into GPU time.
PREFILL_TOKENS_PER_SECOND = 5000.0
DECODE_TOKENS_PER_SECOND = 50.0


class TraceError(ValueError):
    """A trace file that cannot be read; the message names file, line and column."""


@dataclass(frozen=True, slots=True)
class SimJob:
    """One job of a workload, in seconds since the trace's first arrival."""

    name: str
    arrival: float
    duration: float
    gpus: int
    """Whole GPUs (nvidia.com/gpu), at least 1."""
    gpu_milli: int
    """Share of one GPU the trace asked for (GPU-sharing pods), for the record."""
    products: tuple[str, ...] | None
    """Allowed GPU Feature Discovery products; None means any."""
    qos: str
    latency_sensitive: bool
    task: str = "container"
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """The jobs of a trace and what was left out, for the report."""

    source: str
    format: str
    jobs: tuple[SimJob, ...]
    rows: int
    skipped_cpu_only: int = 0
    skipped_outside_horizon: int = 0


def load_workload(path: Path, *, hours: float | None = None) -> Workload:
    """Read ``path`` in either trace format; keep jobs arriving within ``hours`` if given."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    lines = text.splitlines()
    if not lines:
        raise TraceError(f"{path}:1:1: empty file, expected a CSV header")
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    if set(ALIBABA_COLUMNS) <= set(header):
        return _alibaba(path, header, lines, hours)
    if set(AZURE_COLUMNS) <= set(header):
        return _azure(path, header, lines, hours)
    raise TraceError(
        f"{path}:1:1: unknown trace format: expected the Alibaba pod-list columns "
        f"({', '.join(ALIBABA_COLUMNS)}) or the Azure LLM columns ({', '.join(AZURE_COLUMNS)})"
    )


def _rows(
    path: Path, header: list[str], lines: list[str]
) -> Iterator[tuple[int, dict[str, tuple[str, int]]]]:
    """Yield (line number, {column: (value, character column)}) for each data line."""
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        if len(fields) != len(header):
            raise TraceError(
                f"{path}:{number}:1: expected {len(header)} fields, found {len(fields)}"
            )
        row: dict[str, tuple[str, int]] = {}
        col = 1
        for name, value in zip(header, fields, strict=True):
            row[name] = (value.strip(), col)
            col += len(value) + 1
        yield number, row


def _int(path: Path, number: int, row: dict[str, tuple[str, int]], name: str, low: int) -> int:
    value, col = row[name]
    try:
        parsed = int(value)
    except ValueError:
        raise TraceError(
            f"{path}:{number}:{col}: {name} must be an integer, got {value!r}"
        ) from None
    if parsed < low:
        raise TraceError(f"{path}:{number}:{col}: {name} must be at least {low}, got {parsed}")
    return parsed


def _alibaba(path: Path, header: list[str], lines: list[str], hours: float | None) -> Workload:
    horizon = math.inf if hours is None else hours * 3600
    jobs: list[SimJob] = []
    cpu_only = outside = rows = 0
    for number, row in _rows(path, header, lines):
        rows += 1
        num_gpu = _int(path, number, row, "num_gpu", 0)
        gpu_milli = _int(path, number, row, "gpu_milli", 0)
        created = _int(path, number, row, "creation_time", 0)
        deleted = _int(path, number, row, "deletion_time", 0)
        if deleted < created:
            _, col = row["deletion_time"]
            raise TraceError(
                f"{path}:{number}:{col}: deletion_time {deleted} is before creation_time {created}"
            )
        qos, qcol = row["qos"]
        if qos not in KNOWN_QOS:
            raise TraceError(
                f"{path}:{number}:{qcol}: qos must be one of {', '.join(sorted(KNOWN_QOS))}, "
                f"got {qos!r}"
            )
        products = _products(path, number, row)
        if num_gpu == 0 and gpu_milli == 0:
            cpu_only += 1
            continue
        if created >= horizon:
            outside += 1
            continue
        jobs.append(
            SimJob(
                name=row["name"][0],
                arrival=float(created),
                # A pod that lived 0 s still held its GPU for the scheduling tick.
                duration=float(max(deleted - created, 1)),
                gpus=max(num_gpu, 1),
                gpu_milli=gpu_milli,
                products=products,
                qos=qos,
                latency_sensitive=qos in LATENCY_SENSITIVE_QOS,
            )
        )
    jobs.sort(key=lambda j: (j.arrival, j.name))
    return Workload(str(path), "alibaba-pod-list", tuple(jobs), rows, cpu_only, outside)


def _products(path: Path, number: int, row: dict[str, tuple[str, int]]) -> tuple[str, ...] | None:
    spec, col = row["gpu_spec"]
    if not spec or spec.lower() == "nan":
        return None
    out: list[str] = []
    for code in spec.split("|"):
        mapped = TRACE_GPU_PRODUCTS.get(code.strip())
        if mapped is None:
            raise TraceError(
                f"{path}:{number}:{col}: unknown gpu_spec code {code!r}; known: "
                f"{', '.join(sorted(TRACE_GPU_PRODUCTS))}"
            )
        out.append(mapped[0])
    return tuple(out)


def _azure(path: Path, header: list[str], lines: list[str], hours: float | None) -> Workload:
    horizon = math.inf if hours is None else hours * 3600
    jobs: list[SimJob] = []
    first: datetime | None = None
    outside = rows = 0
    for number, row in _rows(path, header, lines):
        rows += 1
        stamp, col = row["TIMESTAMP"]
        try:
            # The trace has 7 fractional digits; datetime takes at most 6.
            when = datetime.fromisoformat(stamp[:26])
        except ValueError:
            raise TraceError(
                f"{path}:{number}:{col}: TIMESTAMP must look like 2023-11-16 18:15:46.6805900, "
                f"got {stamp!r}"
            ) from None
        context = _int(path, number, row, "ContextTokens", 0)
        generated = _int(path, number, row, "GeneratedTokens", 0)
        first = first or when
        arrival = (when - first).total_seconds()
        if arrival < 0:
            raise TraceError(f"{path}:{number}:{col}: TIMESTAMP goes back before the first row")
        if arrival >= horizon:
            outside += 1
            continue
        seconds = context / PREFILL_TOKENS_PER_SECOND + generated / DECODE_TOKENS_PER_SECOND
        jobs.append(
            SimJob(
                name=f"azure-{number - 1:06d}",
                arrival=arrival,
                duration=max(seconds, 0.1),
                gpus=1,
                gpu_milli=1000,
                products=None,
                qos="LS",
                latency_sensitive=True,
                task="llm",
                input_tokens=context,
                output_tokens=generated,
            )
        )
    jobs.sort(key=lambda j: (j.arrival, j.name))
    return Workload(str(path), "azure-llm", tuple(jobs), rows, 0, outside)
