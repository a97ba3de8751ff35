"""Assemble the routing engine's Snapshot from the operator's indexes and caches."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.spend import SpendItem, period_start, spent_since
from hybridgpu.inventory.pools import NodeRecord, PodRecord, pools_from
from hybridgpu.inventory.telemetry import GpuTelemetry
from hybridgpu.routing.snapshot import Snapshot


def build_snapshot(
    *,
    now: datetime,
    nodes: Iterable[NodeRecord],
    pods: Iterable[PodRecord],
    telemetry: GpuTelemetry | None,
    registry: Registry,
    policy: RoutingPolicySpec,
    policy_created: datetime | None,
    spend: Iterable[SpendItem],
) -> Snapshot:
    """The snapshot one decision for one policy is made on."""
    node_list = list(nodes)
    utilization = telemetry.utilization_by_product(node_list) if telemetry else None
    pools = registry.apply_reservations(pools_from(node_list, pods, utilization, now=now))
    spent = spent_since(
        list(spend),
        period_start(now, policy_created or now, policy.budget.period) if policy.budget else now,
    )
    return Snapshot(
        now=now,
        pools=pools,
        offers=registry.offers(),
        budget_spent=spent,
        telemetry_available=telemetry is not None,
    )
