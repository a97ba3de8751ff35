"""Kopf logs "Handler 'x' succeeded." at INFO after every call. The watch-event handlers are
called on every event of every job, Pod, Job and node: in a burst of 1,000 jobs that was
most of the log and a measurable share of the operator's CPU (tests/bench/bench_operator.py),
for a line that says nothing. Their failures are still logged."""

from __future__ import annotations

import logging

WATCH_HANDLERS = frozenset(
    {
        "observe_job",
        "gpu_pod_released",
        "attempt_job_changed",
        "gpu_node_added",
        "wake_deferred_jobs",
    }
)
_QUIET = frozenset(f"Handler '{name}' succeeded." for name in WATCH_HANDLERS)


class QuietWatchHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in _QUIET)


def install() -> None:
    logging.getLogger("kopf.objects").addFilter(QuietWatchHandlers())
