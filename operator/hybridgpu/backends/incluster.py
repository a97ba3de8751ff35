"""In-cluster dispatch: a batch/v1 Job owned by the InferenceJob, pinned to one GPU product.

What the Pod runs per task is in :mod:`hybridgpu.backends.runtimes`; what it may do (Pod
Security ``restricted``, no ServiceAccount token, exact tolerations, image allowlist, no GPU
visibility env) in :mod:`hybridgpu.backends.jobpolicy`; docs/incluster.md for users."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends import jobpolicy
from hybridgpu.backends.runtimes import (
    CHECKPOINT_URL_ENV,
    INPUT_URL_ENV,
    OUTPUT_URL_ENV,
    RESUME_URL_ENV,
    SCRATCH,
    Unsupported,
    build_runtime,
)
from hybridgpu.inventory.pools import (
    ATTEMPT_LABEL,
    ESTIMATED_DURATION_ANNOTATION,
    OWNER_LABEL,
    UID_LABEL,
)
from hybridgpu.units import format_duration

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
LABEL_JOB = OWNER_LABEL
LABEL_UID = UID_LABEL
LABEL_ATTEMPT = ATTEMPT_LABEL
MANAGED_BY = {"app.kubernetes.io/managed-by": "hybridgpu"}
MAX_LABEL_VALUE = 63
DEFAULT_MAX_RUN_TIME_FACTOR = 2.0
"""RoutingPolicy spec.failover.maxRunTimeFactor's default, for a job whose policy is gone."""
DEFAULT_MAX_QUEUE_TIME = timedelta(minutes=5)
TERMINATION_GRACE_SECONDS = 60
"""From SIGTERM (an eviction, the Job's deadline, a drained node) to SIGKILL: time for the
hybridgpu runner to finish or abandon its request (HYBRIDGPU_CHECKPOINT_DRAIN_SECONDS, 20 s)
and PUT its checkpoint. Kubernetes' default, 30 s, leaves too little for a large checkpoint."""
ManifestError = Unsupported
"""Raised by :func:`job_manifest` for a job that cannot run in-cluster as written; its
``reason`` (InvalidInput, ImageNotAllowed, NoInputObject, InClusterUnsupported,
OperatorMisconfigured) and message (naming the field) become the job's Failed condition."""


ELSEWHERE = frozenset({"NoInputObject", "InClusterUnsupported", "ImageNotAllowed"})
"""Refusals of the cluster alone: a job not placed InCluster fails over to the networks."""


class JobState(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def job_name(uid: str, attempt: int) -> str:
    """Deterministic per attempt, so a retried create finds the Job it already made.

    Made from the InferenceJob's UID, not its name: names up to 253 characters, and names
    such as ``a.b`` and ``a-b``, would otherwise not fit or collide."""
    return f"hybridgpu-{uid.lower()}-a{attempt}"


def owned_by(job: dict[str, Any], uid: str) -> bool:
    """Whether ``job`` is controlled by the InferenceJob of ``uid`` (a found Job may not be)."""
    for ref in (job.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("uid") == uid and ref.get("controller"):
            return True
    return False


def job_labels(name: str, uid: str, attempt: int) -> dict[str, str]:
    labels = {**MANAGED_BY, LABEL_UID: uid, LABEL_ATTEMPT: str(attempt)}
    # A label value holds at most 63 characters; longer names are found by their UID.
    if len(name) <= MAX_LABEL_VALUE:
        labels[LABEL_JOB] = name
    return labels


def _affinity(gpu_product: str) -> dict[str, Any]:
    # The pool's labels go in the same term: terms are ORed, expressions within one ANDed.
    expressions = [{"key": PRODUCT_LABEL, "operator": "In", "values": [gpu_product]}]
    expressions += [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in jobpolicy.gpu_node_selector().items()
    ]
    term = {"matchExpressions": expressions}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _env(spec: InferenceJobSpec, urls: dict[str, str | None]) -> list[Any]:
    """The env every container may get; ``urls`` maps our URL variables to their values."""
    env: list[dict[str, Any]] = [{"name": e.name, "value": e.value} for e in spec.env or []]
    env += [
        {"name": "HYBRIDGPU_TASK", "value": spec.task.value},
        {"name": "HYBRIDGPU_REQUESTS", "value": str(spec.input.requests)},
    ]
    if spec.model:
        env.append({"name": "HYBRIDGPU_MODEL", "value": spec.model})
    env += [{"name": name, "value": value} for name, value in urls.items() if value]
    return env


def _url_env(
    input_url: str | None,
    output_url: str | None,
    checkpoint_url: str | None,
    resume_url: str | None,
) -> dict[str, str | None]:
    # A checkpoint is only of use to an attempt that reads an input and writes an output,
    # and only both halves together: a runner that saves what it cannot read back (or the
    # reverse) would resend everything anyway.
    urls = {INPUT_URL_ENV: input_url, OUTPUT_URL_ENV: output_url}
    if input_url and output_url and checkpoint_url and resume_url:
        urls |= {CHECKPOINT_URL_ENV: checkpoint_url, RESUME_URL_ENV: resume_url}
    return urls


def _harden(container: dict[str, Any]) -> dict[str, Any]:
    mounts = container.setdefault("volumeMounts", [])
    mounts.append({"name": "scratch", "mountPath": SCRATCH})
    container["securityContext"] = jobpolicy.container_security_context()
    return container


def job_manifest(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: InferenceJobSpec,
    attempt: int,
    gpu_product: str,
    input_url: str | None = None,
    output_url: str | None = None,
    checkpoint_url: str | None = None,
    resume_url: str | None = None,
    max_run_time_factor: float = DEFAULT_MAX_RUN_TIME_FACTOR,
    max_queue_time: timedelta = DEFAULT_MAX_QUEUE_TIME,
) -> dict[str, Any]:
    """The batch/v1 Job for one in-cluster attempt.

    ``input_url``/``output_url`` are presigned HTTP(S) URLs: GET of the input JSONL object,
    PUT of the one output JSONL object; ``checkpoint_url``/``resume_url`` a PUT and a GET of
    the job's checkpoint object, the same for every attempt (docs/results.md, "Checkpoints
    of in-cluster runners"). Raises :data:`ManifestError` for a job that cannot run
    in-cluster as written (a model task without input and output URLs among others)."""
    jobpolicy.check_env(spec)
    jobpolicy.check_image(spec)
    has_urls = bool(input_url and output_url)
    urls = _url_env(input_url, output_url, checkpoint_url, resume_url)
    runtime = build_runtime(spec, _env(spec, urls), has_urls)
    gpus = str(spec.gpu.count)
    containers = [_harden(runtime.main)]
    sidecars = [_harden(c) for c in runtime.sidecars]
    for container in containers + sidecars:
        if container["name"] == runtime.gpu_container:
            container["resources"] = {
                "limits": {GPU_RESOURCE: gpus},
                "requests": {GPU_RESOURCE: gpus},
            }
    labels = job_labels(name, uid, attempt)
    template_meta: dict[str, Any] = {"labels": labels}
    if spec.estimated_duration:
        # Lets the inventory estimate when the pod's GPUs come back (inventory/pools.py).
        template_meta["annotations"] = {
            ESTIMATED_DURATION_ANNOTATION: format_duration(spec.estimated_duration)
        }
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if sidecars:
        volumes.append({"name": "models", "emptyDir": {}})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # The Job acts for its author, not with the namespace's default ServiceAccount.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": jobpolicy.pod_security_context(),
        "affinity": _affinity(gpu_product),
        "tolerations": jobpolicy.tolerations(),
        "containers": containers,
        "volumes": volumes,
    }
    if sidecars:
        pod_spec["initContainers"] = sidecars
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(uid, attempt),
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
            "activeDeadlineSeconds": jobpolicy.active_deadline_seconds(
                spec.estimated_duration, max_run_time_factor, max_queue_time
            ),
            "template": {"metadata": template_meta, "spec": pod_spec},
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


def failure_reasons(job: dict[str, Any]) -> str:
    """Why a Job failed, from its Failed condition's reason (the Pods' exit codes are read
    into their index records, ``cluster_backend.attempt_pod``).

    Only reasons and numbers: a container's termination message is the workload's own text."""
    reasons = [
        str(cond["reason"])
        for cond in (job.get("status") or {}).get("conditions") or []
        if cond.get("type") == "Failed" and cond.get("status") == "True" and cond.get("reason")
    ]
    return ", ".join(reasons)
