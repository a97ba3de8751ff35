"""Events wait while the admission loop has decisions to write, then all of them are posted."""

from __future__ import annotations

import asyncio
from typing import Any

from hybridgpu.controller.events import EventPoster

from .admission_stub import bare_admission

JOB = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}


async def test_events_are_posted_once_admission_is_idle() -> None:
    admission = bare_admission()
    posted: list[str] = []

    async def post(namespace: str, body: dict[str, Any]) -> None:
        posted.append(body["reason"])

    poster = EventPoster(post, yield_to=admission.idle)
    task = asyncio.create_task(poster.run(workers=1))
    admission.request("u")  # a decision is pending
    poster.emit_for(JOB)("Normal", "Routed", "routed")
    await asyncio.sleep(0.05)
    assert posted == []
    loop = asyncio.create_task(admission.run())  # decides (nothing to decide here) and idles
    await asyncio.sleep(0.1)
    assert posted == ["Routed"]
    for t in (task, loop):
        t.cancel()
    await asyncio.gather(task, loop, return_exceptions=True)
