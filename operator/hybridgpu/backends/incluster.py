"""In-cluster dispatch: a batch/v1 Job owned by the InferenceJob, pinned to one GPU product."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.inventory.pools import ATTEMPT_LABEL, ESTIMATED_DURATION_ANNOTATION, OWNER_LABEL
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.units import format_duration

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
LABEL_JOB = OWNER_LABEL
LABEL_ATTEMPT = ATTEMPT_LABEL
MANAGED_BY = {"app.kubernetes.io/managed-by": "hybridgpu"}

# Runtimes for tasks that name a model rather than an image; overridable per task with
# HYBRIDGPU_RUNTIME_IMAGE_<TASK> (e.g. HYBRIDGPU_RUNTIME_IMAGE_LLM).
DEFAULT_RUNTIME_IMAGES = {
    Task.LLM: "vllm/vllm-openai:v0.11.0",
    Task.TEXT_TO_IMAGE: "livepeer/ai-runner:latest",
    Task.IMAGE_TO_IMAGE: "livepeer/ai-runner:latest",
    Task.IMAGE_TO_VIDEO: "livepeer/ai-runner:latest",
    Task.AUDIO_TO_TEXT: "livepeer/ai-runner:latest",
    Task.TEXT_TO_SPEECH: "livepeer/ai-runner:latest",
    Task.UPSCALE: "livepeer/ai-runner:latest",
}


class JobState(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def job_name(inference_job: str, attempt: int) -> str:
    """Deterministic per attempt, so a retried create finds the Job it already made."""
    suffix = f"-a{attempt}"
    base = re.sub(r"[^a-z0-9-]", "-", inference_job.lower())[: 63 - len(suffix)].rstrip("-")
    return base + suffix


def runtime_image(spec: InferenceJobSpec) -> str:
    if spec.image:
        return spec.image
    override = os.environ.get(f"HYBRIDGPU_RUNTIME_IMAGE_{spec.task.name}")
    return override or DEFAULT_RUNTIME_IMAGES[spec.task]


def extra_tolerations() -> list[dict[str, Any]]:
    """Tolerations added to every Job, from HYBRIDGPU_JOB_TOLERATIONS (a JSON list)."""
    raw = os.environ.get("HYBRIDGPU_JOB_TOLERATIONS", "")
    return list(json.loads(raw)) if raw else []


def job_manifest(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: InferenceJobSpec,
    attempt: int,
    gpu_product: str,
) -> dict[str, Any]:
    """The batch/v1 Job for one in-cluster attempt."""
    labels = {**MANAGED_BY, LABEL_JOB: name, LABEL_ATTEMPT: str(attempt)}
    gpus = str(spec.gpu.count)
    env = [{"name": e.name, "value": e.value} for e in spec.env or []]
    env += [
        {"name": "HYBRIDGPU_TASK", "value": spec.task.value},
        {"name": "HYBRIDGPU_REQUESTS", "value": str(spec.input.requests)},
    ]
    if spec.model:
        env.append({"name": "HYBRIDGPU_MODEL", "value": spec.model})
    container: dict[str, Any] = {
        "name": "inference",
        "image": runtime_image(spec),
        "env": env,
        "resources": {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}},
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": PRODUCT_LABEL, "operator": "In", "values": [gpu_product]}
                        ]
                    }
                ]
            }
        }
    }
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += extra_tolerations()
    template_meta: dict[str, Any] = {"labels": labels}
    if spec.estimated_duration:
        # Lets the inventory estimate when the pod's GPUs come back (inventory/pools.py).
        template_meta["annotations"] = {
            ESTIMATED_DURATION_ANNOTATION: format_duration(spec.estimated_duration)
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, attempt),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "hybridgpu.dev/v1alpha1",
                    "kind": "InferenceJob",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            # The operator, not the Job controller, decides about retries: on failure it may
            # fail over to another product or network.
            "backoffLimit": 0,
            "template": {
                "metadata": template_meta,
                "spec": {
                    "restartPolicy": "Never",
                    "affinity": affinity,
                    "tolerations": tolerations,
                    "containers": [container],
                },
            },
        },
    }


def job_state(job: dict[str, Any]) -> JobState:
    """Whether a batch/v1 Job has finished, from its conditions and counts.

    Whether it *runs* is read from its Pods (their start time is what cost accrues from).
    """
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return JobState.SUCCEEDED if cond["type"] == "Complete" else JobState.FAILED
    if status.get("succeeded"):
        return JobState.SUCCEEDED
    if status.get("failed"):
        return JobState.FAILED
    return JobState.ACTIVE


def pod_running(pods: list[dict[str, Any]]) -> datetime | None:
    """The earliest start time of a running or finished Pod, if any Pod got that far."""
    starts = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        started = (pod.get("status") or {}).get("startTime")
        if phase in ("Running", "Succeeded", "Failed"):
            started_at = parse_timestamp(started)
            if started_at is not None:
                starts.append(started_at)
    return min(starts) if starts else None
