"""External spend per RoutingPolicy and budget period, derived from the jobs' own statuses.

Spend is never accumulated in a counter that a crash could lose or double: it is the sum of
what the jobs' attempts report, so a restarted operator recomputes the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.units import parse_money


@dataclass(frozen=True, slots=True)
class SpendItem:
    """External cost of one attempt, and when it was last incurred."""

    cost: Decimal
    at: datetime | None
    """End of the attempt, or None while it is still running (counts as now)."""


def spend_items(status: dict[str, Any] | None) -> tuple[SpendItem, ...]:
    """The external attempts of one job as spend items (what a Kopf index keeps per job)."""
    items = []
    for attempt in (status or {}).get("attempts") or []:
        if attempt.get("backend") != "External" or not attempt.get("cost"):
            continue
        items.append(
            SpendItem(parse_money(attempt["cost"]), parse_timestamp(attempt.get("endTime")))
        )
    return tuple(items)


def period_start(now: datetime, anchor: datetime, period: timedelta) -> datetime:
    """Start of the budget period holding ``now``; periods are counted from ``anchor``."""
    if now <= anchor or period.total_seconds() <= 0:
        return anchor
    elapsed = (now - anchor) // period
    return anchor + elapsed * period


def spent_since(items: list[SpendItem] | tuple[SpendItem, ...], start: datetime) -> Decimal:
    """Spend of attempts that ended in the period, or are still running."""
    return sum((i.cost for i in items if i.at is None or i.at >= start), Decimal(0))
