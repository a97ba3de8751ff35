"""The operator's own loops follow Kopf's peering rule: pause for a live peer that outranks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hybridgpu.controller.peering import PeeringGate, blocking_peers
from hybridgpu.controller.workqueue import WorkQueue

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 1.0, lifetime: int = 60) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=seen_ago)).isoformat()
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_only_live_peers_of_higher_or_equal_priority_block() -> None:
    peers = {
        "me": peer(5),
        "higher": peer(7),
        "equal": peer(5),
        "lower": peer(2),
        "dead-higher": peer(9, seen_ago=120, lifetime=60),
        "garbage": "not a mapping",
        "no-time": {"priority": 9},
    }
    assert blocking_peers(peers, "me", 5, NOW) == ["equal", "higher"]
    assert blocking_peers({"me": peer(5), "lower": peer(1)}, "me", 5, NOW) == []


async def test_the_gate_pauses_runs_its_hooks_once_and_resumes() -> None:
    paused: list[str] = []

    async def hook() -> None:
        paused.append("stopped local work")

    gate = PeeringGate(identity="me", priority=1, read=None, on_pause=[hook])
    await gate.observe({"me": peer(1), "other": peer(2)}, NOW)
    await gate.observe({"me": peer(1), "other": peer(2)}, NOW)
    assert gate.paused and gate.blockers == ["other"]
    assert paused == ["stopped local work"]
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await gate.observe({"me": peer(1), "other": peer(2, seen_ago=300)}, NOW)  # it died
    await asyncio.wait_for(waiter, 1)
    assert not gate.paused
    await gate.observe(None, NOW)  # no peering object: nothing to defer to
    assert not gate.paused


async def test_a_paused_work_queue_runs_nothing_until_resumed() -> None:
    gate = PeeringGate(identity="me", priority=0, read=None)
    worked: list[str] = []

    async def handler(uid: str) -> float | None:
        worked.append(uid)
        return None

    queue = WorkQueue(handler, workers=2, gate=gate.wait)
    await gate.observe({"peer": peer(3)}, NOW)
    task = asyncio.create_task(queue.run())
    try:
        queue.schedule("job-1", 0.0)
        await asyncio.sleep(0.1)
        assert worked == []
        await gate.observe({}, NOW)
        for _ in range(50):
            if worked:
                break
            await asyncio.sleep(0.02)
        assert worked == ["job-1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_gate_keeps_its_verdict_when_the_peering_object_cannot_be_read() -> None:
    calls = 0

    async def read() -> dict[str, Any] | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"peer": {**peer(3), "lastseen": datetime.now(UTC).isoformat()}}
        raise ConnectionError("API server restarting")

    gate = PeeringGate(identity="me", priority=0, read=read)
    import hybridgpu.controller.peering as peering

    old = peering.PEERING_POLL_SECONDS
    peering.PEERING_POLL_SECONDS = 0.01
    task = asyncio.create_task(gate.run())
    try:
        await asyncio.sleep(0.1)
        assert calls > 1
        assert gate.paused  # an unreadable object is no reason to start acting
    finally:
        peering.PEERING_POLL_SECONDS = old
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
