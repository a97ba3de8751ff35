"""Kopf indexes: the cluster's GPU inventory, policies, providers and spend, kept current by
watches so that a routing decision reads memory, not the API server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import kopf

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.backends import jobpolicy
from hybridgpu.backends.cluster_backend import (
    AttemptJob,
    AttemptPod,
    attempt_job,
    attempt_pod,
    job_keys,
    pod_keys,
)
from hybridgpu.controller.jobloop import JobRuntime
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.releases import InClusterReleases
from hybridgpu.inventory.pools import (
    GPU_RESOURCE,
    OWNER_LABEL,
    UID_LABEL,
    InvalidObject,
    NodeRecord,
    PodRecord,
    gpu_nodes_index,
    gpu_pods_index,
    node_record,
    pod_record,
)

T = TypeVar("T")


@kopf.index("nodes")
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, NodeRecord]:
    return gpu_nodes_index(body, jobpolicy.gpu_node_selector())


@kopf.index("pods")
def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, PodRecord]:
    return gpu_pods_index(body)


def _ours(labels: kopf.Labels, **_: Any) -> bool:
    """Made by hybridgpu: a job name over 63 characters is no label value, so such a job's
    Jobs and Pods carry only its UID."""
    return OWNER_LABEL in labels or UID_LABEL in labels


@kopf.index("pods", when=_ours)
def attempt_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[str, AttemptPod] | None:
    """Every Pod hybridgpu created, whatever its phase, under ``<uid>/<attempt>`` (and
    ``namespace/inferencejob/attempt`` for Pods of earlier versions) and ``job:<Job uid>``:
    once an attempt has a Pod, its GPUs are the Pod's to count, not a reservation's, and its
    phase and start time are what tracking reads."""
    keys = pod_keys(namespace or "default", labels)
    if not keys:
        return None
    record = attempt_pod(body)
    return dict.fromkeys(keys, record)


@kopf.index("batch", "v1", "jobs", when=_ours)
def attempt_jobs(body: kopf.Body, **_: Any) -> dict[str, AttemptJob] | None:
    """Each in-cluster attempt's batch/v1 Job under ``<inferencejob uid>/<attempt>``."""
    keys = job_keys(body)
    if not keys:
        return None
    return dict.fromkeys(keys, attempt_job(body))


@kopf.index(GROUP, VERSION, "routingpolicies")
def routing_policies(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> dict[tuple[str, str], tuple[dict[str, Any], str, dict[str, Any]]]:
    """Spec, creation time and the spend ledger (``claims.Ledger``) of each policy."""
    ledger = {k: status[k] for k in ("periodStart", "retired", "retiredSpent") if k in status}
    return {(namespace or "", name): (dict(spec), str(meta.get("creationTimestamp", "")), ledger)}


@kopf.index(GROUP, VERSION, "routingpolicies")
def policy_objects(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> dict[tuple[str, str], dict[str, Any]]:
    """What the accounting loop reads of each policy: spec, status and the versions."""
    return {
        (namespace or "", name): {
            "spec": dict(spec),
            "status": dict(status),
            "generation": int(meta.get("generation") or 0),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
        }
    }


@kopf.index(GROUP, VERSION, "computeproviders")
def compute_providers(name: str, **_: Any) -> dict[str, bool]:
    return {name: True}


@kopf.index(GROUP, VERSION, "inferencejobs")
def job_targets(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], str] | None:
    attempts = status.get("attempts") or []
    if not attempts:
        return None
    policy = str(spec.get("policyRef", "default"))
    return {(namespace or "", policy): str(attempts[-1].get("provider"))}


# Kopf calls index functions for neither deletions nor with the object's previous state, so the
# moments GPUs come free are found by these event handlers (see controller/releases.py).


def _record(
    read: Callable[[kopf.Body], T | None], event: kopf.RawEvent, body: kopf.Body
) -> T | None:
    if event.get("type") == "DELETED":
        return None
    with contextlib.suppress(InvalidObject):  # the index reports it; it holds nothing we count
        return read(body)
    return None


def _pod_wants_gpus(spec: kopf.Spec, **_: Any) -> bool:
    """Filter: Kopf logs every handler call, and most pods have nothing to do with GPUs."""
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return GPU_RESOURCE in (spec.get("overhead") or {}) or any(
        GPU_RESOURCE in ((c.get("resources") or {}).get(kind) or {})
        for c in containers
        for kind in ("limits", "requests")
    )


def _node_has_gpus(status: kopf.Status, **_: Any) -> bool:
    return GPU_RESOURCE in (status.get("allocatable") or {})


def _notify(memo: kopf.Memo, freed: frozenset[str]) -> None:
    if freed:
        registry: Registry = memo.registry
        registry.wakeup.notify(*sorted(freed))


@kopf.on.event("pods", when=_pod_wants_gpus)
async def gpu_pod_released(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    releases: InClusterReleases = memo.releases
    _notify(memo, releases.pod(f"{namespace}/{name}", _record(pod_record, event, body)))
    _poke_owner(memo, namespace, body.get("metadata", {}).get("labels") or {})


def _poke_owner(memo: kopf.Memo, namespace: str | None, labels: Any) -> None:
    if labels.get(UID_LABEL):
        runtime: JobRuntime = memo.jobs
        runtime.poke_uid(str(labels[UID_LABEL]))
    elif labels.get(OWNER_LABEL):
        runtime = memo.jobs
        runtime.poke(namespace or "default", str(labels[OWNER_LABEL]))


@kopf.on.event("batch", "v1", "jobs", when=_ours)
async def attempt_job_changed(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """An in-cluster attempt's batch/v1 Job changed (completed, failed): track it now rather
    than at its next poll."""
    _poke_owner(memo, namespace, labels)


@kopf.on.event("nodes", when=_node_has_gpus)
async def gpu_node_added(
    event: kopf.RawEvent, name: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    releases: InClusterReleases = memo.releases
    pool = jobpolicy.gpu_node_selector()
    _notify(memo, releases.node(str(name), _record(lambda b: node_record(b, pool), event, body)))
