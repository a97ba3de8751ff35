"""Work-based GPU time for model tasks: tokens through a per-product throughput table.

Hour-priced offers cost GPU time; token-priced ones cost the work. To compare them on the same
work, an ``llm`` job's GPU time on a product is estimated from its tokens and the published
throughput of that product (``data/throughput.csv``, sources in ``data/THROUGHPUT.md``):

    seconds = prompt tokens / prefill rate + generated tokens / decode rate

with the decode rate measured (vLLM) and the prefill rate derived from the GPU's dense tensor
peak at an assumed utilisation. GPU time is seconds times the job's GPU count. A product the
table lacks is costed as the slowest product it has (unknown hardware is never costed on the
user's guess); where the model's size cannot be read from its name, or no row fits the job's
GPU count, the job's ``estimatedDuration`` is used, as it is everywhere when the job sets
``estimate: EstimatedDuration`` (the user's override). Each candidate says which.

Pure: the table is read once from the package; no I/O per decision.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from hybridgpu.api.inferencejob import EstimateFrom, InferenceJobSpec, Task
from hybridgpu.routing.cost import token_counts

WORK = "Work"
DURATION = "EstimatedDuration"
PEAK_DENSE_FLOPS: dict[str, float] = {
    # NVIDIA datasheets, dense (no sparsity): H100 SXM FP8, A100 SXM BF16 (no FP8 on Ampere).
    "NVIDIA-H100-80GB-HBM3": 1979e12,
    "NVIDIA-A100-SXM4-80GB": 312e12,
}
PREFILL_MFU = 0.40
"""Assumed share of the dense peak that prefill reaches (an ASSUMPTION; see THROUGHPUT.md)."""
WEIGHT_BYTES_PER_PARAM = 1.0
"""FP8 weights, as in the benchmark the table comes from."""
WEIGHT_OVERHEAD = 1.10
"""Room for activations and a minimal KV cache on top of the weights."""
_SIZE = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class Row:
    params_b: float
    gpu_product: str
    gpus: int
    decode_tps: float
    source: str


@dataclass(frozen=True, slots=True)
class Estimate:
    """GPU time of the job on one product, and where it came from."""

    gpu_millis: int
    source: str
    """``Work`` (throughput table) or ``EstimatedDuration`` (the job's own figure)."""
    as_product: str = ""
    """For a product the table lacks: the (slowest) table product the estimate was taken from."""

    @property
    def label(self) -> str:
        """For the candidate table: ``Work 34.6 GPU-h`` or ``EstimatedDuration 1 GPU-h``."""
        hours = self.gpu_millis / 3_600_000
        text = f"{self.source} {hours:.3g} GPU-h"
        return f"{text} (as {self.as_product})" if self.as_product else text


@cache
def table() -> tuple[Row, ...]:
    """The shipped throughput table."""
    text = resources.files("hybridgpu").joinpath("data/throughput.csv").read_text()
    return tuple(
        Row(
            float(r["model_params_b"]),
            r["gpu_product"],
            int(r["gpus"]),
            float(r["decode_tokens_per_second"]),
            r["source_url"],
        )
        for r in csv.DictReader(text.splitlines())
        if r["task"] == Task.LLM.value
    )


@cache
def _rows_by_product() -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for row in table():
        grouped.setdefault(row.gpu_product, []).append(row)
    return grouped


def model_params_b(model: str | None) -> float | None:
    """Billions of parameters read from a model name (``Llama-3.3-70B`` 70, ``8x7B`` 56)."""
    if not model:
        return None
    found = None
    for m in _SIZE.finditer(model):
        experts = int(m.group(1)) if m.group(1) else 1
        found = experts * float(m.group(2))
    return found


def weight_bytes(job: InferenceJobSpec) -> int | None:
    """Bytes the model's weights (plus headroom) need across the job's GPUs; None if unknown."""
    if job.task is not Task.LLM:
        return None
    return _weight_bytes(job.model)


@lru_cache(maxsize=4096)
def _weight_bytes(model: str | None) -> int | None:
    params = model_params_b(model)
    if params is None:
        return None
    return math.ceil(params * 1e9 * WEIGHT_BYTES_PER_PARAM * WEIGHT_OVERHEAD)


_ESTIMATORS: dict[tuple[object, ...], Estimator] = {}
_ESTIMATORS_MAX = 4096


def estimator_for(job: InferenceJobSpec, default_millis: int) -> Estimator:
    """The job's estimator, shared by every decision about the same work (a job is decided
    again and again; its estimates depend only on what this key holds)."""
    if job.task is not Task.LLM or job.estimate is not EstimateFrom.WORK:
        return Estimator(job, default_millis)
    key = (job.model, token_counts(job), job.gpu.count, default_millis)
    hit = _ESTIMATORS.get(key)
    if hit is None:
        if len(_ESTIMATORS) >= _ESTIMATORS_MAX:
            _ESTIMATORS.clear()
        hit = _ESTIMATORS[key] = Estimator(job, default_millis)
    return hit


class Estimator:
    """GPU time per product for one job, computed once per product."""

    def __init__(self, job: InferenceJobSpec, default_millis: int) -> None:
        self.default = Estimate(default_millis, DURATION)
        self._cache: dict[str, Estimate] = {}
        self.millis: dict[str, int] = {}
        """GPU-milliseconds per product met so far (the engine's inner loops read it)."""
        self._rows: dict[str, list[Row]] | None = None
        self._params: float | None = None
        self._tokens = (0, 0)
        self._count = job.gpu.count
        if job.task is Task.LLM and job.estimate is EstimateFrom.WORK:
            self._params = model_params_b(job.model)
            if self._params is not None:
                self._tokens = token_counts(job)
                self._rows = _rows_by_product()

    @property
    def active(self) -> bool:
        """Whether any product may get a work-based estimate."""
        return self._rows is not None

    def millis_on(self, product: str) -> int:
        """GPU-milliseconds on ``product`` (and remembered in ``millis``)."""
        millis = self.millis[product] = self.for_product(product).gpu_millis
        return millis

    def for_product(self, product: str) -> Estimate:
        """The estimate on ``product`` (the job's estimatedDuration where the table has none)."""
        if self._rows is None:
            return self.default
        hit = self._cache.get(product)
        if hit is None:
            hit = self._cache[product] = self._estimate(product)
        return hit

    def _estimate(self, product: str) -> Estimate:
        if self._rows is not None and product not in self._rows:
            # Unknown hardware is costed as the slowest GPU the table knows, never on the
            # job's own figure: that is what let a 1-hour guess undercut priced work.
            work = [
                (e.gpu_millis, name)
                for name in self._rows
                if (e := self.for_product(name)).source == WORK
            ]
            if not work:
                return self.default
            millis, slowest = max(work)
            return Estimate(millis, WORK, slowest)
        return self._from_rows(product)

    def _from_rows(self, product: str) -> Estimate:
        rows = self._rows.get(product) if self._rows is not None else None
        params = self._params
        if not rows or params is None:
            return self.default
        # The nearest model size, then the largest tensor-parallel group within the job's GPUs.
        size = min({r.params_b for r in rows}, key=lambda s: (abs(s - params), s))
        fitting = [r for r in rows if r.params_b == size and r.gpus <= self._count]
        if not fitting:
            return self.default
        row = max(fitting, key=lambda r: r.gpus)
        replicas = self._count / row.gpus  # data parallel over the rest of the job's GPUs
        scale = size / params  # decode reads every weight per token
        decode = row.decode_tps * replicas * scale
        peak = PEAK_DENSE_FLOPS.get(product)
        tokens_in, tokens_out = self._tokens
        seconds = tokens_out / decode
        if peak is not None:
            prefill = peak * PREFILL_MFU * self._count / (2 * params * 1e9)
            seconds += tokens_in / prefill
        else:
            seconds += tokens_in / decode  # no peak known: prompt tokens as dear as generated
        return Estimate(max(round(seconds * 1000) * self._count, 1), WORK)


def memory_fits(weights: int | None, memory_bytes: int, gpus: int) -> bool:
    """Whether ``gpus`` GPUs of ``memory_bytes`` hold the weights (unknown: assume they do)."""
    return weights is None or memory_bytes <= 0 or memory_bytes * gpus >= weights
