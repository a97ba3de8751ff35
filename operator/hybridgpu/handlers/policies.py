"""RoutingPolicy handlers: spend and routing counts of the current budget period in status."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.spend import SpendItem, period_start, spent_since
from hybridgpu.jobs import conditions as cond
from hybridgpu.units import format_money


@kopf.on.event(GROUP, VERSION, "routingpolicies")
def wake_deferred_jobs(
    namespace: str | None, name: str, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A changed policy (a larger premium, a shorter maxWait) may end a job's deferral now.

    An event handler, not on.update: it keeps no state in the object (the operator may not
    patch RoutingPolicies, only their status). Status patches do not change the generation.
    """
    seen: dict[tuple[str, str], int] = memo.policy_generations
    key = (namespace or "", name)
    generation = int(meta.get("generation") or 0)
    if kwargs.get("type") == "DELETED":
        seen.pop(key, None)
        return
    previous = seen.get(key)
    seen[key] = generation
    if previous is not None and previous != generation:
        memo.registry.wakeup.notify_all()


@kopf.timer(GROUP, VERSION, "routingpolicies", interval=10.0, initial_delay=1.0)
async def account_policy(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    job_spend: kopf.Index[tuple[str, str], tuple[SpendItem, ...]] = kwargs["job_spend"]
    job_targets: kopf.Index[tuple[str, str], str] = kwargs["job_targets"]
    namespace = namespace or ""
    now = datetime.now(UTC)
    generation = int(meta.get("generation") or 0)
    conditions = [dict(c) for c in status.get("conditions") or []]
    try:
        policy = RoutingPolicySpec.model_validate(dict(spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        cond.set_condition(
            conditions,
            "Valid",
            False,
            "InvalidSpec",
            f"{where}: {first['msg']}",
            generation=generation,
            now=now,
        )
        await memo.kube.patch_policy_status(namespace, name, {"conditions": conditions})
        return
    created = cond.parse_timestamp(meta.get("creationTimestamp")) or now
    start = period_start(now, created, policy.budget.period) if policy.budget else created
    items = [i for group in job_spend.get((namespace, name), []) for i in group]
    spent = spent_since(items, start)
    routed = Counter(job_targets.get((namespace, name), []))
    cond.set_condition(
        conditions, "Valid", True, "Valid", "the policy is valid", generation=generation, now=now
    )
    if policy.budget is not None:
        exceeded = spent >= policy.budget.limit
        cond.set_condition(
            conditions,
            "BudgetExceeded",
            exceeded,
            "LimitReached" if exceeded else "WithinBudget",
            f"spent {format_money(spent)} of {format_money(policy.budget.limit)} USD this period"
            + (f"; {policy.budget.when_exceeded.value} applies" if exceeded else ""),
            generation=generation,
            now=now,
        )
    patch = {
        "spent": format_money(spent, 6),
        "periodStart": cond.timestamp(start),
        "routedJobs": dict(sorted(routed.items())),
        "conditions": conditions,
        "observedGeneration": generation,
    }
    if any(status.get(k) != v for k, v in patch.items()):
        await memo.kube.patch_policy_status(namespace, name, patch)
