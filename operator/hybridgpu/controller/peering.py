"""Whether this process may act: Kopf's peering rule, applied to the operator's own loops.

Kopf pauses its watches and daemons when a peer of higher (or, without sharding, the same)
priority is alive in the peering object, but it has no public hook for other tasks. The work
queue, the admission loop and the client-driven batches of this process are not Kopf's, so
they would keep dispatching on a paused peer. :class:`PeeringGate` reads the same peering
object and applies the same rule (``kopf._core.engines.peering.process_peering_event``):

- paused while a live peer has a higher priority, or the same priority (two operators with
  one priority both pause, as Kopf's do);
- a peer is live while ``lastseen + lifetime`` is in the future.

It reads the object every ``PEERING_POLL_SECONDS``; Kopf itself reacts to the watch at once,
so for at most that long two processes may both run steps. Every status write is
version-checked, so that window cannot dispatch an attempt twice.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import random
import socket
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

PEERING_POLL_SECONDS = 5.0
DEFAULT_PEERING = "hybridgpu"
"""The peering name when none is given: several replicas pause each other by default."""


def own_identity() -> str:
    """This process's peer id, in the format Kopf generates (POD_ID wins, as in Kopf)."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=3))
    return f"{getpass.getuser()}@{socket.gethostname()}/{now}/{suffix}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def blocking_peers(
    peers: Mapping[str, Any], identity: str, priority: int, now: datetime
) -> list[str]:
    """The live peers that make this one pause, by Kopf's rule."""
    out = []
    for peer, info in peers.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen"))
        lifetime = info.get("lifetime", 60)
        if seen is None or not isinstance(lifetime, int | float):
            continue
        if seen + timedelta(seconds=float(lifetime)) < now:
            continue  # dead: Kopf cleans it up
        if int(info.get("priority", 0) or 0) >= priority:
            out.append(peer)
    return sorted(out)


ReadPeers = Callable[[], Awaitable[Mapping[str, Any] | None]]
"""The peering object's status (peer id -> {priority, lastseen, lifetime}), None if absent."""


@dataclass
class PeeringGate:
    """Open while this process may act; closed while a peer outranks it."""

    identity: str
    priority: int
    read: ReadPeers | None
    """None when the operator runs standalone: the gate stays open."""
    on_pause: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    blockers: list[str] = field(default_factory=list)
    _verdicts: int = 0

    def __post_init__(self) -> None:
        # With a peering to follow, nothing is done before its first verdict.
        if self.read is None:
            self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    async def wait(self) -> None:
        """Return at once while acting is allowed; else when it is again."""
        await self._open.wait()

    async def observe(self, peers: Mapping[str, Any] | None, now: datetime) -> None:
        blockers = [] if peers is None else blocking_peers(peers, self.identity, self.priority, now)
        first = self._verdicts == 0 and self.read is not None
        self._verdicts += 1
        self.blockers = blockers
        if first and blockers:
            log.warning("paused from the start: peers %s outrank or equal this operator", blockers)
            for hook in self.on_pause:
                await hook()
        elif blockers and not self.paused:
            log.warning("pausing: peers %s outrank or equal this operator", blockers)
            self._open.clear()
            for hook in self.on_pause:
                await hook()
        elif not blockers and self.paused:
            if first:
                log.info("acting: no live peer outranks this operator")
            else:
                log.info("resuming: no live peer outranks this operator")
            self._open.set()

    async def run(self) -> None:
        """Follow the peering object until cancelled (nothing to do when standalone)."""
        if self.read is None:
            return
        while True:
            try:
                peers = await self.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server is away: keep the last verdict
                log.warning("reading the peering object failed: %s", exc)
            else:
                await self.observe(peers, datetime.now(UTC))
            await asyncio.sleep(PEERING_POLL_SECONDS)
