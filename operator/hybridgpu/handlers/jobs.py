"""InferenceJob handlers: the watch feeds the job runtime, which also cleans up deleted jobs.

No daemon per job: an unfinished job is a cached body and a timer in ``controller/jobloop.py``.
"""

from __future__ import annotations

from typing import Any

import kopf

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.controller.jobloop import JobRuntime


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
        runtime.changed(uid)
