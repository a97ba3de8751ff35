"""The reconcile step's in-cluster dispatch: refusals become the job's reason; no adoption."""

from __future__ import annotations

from typing import Any

import pytest

from hybridgpu.controller.claims import job_hold
from hybridgpu.controller.errors import PermanentJobError
from hybridgpu.kube import Rejected
from hybridgpu.routing.snapshot import InClusterPool
from tests.unit.test_reconcile import RTX, World

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


async def test_an_attempts_pods_are_found_by_the_job_controllers_label() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    selectors: list[str] = []

    async def pods(ns: str, selector: str) -> list[dict[str, Any]]:
        selectors.append(selector)
        return []

    world.kube.list_pods = pods  # type: ignore[method-assign]
    await world.step()
    await world.step()
    assert selectors == ["batch.kubernetes.io/job-name=hybridgpu-uid-7-a1"]


async def test_a_job_an_earlier_version_was_creating_is_adopted_not_created_again() -> None:
    world = World(spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}}, pools=T4, policy=POLICY)
    earlier = {
        "metadata": {"name": "j-a1", "ownerReferences": [{"uid": "uid-7", "controller": True}]}
    }
    world.kube.jobs["j-a1"] = earlier  # the name operators before UID names gave attempt 1
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["externalId"]) == ("Pending", "j-a1")
    assert list(world.kube.jobs) == ["j-a1"]
    assert not [entry for entry in world.log if entry.startswith("create")]
