"""The reconcile step's in-cluster dispatch: refusals become the job's reason; no adoption."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from hybridgpu.backends.cluster_backend import InClusterBackend
from hybridgpu.controller.claims import job_hold
from hybridgpu.controller.errors import PermanentJobError
from hybridgpu.kube import Rejected
from hybridgpu.routing.snapshot import InClusterPool
from tests.unit.test_reconcile import NOW, RTX, World

T4 = (InClusterPool(gpu_product="Tesla-T4", memory_bytes=16 * 2**30, allocatable=4, in_use=0),)
POLICY = {
    "inCluster": {
        "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.1"}],
        "maxQueueTime": "2m",
    },
    "failover": {"backoff": "0s", "maxRunTimeFactor": 3},
}


async def test_a_refused_manifest_fails_the_job_with_its_reason_and_creates_nothing() -> None:
    world = World(
        spec={
            "gpu": {"count": 1, "products": ["Tesla-T4"]},
            "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0,1,2,3"}],
        },
        pools=T4,
        policy=POLICY,
    )
    with pytest.raises(PermanentJobError) as err:
        await world.step()
    assert err.value.reason == "InvalidInput"
    assert str(err.value).startswith("spec.env[0].name: CUDA_VISIBLE_DEVICES")
    assert world.kube.jobs == {}
    # The intent was written first, so a restarted operator ends up here again, not elsewhere.
    assert world.status["attempts"][0]["outcome"] == "Dispatching"


async def test_the_job_deadline_comes_from_the_policy() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    await world.step()
    (job,) = world.kube.jobs.values()
    assert job["spec"]["activeDeadlineSeconds"] == 30 * 60 * 3 + 120


async def test_a_job_of_that_name_owned_by_another_is_never_adopted() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    squatter = {
        "metadata": {
            "name": "hybridgpu-uid-7-a1",
            "ownerReferences": [{"uid": "someone-else", "controller": True}],
        }
    }
    world.kube.jobs["hybridgpu-uid-7-a1"] = squatter
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["reason"]) == ("Failed", "JobNameTaken")
    assert world.kube.jobs["hybridgpu-uid-7-a1"] is squatter  # untouched, not deleted
    assert "delete hybridgpu-uid-7-a1" not in world.log


async def test_a_job_the_api_server_refuses_ends_the_attempt_and_fails_over() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)

    async def refuse(manifest: dict[str, Any]) -> dict[str, Any]:
        raise Rejected(422, "Unprocessable Entity")

    world.kube.create_batch_job = refuse  # type: ignore[method-assign]
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["reason"]) == ("Failed", "JobRejected")
    assert attempt["message"].endswith("HTTP 422 Unprocessable Entity")
    assert job_hold(world.kube.obj, pod_owners=()) is None  # nothing held any more


async def test_what_only_the_cluster_refuses_fails_over_to_the_networks() -> None:
    # An llm job without input objects cannot run in-cluster, but may run on a network.
    world = World(
        spec={
            "task": "llm",
            "image": None,
            "model": "m",
            "gpu": {"count": 1, "products": ["Tesla-T4", RTX]},
        },
        pools=T4,
        policy={**POLICY, "external": {"enabled": True}},
    )
    await world.step()
    first = world.status["attempts"][0]
    assert (first["backend"], first["outcome"], first["reason"]) == (
        "InCluster",
        "Failed",
        "NoInputObject",
    )
    assert world.kube.jobs == {}
    await world.step()
    second = world.status["attempts"][1]
    assert second["backend"] == "External"  # every in-cluster pool is skipped now


async def test_placed_in_cluster_the_same_refusal_fails_the_job() -> None:
    world = World(
        spec={
            "task": "llm",
            "image": None,
            "model": "m",
            "placement": "InCluster",
            "gpu": {"count": 1, "products": ["Tesla-T4"]},
        },
        pools=T4,
        policy=POLICY,
    )
    with pytest.raises(PermanentJobError) as err:
        await world.step()
    assert err.value.reason == "NoInputObject"


async def test_an_attempt_is_tracked_from_the_indexes_not_by_polling_the_api_server() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    asked: list[str] = []
    looked_up: list[str] = []
    get_job = world.kube.get_batch_job
    indexed_pods = world.kube.indexed_pods

    async def counted_get(ns: str, name: str) -> dict[str, Any] | None:
        asked.append(name)
        return await get_job(ns, name)

    def counted_pods(key: str) -> list[Any]:
        looked_up.append(key)
        return indexed_pods(key)

    world.kube.get_batch_job = counted_get  # type: ignore[method-assign]
    world.in_cluster = InClusterBackend(
        world.kube,  # type: ignore[arg-type]
        world.kube.indexed_jobs,
        counted_pods,
    )
    await world.step()  # routes and creates the Job
    world.kube.pods = [{"status": {"phase": "Running", "startTime": NOW.isoformat()}}]
    await world.step()
    await world.step()
    assert asked == []
    # An attempt's Pods are found by the Job controller's label with the Job's own UID.
    assert set(looked_up) == {"job:job-uid-hybridgpu-uid-7-a1"}
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["externalId"]) == ("Running", "hybridgpu-uid-7-a1")
    # One write for Pending and Running together: the create is not followed by its own.
    assert [e for e in world.log if e in ("patch", "finalizer")] == ["finalizer", "patch", "patch"]


async def test_a_job_the_indexes_do_not_know_yet_is_read_once_from_the_api_server() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    world.in_cluster = InClusterBackend(
        world.kube,  # type: ignore[arg-type]
        lambda _key: (),
        lambda _key: (),
    )
    await world.step()  # creates the Job; the watch has not shown it yet
    assert await world.step() is not None
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["externalId"]) == ("Pending", "hybridgpu-uid-7-a1")
    assert len([e for e in world.log if e.startswith("create")]) == 1
    world.kube.jobs.clear()  # deleted by someone else
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["reason"]) == ("Failed", "JobLost")


async def test_a_job_an_earlier_version_was_creating_is_adopted_not_created_again() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    earlier = {
        "metadata": {
            "name": "j-a1",
            "uid": "job-1",
            "labels": {"hybridgpu.dev/inferencejob": "j", "hybridgpu.dev/attempt": "1"},
            "ownerReferences": [{"kind": "InferenceJob", "uid": "uid-7", "controller": True}],
        }
    }
    world.kube.jobs["j-a1"] = earlier  # the name operators before UID names gave attempt 1
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["externalId"]) == ("Pending", "j-a1")
    assert list(world.kube.jobs) == ["j-a1"]
    assert not [entry for entry in world.log if entry.startswith("create")]


async def test_a_pod_the_index_no_longer_shows_still_bills_from_when_it_was_seen_running() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    await world.step()
    world.kube.pods = [{"status": {"phase": "Running", "startTime": NOW.isoformat()}}]
    await world.step()
    assert world.status["attempts"][0]["outcome"] == "Running"
    world.kube.pods = []  # a restarted operator whose Pod index is not filled yet
    world.kube.jobs["hybridgpu-uid-7-a1"]["status"] = {
        "succeeded": 1,
        "completionTime": (NOW + timedelta(hours=1)).isoformat(),
    }
    assert await world.step() is None
    # One GPU-hour at the policy's 0.1 USD, counted from the recorded runningSince.
    assert Decimal(world.status["attempts"][0]["cost"]) == Decimal("0.1")
