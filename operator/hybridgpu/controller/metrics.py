"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "hybridgpu_decisions_total",
    "Routing decisions by outcome, target provider and reason.",
    ["outcome", "target", "reason"],
)
DECISION_SECONDS = Histogram(
    "hybridgpu_decision_duration_seconds",
    "Time the routing engine took for one decision.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
)
JOBS = Gauge("hybridgpu_jobs", "InferenceJobs by phase.", ["phase"])
EXTERNAL_SPEND = Counter(
    "hybridgpu_external_spend_usd_total",
    "US dollars spent on external networks by finished attempts.",
    ["provider"],
)
PROVIDER_ERRORS = Counter(
    "hybridgpu_provider_errors_total", "Failed calls to external networks.", ["provider"]
)
CIRCUIT_OPEN = Gauge(
    "hybridgpu_provider_circuit_open",
    "1 when the provider's circuit breaker is open.",
    ["provider"],
)
PROVIDER_READY = Gauge("hybridgpu_provider_ready", "1 when the provider answers.", ["provider"])
FAILOVERS = Counter(
    "hybridgpu_failovers_total", "Attempts abandoned for another backend.", ["reason"]
)
PREEMPTIONS = Counter(
    "hybridgpu_preemptions_total",
    "In-cluster attempts of preemptible jobs evicted for higher-ranked jobs.",
    ["gpu_product"],
)
_STARTUP_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
TIME_TO_ROUTED = Histogram(
    "hybridgpu_time_to_routed_seconds",
    "Seconds from an InferenceJob's creation until it was routed.",
    buckets=(0.1, 0.25, 0.5, *_STARTUP_BUCKETS),
)
TIME_TO_RUNNING = Histogram(
    "hybridgpu_time_to_running_seconds",
    "Seconds from an InferenceJob's creation until it was running.",
    buckets=_STARTUP_BUCKETS,
)


class PhaseTally:
    """Keeps the jobs-by-phase gauge exact from watch events, one job at a time."""

    def __init__(self) -> None:
        self._phase_of: dict[str, str] = {}

    def update(self, uid: str, phase: str | None) -> None:
        """Record a job's phase; None when the job is gone."""
        old = self._phase_of.pop(uid, None)
        if old is not None:
            JOBS.labels(phase=old).dec()
        if phase is not None:
            self._phase_of[uid] = phase
            JOBS.labels(phase=phase).inc()
