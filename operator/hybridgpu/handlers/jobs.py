"""InferenceJob handlers: the watch feeds the job runtime; the finalizer cleans up.

No daemon per job: an unfinished job is a cached body and a timer in ``controller/jobloop.py``.
"""

from __future__ import annotations

from typing import Any

import kopf

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.controller.finalizers import holds, without
from hybridgpu.controller.jobloop import JobRuntime
from hybridgpu.controller.ledger_writes import retire_job_spend
from hybridgpu.controller.reconcile import CANCEL_RETRY, JobStep
from hybridgpu.jobs.conditions import is_terminal
from hybridgpu.kube import Conflict


@kopf.on.event(GROUP, VERSION, "inferencejobs")
async def observe_job(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str | None,
    uid: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Keep the runtime's cache current; a change made by someone else is worked on now.

    Async, as every handler that touches the runtime: Kopf runs plain functions in worker
    threads, and the cache, queue and wake-ups belong to the event loop."""
    runtime: JobRuntime = memo.jobs
    obj = event.get("object") or {}
    status = obj.get("status") or {}
    if event.get("type") == "DELETED":
        runtime.forget(namespace or "", name or "", uid)
        memo.phases.update(uid, None)
        return
    memo.phases.update(uid, str(status.get("phase") or "Pending"))
    if runtime.observe(obj):
        runtime.queue.schedule(uid, 0.0)


# optional: Kopf adds no finalizer of its own; the job holds hybridgpu.dev/work only while
# deleting it would lose remote work or spend (controller/finalizers.py).
@kopf.on.delete(GROUP, VERSION, "inferencejobs", optional=True)
async def cleanup_job(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Cancel remote work or delete the in-cluster Job, keep its spend in the policy's ledger,
    then let the object go."""
    runtime: JobRuntime = memo.jobs
    fresh = await memo.kube.get_job(namespace or "", name) or dict(body)
    step = JobStep(fresh, runtime.deps(), runtime.events.emit_for(fresh))
    current = None if is_terminal(step.status) else step.active_attempt()
    if current is not None:
        await step.cancel_attempt(current)
        logger.info("cancelled attempt %s on %s", current.get("attempt"), current.get("provider"))
    if step.status.get("pendingCancels") and await step.settle_cancels():
        # Kept until the remote work is stopped: a deleted job must not leave it billing.
        await step.save()
        raise kopf.TemporaryError(
            f"{len(step.status['pendingCancels'])} remote cancels still owed "
            "(status.pendingCancels); retrying",
            delay=CANCEL_RETRY,
        )
    await retire_job_spend(memo.kube, fresh)
    if holds(fresh):
        meta = fresh["metadata"]
        try:
            await memo.kube.set_job_finalizers(
                namespace or "", name, without(fresh), str(step.rv or meta["resourceVersion"])
            )
        except Conflict:
            raise kopf.TemporaryError("changed while being released; retrying", delay=1) from None
