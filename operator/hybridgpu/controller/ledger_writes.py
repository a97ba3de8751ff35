"""Writes to a RoutingPolicy's spend ledger, version-checked.

A deleted job's external spend moves into ``status.retired`` of the policy each attempt was
charged to, before its finalizer is released: deleting jobs never gives budget back. The
entry is keyed by the job's UID, so a retried deletion writes it once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hybridgpu.controller.claims import PolicyKey, job_charges
from hybridgpu.jobs import conditions as cond
from hybridgpu.kube import Conflict, Kube
from hybridgpu.units import format_money

log = logging.getLogger(__name__)
RETRIES = 5


def retired_costs(body: Mapping[str, Any]) -> dict[PolicyKey, tuple[Decimal, datetime | None]]:
    """What a job's attempts have cost, per policy they were charged to."""
    out: dict[PolicyKey, tuple[Decimal, datetime | None]] = {}
    for charge in job_charges(body):
        cost, at = out.get(charge.policy, (Decimal(0), None))
        ended = charge.ended or datetime.now(UTC)
        out[charge.policy] = (cost + charge.accrued, max(at, ended) if at else ended)
    return out


async def retire_job_spend(kube: Kube, body: Mapping[str, Any]) -> None:
    uid = str((body.get("metadata") or {}).get("uid") or "")
    for (namespace, name), (cost, at) in retired_costs(body).items():
        if cost <= 0:
            continue
        for _ in range(RETRIES):
            policy = await kube.get_policy(namespace, name)
            if policy is None:
                break  # no policy, no budget to hold
            status = policy.get("status") or {}
            retired = dict(status.get("retired") or {})
            if uid in retired:
                break
            retired[uid] = {
                "cost": format_money(cost, 6),
                "at": cond.timestamp(at or datetime.now(UTC)),
                "job": str(body["metadata"].get("name", "")),
            }
            try:
                await kube.patch_policy_status(
                    namespace,
                    name,
                    {"retired": retired},
                    resource_version=policy["metadata"]["resourceVersion"],
                )
            except Conflict:
                continue
            break
        else:
            raise RuntimeError(f"RoutingPolicy {namespace}/{name} kept changing; retrying")
