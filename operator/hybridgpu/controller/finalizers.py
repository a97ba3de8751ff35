"""The InferenceJob finalizer, held only while deleting the job would lose something.

A finalizer on every job (Kopf's default for a delete handler) makes any namespace with jobs
undeletable while no operator runs: after `helm uninstall`, or during an outage. So a job
carries ``hybridgpu.dev/work`` only from its first dispatch until it has ended, owes no
cancel (``status.pendingCancels``) and its spend is in its policy's ledger. A job that waits,
or has ended and been released, is deleted at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridgpu.jobs import conditions as cond

WORK_FINALIZER = "hybridgpu.dev/work"


def finalizers_of(body: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in (body.get("metadata") or {}).get("finalizers") or []]


def holds(body: Mapping[str, Any]) -> bool:
    return WORK_FINALIZER in finalizers_of(body)


def releasable(body: Mapping[str, Any] | None) -> bool:
    """Whether the job holds the finalizer and no longer needs it."""
    if body is None or not holds(body):
        return False
    status = body.get("status") or {}
    return cond.is_terminal(status) and not status.get("pendingCancels")


def without(body: Mapping[str, Any]) -> list[str]:
    return [f for f in finalizers_of(body) if f != WORK_FINALIZER]
