"""Conditions are the truth of a job's state; the phase is derived from them.

Mutators return whether they changed anything, so callers patch only when needed, and take the
clock as an argument, so tests control time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hybridgpu.api.common import Condition, ConditionStatus
from hybridgpu.api.inferencejob import Phase

ROUTED = "Routed"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
TELEMETRY = "TelemetryAvailable"

Conditions = list[dict[str, Any]]


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> datetime | None:
    """Read a Kubernetes timestamp (RFC 3339, ``Z`` or offset); None for empty values."""
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def find(conditions: Conditions, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Conditions, type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def set_condition(
    conditions: Conditions,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> bool:
    """Set one condition in place. The transition time moves only when the status flips."""
    wanted = "True" if status else "False"
    current = find(conditions, type_)
    if current is None:
        conditions.append(
            {
                "type": type_,
                "status": wanted,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now),
                "observedGeneration": generation,
            }
        )
        return True
    changed = (
        current.get("status") != wanted
        or current.get("reason") != reason
        or current.get("message") != message
        or current.get("observedGeneration") != generation
    )
    if current.get("status") != wanted:
        current["lastTransitionTime"] = timestamp(now)
    current.update(status=wanted, reason=reason, message=message, observedGeneration=generation)
    return changed


PHASE_ORDER = (
    (SUCCEEDED, Phase.SUCCEEDED),
    (FAILED, Phase.FAILED),
    (SUSPENDED, Phase.SUSPENDED),
    (RUNNING, Phase.RUNNING),
    (ROUTED, Phase.ROUTED),
)
"""Conditions in order of finality: the first one true gives the phase."""


def derive_phase(conditions: Conditions) -> Phase:
    """The printer-column phase, derived from conditions in order of finality."""
    return next((p for t, p in PHASE_ORDER if is_true(conditions, t)), Phase.PENDING)


def is_terminal(status: dict[str, Any] | None) -> bool:
    """Whether the job has reached Succeeded or Failed."""
    conditions = (status or {}).get("conditions") or []
    return is_true(conditions, SUCCEEDED) or is_true(conditions, FAILED)


# -- the same on the typed status models (controller/reconcile.py) --------------------------


def find_model(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def model_true(conditions: list[Condition], type_: str) -> bool:
    found = find_model(conditions, type_)
    return found is not None and found.status is ConditionStatus.TRUE


def set_model(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> None:
    """As :func:`set_condition`: the transition time moves only when the status flips."""
    wanted = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    current = find_model(conditions, type_)
    when = now.replace(microsecond=0)
    if current is None:
        conditions.append(
            Condition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=when,
                observed_generation=generation,
            )
        )
        return
    if current.status is not wanted:
        current.last_transition_time = when
    current.status = wanted
    current.reason = reason
    current.message = message
    current.observed_generation = generation


def model_phase(conditions: list[Condition]) -> Phase:
    return next((p for t, p in PHASE_ORDER if model_true(conditions, t)), Phase.PENDING)


def model_terminal(conditions: list[Condition]) -> bool:
    return model_true(conditions, SUCCEEDED) or model_true(conditions, FAILED)
