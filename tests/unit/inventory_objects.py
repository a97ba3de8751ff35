"""Builders of Node and Pod objects shaped as the Kubernetes API returns them (inventory tests)."""

from __future__ import annotations

from typing import Any

A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"


def node(
    name: str,
    gpus: int | str | None = 8,
    product: str | None = A100,
    memory_mib: int | str | None = 81920,
    *,
    ready: bool = True,
    cordoned: bool = False,
) -> dict[str, Any]:
    labels: dict[str, str] = {"kubernetes.io/hostname": name, "type": "kwok"}
    if product is not None:
        labels["nvidia.com/gpu.product"] = product
    if memory_mib is not None:
        labels["nvidia.com/gpu.memory"] = str(memory_mib)
    allocatable: dict[str, Any] = {"cpu": "96", "memory": "393216Mi", "pods": "110"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = str(gpus) if isinstance(gpus, int) else gpus
    spec: dict[str, Any] = {"unschedulable": True} if cordoned else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "allocatable": allocatable,
            "capacity": dict(allocatable),
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def container(name: str, gpus: int | None = None, *, limit_only: bool = False) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "1"}}
    if gpus is not None:
        if limit_only:
            resources["limits"] = {"nvidia.com/gpu": str(gpus)}
        else:
            resources["requests"]["nvidia.com/gpu"] = str(gpus)
            resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {"name": name, "image": "busybox", "resources": resources}


def pod(
    name: str,
    gpus: int | None = 1,
    node_name: str | None = "n1",
    phase: str = "Running",
    *,
    namespace: str = "default",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
    affinity_terms: list[list[dict[str, Any]]] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    start_time: str | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": containers if containers is not None else [container("main", gpus)]
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = node_selector
    if affinity_terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": t} for t in affinity_terms]
                }
            }
        }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if annotations:
        metadata["annotations"] = annotations
    if labels:
        metadata["labels"] = labels
    if created:
        metadata["creationTimestamp"] = created
    status: dict[str, Any] = {"phase": phase}
    if start_time:
        status["startTime"] = start_time
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


def wants(*products: str) -> list[list[dict[str, Any]]]:
    """Required node affinity terms asking for any of ``products``."""
    return [[{"key": "nvidia.com/gpu.product", "operator": "In", "values": list(products)}]]
