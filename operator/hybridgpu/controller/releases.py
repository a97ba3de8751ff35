"""Tell from Pod and Node watch events which in-cluster pools may have GPUs free again.

Kopf indexes hold the current records only, and it does not call index functions for
deletions, so the operator keeps this small memory of its own: the GPU pods that held or
queued for GPUs when last seen, and each GPU node's product and schedulable GPUs. Only changes
that can free capacity count (a pod ending or going away, a node appearing or growing), so a
burst of status updates of one pod wakes nobody twice.
"""

from __future__ import annotations

from hybridgpu.inventory.pools import NodeRecord, PodRecord
from hybridgpu.routing.decision import IN_CLUSTER


class InClusterReleases:
    """The places (see controller/wakeup.py) each Pod or Node event may have freed."""

    def __init__(self) -> None:
        self._pods: dict[str, frozenset[str]] = {}
        """Active GPU pods ("namespace/name") -> the pools they hold or queue for."""
        self._nodes: dict[str, tuple[str, int]] = {}
        """GPU node name -> (product, GPUs it takes work on: 0 when cordoned or NotReady)."""

    def pod(self, key: str, record: PodRecord | None) -> frozenset[str]:
        """The pod is now ``record`` (None: deleted or without GPUs); returns freed places."""
        held = self._pods.pop(key, frozenset())
        if record is not None and record.active:
            self._pods[key] = self._pools_of(record)
            return frozenset()
        return held

    def node(self, name: str, record: NodeRecord | None) -> frozenset[str]:
        """The node is now ``record`` (None: deleted or without GPUs); returns freed places."""
        before = self._nodes.pop(name, None)
        if record is None:
            return frozenset()
        now = (record.gpu_product, record.allocatable if record.schedulable else 0)
        self._nodes[name] = now
        if now[1] > 0 and (before is None or before[0] != now[0] or now[1] > before[1]):
            return frozenset({f"{IN_CLUSTER}/{now[0]}"})
        return frozenset()

    def _pools_of(self, record: PodRecord) -> frozenset[str]:
        known = self._nodes.get(record.node) if record.node is not None else None
        if known is not None:
            return frozenset({f"{IN_CLUSTER}/{known[0]}"})
        if record.products:
            return frozenset(f"{IN_CLUSTER}/{p}" for p in record.products)
        # Bound to a node we do not know (yet) or queued for any product: every pool.
        return frozenset({IN_CLUSTER})
