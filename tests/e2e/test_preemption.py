"""Preemption end to end on the local control plane: a latency-sensitive job that the cluster
cannot start in time evicts the newest preemptible job, starts on its GPU, and the evicted job
runs again afterwards.

The NVIDIA-A10 pool is two one-GPU nodes. Two preemptible best-effort jobs hold both GPUs for an
hour (``KWOK_POD_RUN_FOR`` in their env sets how long kwok lets their Pods run,
hack/kwok-stages/pod-complete.yaml); the kube-scheduler, the Job controller's and the garbage
collector's handling of the evicted Job and its Pod are the real ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, get, wait_for
from tests.e2e.test_operator import _job, _phase, _policy

pytestmark = pytest.mark.e2e
PREFIX = "e2e-"
A10 = "NVIDIA-A10"
ON_A10 = {"count": 1, "products": [A10]}


@pytest.fixture(scope="module")
def stack(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Process]:
    config = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    with harness.running_stack(config, PREFIX) as operator:
        yield operator


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _batch_jobs(namespace: str, name: str) -> list[str]:
    selector = f"hybridgpu.dev/inferencejob={name}"
    out = kubectl("get", "jobs", "-n", namespace, "-l", selector, "-o", "json").stdout
    return sorted(j["metadata"]["name"] for j in json.loads(out)["items"])


def _a10_pods_left() -> list[str]:
    """Pods of earlier tests still on the A10 nodes (a deleted namespace empties in time)."""
    nodes = json.loads(
        kubectl("get", "nodes", "-l", f"nvidia.com/gpu.product={A10}", "-o", "json").stdout
    )["items"]
    names = {n["metadata"]["name"] for n in nodes}
    pods = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if p["spec"].get("nodeName") in names
        and p["status"].get("phase") not in ("Succeeded", "Failed")
    ]


def test_a_late_latency_sensitive_job_evicts_the_newest_preemptible_job(
    stack: Any, namespace: str
) -> None:
    wait_for("the A10 pool to be free of earlier tests' Pods", lambda: not _a10_pods_left(), 180)
    _policy(
        namespace,
        weights={"price": 100, "latency": 0, "reliability": 0, "carbon": 0},
        inCluster={
            "enabled": True,
            "maxQueueTime": "1h",
            "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}],
        },
        external={"enabled": False},
        failover={"maxAttempts": 3, "backoff": "1s"},
        preemption={"evict": "LowerRank", "checkpointInterval": "15m"},
    )
    hold = {"name": "KWOK_POD_RUN_FOR", "value": "1h"}
    for name in ("early", "late"):
        _job(
            namespace,
            name,
            gpu=ON_A10,
            placement="InCluster",
            estimatedDuration="1h",
            preemptible=True,
            env=[hold],
        )
        wait_for(f"{name} running", lambda n=name: _phase(namespace, n) == "Running", timeout=90)
        # runningSince has a resolution of one second, and two jobs that started in the same
        # second are equally new, so the rule may evict either (the project's CI once saw
        # "late" kept). Only a later second makes "late" the newer one.
        time.sleep(1.2)

    _job(
        namespace,
        "urgent",
        gpu=ON_A10,
        placement="InCluster",
        estimatedDuration="10m",
        startWithin="2m",
    )
    wait_for("urgent to succeed", lambda: _phase(namespace, "urgent") == "Succeeded", timeout=120)
    urgent = get("ij", "urgent", namespace)
    (attempt,) = urgent["status"]["attempts"]
    assert (attempt["backend"], attempt["gpuProduct"]) == ("InCluster", A10), attempt
    created = _time(urgent["metadata"]["creationTimestamp"])
    started = _time(urgent["status"]["startTime"])
    assert (started - created).total_seconds() < 120, "it did not start within its startWithin"

    late = get("ij", "late", namespace)
    first = late["status"]["attempts"][0]
    early = get("ij", "early", namespace)
    assert (first["outcome"], first["reason"]) == ("Preempted", "Preempted"), (
        first,
        early["status"]["attempts"],
    )
    assert first["preemptedBy"] == f"{namespace}/urgent"
    assert late["status"]["preemptions"] == 1
    assert len(early["status"]["attempts"]) == 1
    assert early["status"]["attempts"][0]["outcome"] == "Running"  # the older one is kept
    assert "preemptions" not in early["status"]
    wait_for(
        "the evicted attempt's Job to be gone",
        lambda: all(not j.endswith("-a1") for j in _batch_jobs(namespace, "late")),
        timeout=60,
    )
    wait_for(
        "Preempted Event",
        lambda: "Preempted" in harness.event_reasons(namespace, "late"),
        timeout=60,
    )
    wait_for(
        "Preempting Event",
        lambda: "Preempting" in harness.event_reasons(namespace, "urgent"),
        timeout=60,
    )

    # The victim queued again and takes the GPU the urgent job gave back.
    second = wait_for(
        "late to run again",
        lambda: next(
            (
                a
                for a in (get("ij", "late", namespace).get("status") or {}).get("attempts", [])[1:]
                if a["outcome"] in ("Pending", "Running")
            ),
            None,
        ),
        timeout=90,
    )
    assert (second["attempt"], second["backend"], second["gpuProduct"]) == (2, "InCluster", A10)
    routed = condition(get("ij", "late", namespace), "Routed")
    assert routed is not None and routed["status"] == "True", routed
