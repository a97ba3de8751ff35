"""A RoutingPolicy's spend ledger for its budget period: what ``status`` should say.

``spent`` and ``committed`` are derived from the jobs' attempts (so a restart recomputes
them) plus ``retired``: what jobs deleted in the period had cost, written before their
finalizers were released. Deleting a job or changing its policyRef therefore never gives
budget back. Retired entries of jobs that are gone for good are folded into
``retiredSpent``, which keeps the status small; a new period starts both afresh.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.claims import Holdings, Ledger, PolicyKey
from hybridgpu.jobs import conditions as cond
from hybridgpu.units import format_money, parse_money


def _money(value: Decimal) -> str:
    return format_money(value, 6)


def account(
    *,
    policy: RoutingPolicySpec,
    status: Mapping[str, Any],
    holdings: Holdings,
    key: PolicyKey,
    start: datetime,
    gone: Collection[str],
    routed: Counter[str],
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """The status patch that brings the policy's ledger up to date ({} when it is)."""
    same_period = cond.parse_timestamp(status.get("periodStart")) == start
    folded = parse_money(str(status.get("retiredSpent") or "0")) if same_period else Decimal(0)
    kept: dict[str, tuple[Decimal, datetime | None]] = {}
    removed: dict[str, None] = {}
    for uid, entry in (status.get("retired") or {}).items():
        cost = parse_money(str(entry.get("cost") or "0"))
        at = cond.parse_timestamp(entry.get("at"))
        in_period = at is None or at >= start
        if in_period and uid not in gone:
            kept[uid] = (cost, at)
            continue
        if in_period:
            folded += cost
        removed[uid] = None
    previous = holdings.ledgers.get(key)
    holdings.ledgers[key] = Ledger(
        period_start=start,
        retired=kept,
        retired_spent=folded,
        created=previous.created if previous else None,
    )
    spent = holdings.spent(key, start)
    committed = holdings.committed(key, start)
    conditions = [dict(c) for c in status.get("conditions") or []]
    cond.set_condition(
        conditions, "Valid", True, "Valid", "the policy is valid", generation=generation, now=now
    )
    patch: dict[str, Any] = {
        "spent": _money(spent),
        "committed": _money(committed),
        "retiredSpent": _money(folded),
        "periodStart": cond.timestamp(start),
        "routedJobs": dict(sorted(routed.items())),
        "observedGeneration": generation,
    }
    if policy.budget is not None:
        limit = policy.budget.limit
        exceeded = committed >= limit
        patch["remaining"] = _money(max(limit - committed, Decimal(0)))
        cond.set_condition(
            conditions,
            "BudgetExceeded",
            exceeded,
            "LimitReached" if exceeded else "WithinBudget",
            f"committed {format_money(committed)} (spent {format_money(spent)}) of "
            f"{format_money(limit)} USD this period"
            + (f"; {policy.budget.when_exceeded.value} applies" if exceeded else ""),
            generation=generation,
            now=now,
        )
    elif "remaining" in status:
        patch["remaining"] = None
    patch["conditions"] = conditions
    changed = {k: v for k, v in patch.items() if status.get(k) != v}
    if removed:
        changed["retired"] = removed
    return changed
