"""Budget periods. What is spent in one is derived in claims.py and ledger.py."""

from __future__ import annotations

from datetime import datetime, timedelta


def period_start(now: datetime, anchor: datetime, period: timedelta) -> datetime:
    """Start of the budget period holding ``now``; periods are counted from ``anchor``."""
    if now <= anchor or period.total_seconds() <= 0:
        return anchor
    elapsed = (now - anchor) // period
    return anchor + elapsed * period
