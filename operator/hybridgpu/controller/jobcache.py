"""The latest known body of every unfinished InferenceJob, fed by the watch and by our writes.

Only an ordering hint: a status write carries the resourceVersion it was computed from, so
acting on a stale body ends in a 409 and a re-read, never in a second dispatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _newer(candidate: dict[str, Any], held: dict[str, Any] | None) -> bool:
    """Whether ``candidate`` is a later version than ``held``.

    resourceVersions are opaque; etcd's are integers, and where both parse as such they are
    compared so that the watch echo of our own older write does not replace the newer body
    the write returned. Anything else counts as newer (the 409 guard catches the rest).
    """
    if held is None:
        return True
    new = (candidate.get("metadata") or {}).get("resourceVersion")
    old = (held.get("metadata") or {}).get("resourceVersion")
    if new == old:
        return False
    try:
        return int(str(new)) > int(str(old))
    except ValueError:
        return True


class JobCache:
    """uid -> the newest body seen of each InferenceJob."""

    def __init__(self) -> None:
        self._bodies: dict[str, dict[str, Any]] = {}

    def observe(self, body: dict[str, Any]) -> bool:
        """Keep ``body`` if it is newer than what is held; True when it was."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if not uid or not _newer(body, self._bodies.get(uid)):
            return False
        self._bodies[uid] = body
        return True

    def forget(self, uid: str) -> None:
        self._bodies.pop(uid, None)

    def get(self, uid: str) -> dict[str, Any] | None:
        return self._bodies.get(uid)

    def values(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._bodies.values()))

    def __len__(self) -> int:
        return len(self._bodies)

    def __contains__(self, uid: object) -> bool:
        return uid in self._bodies
