"""Kopf indexes: the cluster's GPU inventory, policies, providers and spend, kept current by
watches so that a routing decision reads memory, not the API server."""

from __future__ import annotations

from typing import Any

import kopf

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.controller.spend import SpendItem, spend_items
from hybridgpu.inventory.pools import NodeRecord, PodRecord, gpu_nodes_index, gpu_pods_index


@kopf.index("nodes")
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, NodeRecord]:
    return gpu_nodes_index(body)


@kopf.index("pods")
def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, PodRecord]:
    return gpu_pods_index(body)


@kopf.index(GROUP, VERSION, "routingpolicies")
def routing_policies(
    namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
    return {(namespace or "", name): (dict(spec), str(meta.get("creationTimestamp", "")))}


@kopf.index(GROUP, VERSION, "computeproviders")
def compute_providers(name: str, **_: Any) -> dict[str, bool]:
    return {name: True}


@kopf.index(GROUP, VERSION, "inferencejobs")
def job_spend(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], tuple[SpendItem, ...]] | None:
    items = spend_items(dict(status))
    if not items:
        return None
    return {(namespace or "", str(spec.get("policyRef", "default"))): items}


@kopf.index(GROUP, VERSION, "inferencejobs")
def job_targets(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], str] | None:
    attempts = status.get("attempts") or []
    if not attempts:
        return None
    policy = str(spec.get("policyRef", "default"))
    return {(namespace or "", policy): str(attempts[-1].get("provider"))}
