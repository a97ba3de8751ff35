"""An admission loop with nothing behind it: for tests of its queue and of what waits on it."""

from __future__ import annotations

import asyncio

from hybridgpu.controller.admission import Admission


def bare_admission() -> Admission:
    """No jobs, no capacity: a cycle it runs fails and retries nothing."""
    return Admission(
        deps=lambda: None,  # type: ignore[arg-type,return-value]
        bodies=lambda _uid: None,
        world=lambda: None,  # type: ignore[arg-type,return-value]
        emit_for=lambda _obj: lambda *_: None,
        done=lambda *_: None,
        reread=lambda *_: asyncio.sleep(0),
    )
