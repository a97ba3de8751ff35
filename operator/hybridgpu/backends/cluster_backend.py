"""In-cluster dispatch behind the same protocol as the network adapters (submit / status /
cancel / result), tracked from the batch/v1 Job and Pod watches Kopf already indexes.

A step reads an attempt's state from memory: the API server is asked only when the indexes
do not know the Job yet (just created, or the operator has just started and Kopf has not
listed every Job), so a thousand running attempts cost no polling at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hybridgpu.backends import incluster
from hybridgpu.backends.incluster import JobState
from hybridgpu.inventory.pools import ATTEMPT_LABEL, OWNER_LABEL, UID_LABEL
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.kube import Kube
from hybridgpu.networks.base import RemoteRef, RemoteStatus

PROVIDER = "in-cluster"
"""The provider part of an in-cluster attempt's :class:`RemoteRef`."""


JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
"""Set by the Job controller on every Pod of a Job (Kubernetes 1.27+): the Job's UID."""


@dataclass(frozen=True, slots=True)
class AttemptJob:
    """What tracking needs of an attempt's batch/v1 Job."""

    name: str
    uid: str
    state: JobState
    completed_at: datetime | None
    failure: str
    """Reasons of its Failed condition (no workload text)."""


@dataclass(frozen=True, slots=True)
class AttemptPod:
    """What tracking needs of one Pod of an attempt."""

    name: str
    phase: str
    started_at: datetime | None
    exit_codes: tuple[tuple[str, int], ...]
    """(container, code) of containers that exited non-zero."""
    node: str | None = None
    """``spec.nodeName``: where its GPUs are, once bound (what preemption frees)."""


def job_keys(body: Mapping[str, Any]) -> list[str]:
    """``<inferencejob uid>/<attempt>`` of a Job an InferenceJob controls, from its owner
    reference, so Jobs are found whatever operator version named and labelled them."""
    meta = body.get("metadata") or {}
    attempt = (meta.get("labels") or {}).get(ATTEMPT_LABEL)
    if not attempt:
        return []
    return [
        f"{ref['uid']}/{attempt}"
        for ref in meta.get("ownerReferences") or []
        if ref.get("controller") and ref.get("kind") == "InferenceJob" and ref.get("uid")
    ]


def pod_keys(namespace: str, labels: Mapping[str, str]) -> list[str]:
    """Index keys of a Pod of an attempt: ``<uid>/<attempt>`` (and, for Pods of operators
    before UID labels, ``<namespace>/<inferencejob>/<attempt>``), which the GPU accounting
    reads, and ``job:<Job uid>``, by which tracking finds an attempt's Pods."""
    keys = []
    attempt = labels.get(ATTEMPT_LABEL)
    if attempt and labels.get(UID_LABEL):
        keys.append(f"{labels[UID_LABEL]}/{attempt}")
    if attempt and labels.get(OWNER_LABEL):
        keys.append(f"{namespace}/{labels[OWNER_LABEL]}/{attempt}")
    if labels.get(JOB_UID_LABEL):
        keys.append(f"job:{labels[JOB_UID_LABEL]}")
    return keys


def attempt_job(body: Mapping[str, Any]) -> AttemptJob:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return AttemptJob(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        state=incluster.job_state(dict(body)),
        completed_at=parse_timestamp(status.get("completionTime")),
        failure=incluster.failure_reasons(dict(body)),
    )


def attempt_pod(body: Mapping[str, Any]) -> AttemptPod:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    started = parse_timestamp(status.get("startTime"))
    codes = []
    for container in status.get("containerStatuses") or []:
        code = ((container.get("state") or {}).get("terminated") or {}).get("exitCode")
        if code:
            codes.append((str(container.get("name") or ""), int(code)))
    return AttemptPod(
        name=str(meta.get("name") or ""),
        phase=phase,
        started_at=started if phase in ("Running", "Succeeded", "Failed") else None,
        exit_codes=tuple(codes),
        node=str((body.get("spec") or {}).get("nodeName") or "") or None,
    )


def attempt_ref(namespace: str, uid: str, number: int, job: str = "") -> RemoteRef:
    """The handle of an in-cluster attempt: ``<namespace>/<Job name>`` (``job``, the name
    recorded, else the one it gets) and ``<uid>/<attempt>``."""
    name = job or incluster.job_name(uid, number)
    return RemoteRef(PROVIDER, f"{namespace}/{name}", f"{uid}/{number}")


Lookup = Callable[[str], Iterable[Any]]
"""An index lookup: key -> the records under it (empty when none)."""


class InClusterBackend:
    """The cluster's own GPUs as a backend: a batch/v1 Job per attempt."""

    name = PROVIDER
    unattended = True
    """Work runs by itself once created: after a restart it is tracked, never resubmitted."""

    def __init__(self, kube: Kube, jobs: Lookup, pods: Lookup) -> None:
        self.kube = kube
        self._jobs = jobs
        self._pods = pods
        self._created: dict[str, str] = {}
        """key -> Job name of Jobs this process created that the index has not shown yet."""

    def find(self, ref: RemoteRef) -> RemoteRef | None:
        """The attempt's Job if the watch has seen it (whatever operator version named it),
        so a Dispatching attempt whose Job exists is tracked, not created again."""
        job = self._indexed(ref)
        if job is not None:
            self._created.pop(ref.idempotency_key, None)
            name = job.name
        elif ref.idempotency_key in self._created:
            name = self._created[ref.idempotency_key]
        else:
            return None
        namespace = ref.id.split("/", 1)[0]
        return RemoteRef(PROVIDER, f"{namespace}/{name}", ref.idempotency_key)

    def ended(self, key: str) -> bool:
        """Whether the attempt's Job has completed or failed, as the watch last showed it: its
        work is over whether or not the job's step has recorded it yet."""
        job = next((j for j in self._jobs(key) if isinstance(j, AttemptJob)), None)
        return job is not None and job.state is not JobState.ACTIVE

    def _indexed(self, ref: RemoteRef) -> AttemptJob | None:
        return next((j for j in self._jobs(ref.idempotency_key) if isinstance(j, AttemptJob)), None)

    async def submit(self, manifest: dict[str, Any]) -> RemoteRef:
        """Create the attempt's Job (or find the one made before a crash); raises
        :class:`hybridgpu.kube.Rejected` when the API server refuses it and
        :class:`NameTaken` when a Job of that name is not this attempt's."""
        meta = manifest["metadata"]
        job = await self.kube.create_batch_job(manifest)
        uid = meta["labels"][UID_LABEL]
        if not incluster.owned_by(job, uid):
            raise NameTaken(meta["name"])
        key = f"{uid}/{meta['labels'][ATTEMPT_LABEL]}"
        self._created[key] = meta["name"]
        return RemoteRef(PROVIDER, f"{meta['namespace']}/{meta['name']}", key)

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """The attempt's state from the indexes; ``Lost`` only once the API server, asked
        because the indexes do not know the Job, says it is gone."""
        job = self._indexed(ref)
        if job is None:
            namespace, name = ref.id.split("/", 1)
            body = await self.kube.get_batch_job(namespace, name)
            uid = ref.idempotency_key.rsplit("/", 1)[0]
            if body is None or not incluster.owned_by(body, uid):
                return RemoteStatus("Lost", message=f"batch/v1 Job {name} disappeared")
            job = attempt_job(body)
        pods = [p for p in self._pods(f"job:{job.uid}") if isinstance(p, AttemptPod)]
        starts = [p.started_at for p in pods if p.started_at is not None]
        started = min(starts) if starts else None
        if job.state is JobState.SUCCEEDED:
            return RemoteStatus(
                "Succeeded",
                message="the Job completed",
                started_at=started,
                ended_at=job.completed_at,
            )
        if job.state is JobState.FAILED:
            parts = [job.failure] if job.failure else []
            parts += [f"container {c} exited {code}" for p in pods for c, code in p.exit_codes]
            detail = ", ".join(parts)
            message = f"batch/v1 Job {job.name} failed" + (f" ({detail})" if detail else "")
            return RemoteStatus("Failed", message=message, started_at=started)
        return RemoteStatus("Running" if started is not None else "Pending", started_at=started)

    async def cancel(self, ref: RemoteRef) -> None:
        """Delete the Job and its Pods; a Job already gone is fine."""
        namespace, name = ref.id.split("/", 1)
        await self.kube.delete_batch_job(namespace, name)
        self._created.pop(ref.idempotency_key, None)

    async def result(self, ref: RemoteRef) -> str | None:
        """In-cluster output goes to the job's output location; the Job says nothing more."""
        return None


class NameTaken(Exception):
    """A batch/v1 Job of the attempt's name exists and no attempt of this job owns it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a batch/v1 Job {name} not owned by this job exists")
        self.name = name
