"""In-cluster attempts behind the network protocol, read from Job and Pod index records."""

from __future__ import annotations

from typing import Any

from hybridgpu.backends.cluster_backend import (
    InClusterBackend,
    attempt_job,
    attempt_pod,
    attempt_ref,
    job_keys,
    pod_keys,
)

OWNER = [{"kind": "InferenceJob", "uid": "ij-1", "controller": True}]


def job(name: str, status: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-of-{name}",
            "labels": labels if labels is not None else {"hybridgpu.dev/attempt": "1"},
            "ownerReferences": OWNER,
        },
        "status": status,
    }


def pod(phase: str, started: str | None = None, code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if started:
        status["startTime"] = started
    if code is not None:
        status["containerStatuses"] = [
            {"name": "main", "state": {"terminated": {"exitCode": code}}}
        ]
    return {"metadata": {"name": "p"}, "status": status}


class NoApi:
    """The API server: asked only when the index does not know the Job."""

    def __init__(self, jobs: dict[str, dict[str, Any]] | None = None) -> None:
        self.jobs = jobs or {}
        self.asked: list[str] = []

    async def get_batch_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append(f"{namespace}/{name}")
        return self.jobs.get(name)


def backend(jobs: list[dict[str, Any]], pods: list[dict[str, Any]], api: NoApi) -> InClusterBackend:
    records = {k: [attempt_job(j)] for j in jobs for k in job_keys(j)}
    pod_records = [attempt_pod(p) for p in pods]
    return InClusterBackend(
        api,  # type: ignore[arg-type]
        lambda key: records.get(key, []),
        lambda key: pod_records if key == f"job:uid-of-{jobs[0]['metadata']['name']}" else [],
    )


def test_jobs_are_keyed_by_their_owners_uid_whatever_their_name() -> None:
    assert job_keys(job("legacy-name-a1", {})) == ["ij-1/1"]
    assert job_keys(job("x", {}, labels={})) == []
    labels = {
        "hybridgpu.dev/inferencejob-uid": "ij-1",
        "hybridgpu.dev/attempt": "2",
        "batch.kubernetes.io/controller-uid": "job-9",
    }
    assert pod_keys("ns", labels) == ["ij-1/2", "job:job-9"]


async def test_state_comes_from_the_records_without_a_call() -> None:
    api = NoApi()
    ref = attempt_ref("ns", "ij-1", 1, "legacy-name-a1")
    running = backend(
        [job("legacy-name-a1", {"active": 1})], [pod("Running", "2026-12-02T10:00:00Z")], api
    )
    status = await running.status(ref)
    assert status.state == "Running" and status.started_at is not None
    pending = await backend([job("legacy-name-a1", {"active": 1})], [pod("Pending")], api).status(
        ref
    )
    assert pending.state == "Pending"
    done = job("legacy-name-a1", {"succeeded": 1, "completionTime": "2026-12-02T10:30:00Z"})
    finished = await backend([done], [pod("Succeeded", "2026-12-02T10:00:00Z")], api).status(ref)
    assert finished.state == "Succeeded"
    assert finished.ended_at is not None and finished.started_at is not None
    assert (finished.ended_at - finished.started_at).total_seconds() == 1800
    failed_job = job(
        "legacy-name-a1",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "Deadline"}]},
    )
    failed = await backend([failed_job], [pod("Failed", "2026-12-02T10:00:00Z", 137)], api).status(
        ref
    )
    assert failed.state == "Failed"
    assert (
        failed.message == "batch/v1 Job legacy-name-a1 failed (Deadline, container main exited 137)"
    )
    assert api.asked == []


async def test_a_job_unknown_to_the_index_is_read_and_lost_only_when_gone() -> None:
    ref = attempt_ref("ns", "ij-1", 1)
    api = NoApi({"hybridgpu-ij-1-a1": job("hybridgpu-ij-1-a1", {"active": 1})})
    empty = InClusterBackend(api, lambda _k: [], lambda _k: [])  # type: ignore[arg-type]
    assert (await empty.status(ref)).state == "Pending"
    api.jobs.clear()
    lost = await empty.status(ref)
    assert lost.state == "Lost" and "disappeared" in lost.message
    assert api.asked == ["ns/hybridgpu-ij-1-a1"] * 2


async def test_a_job_of_another_owner_under_the_name_is_lost_not_adopted() -> None:
    ref = attempt_ref("ns", "ij-1", 1)
    squatter = job("hybridgpu-ij-1-a1", {"succeeded": 1})
    squatter["metadata"]["ownerReferences"] = [
        {"kind": "InferenceJob", "uid": "other", "controller": True}
    ]
    api = NoApi({"hybridgpu-ij-1-a1": squatter})
    empty = InClusterBackend(api, lambda _k: [], lambda _k: [])  # type: ignore[arg-type]
    assert (await empty.status(ref)).state == "Lost"
