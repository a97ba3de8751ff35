"""The controller's half of the runner checkpoint contract: every in-cluster attempt of a job
gets a presigned PUT and GET of the job's one checkpoint object, in its env only.

Signing is computed locally (SigV4 needs no server), so the store here is never reached.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlsplit

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends import incluster
from hybridgpu.controller import results as jobresults
from hybridgpu.controller.reconcile import Deps, JobStep
from hybridgpu.results.store import ResultStore, StoreConfig
from tests.unit.test_reconcile import World
from tests.unit.test_reconcile_incluster import POLICY, T4

SECRET = "not-a-real-secret-key"
SOURCE = "s3://results/hybridgpu/ns/in.jsonl"


def store() -> ResultStore:
    return ResultStore(
        StoreConfig(
            bucket="results",
            endpoint="http://127.0.0.1:9",
            access_key_id="AKIDTEST",
            secret_access_key=SECRET,
        )
    )


async def no_secret(namespace: str, name: str, key: str) -> str | None:
    return None


class StoreWorld(World):
    """One text-to-image job, its output location already checked (status.output set)."""

    def __init__(self) -> None:
        super().__init__(
            spec={
                "task": "text-to-image",
                "image": None,
                "model": "stabilityai/sd-turbo",
                "input": {"source": SOURCE, "requests": 3},
                "gpu": {"count": 1, "products": ["Tesla-T4"]},
            },
            pools=T4,
            policy=POLICY,
        )
        self.kube.obj["status"] = {
            "output": {"uri": "s3://results/hybridgpu/ns/j/uid-7/output.jsonl"},
            "progress": {"completed": 0, "total": 3},
        }
        self.events: list[tuple[str, ...]] = []

    def deps(self) -> Deps:
        deps = super().deps()
        deps.results = jobresults.ResultsConfig(store(), no_secret)
        return deps

    async def step(self) -> float | None:
        def emit(*args: Any) -> None:
            self.events.append(tuple(str(a) for a in args))

        return await JobStep(copy.deepcopy(self.kube.obj), self.deps(), emit).run()


def env(job: dict[str, Any]) -> dict[str, str]:
    (runner,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in runner["env"]}


async def test_an_attempt_gets_the_jobs_checkpoint_urls_in_its_env_and_nowhere_else() -> None:
    world = StoreWorld()
    await world.step()
    (job,) = world.kube.jobs.values()
    values = env(job)
    put, get = values["HYBRIDGPU_CHECKPOINT_URL"], values["HYBRIDGPU_RESUME_URL"]
    for url in (put, get):
        assert urlsplit(url).path == "/results/hybridgpu/ns/j/uid-7/checkpoint.jsonl"
        assert "X-Amz-Signature=" in urlsplit(url).query
    assert put != get  # signed for different methods
    # Status, Events and the operator's log of actions hold no signature.
    said = json.dumps([world.status, world.events, world.log])
    assert "X-Amz-Signature" not in said and "checkpoint.jsonl?" not in said
    assert SECRET not in json.dumps(job)


async def test_every_attempt_of_a_job_names_the_same_checkpoint_object() -> None:
    spec = InferenceJobSpec.model_validate(StoreWorld().kube.obj["spec"])
    results = jobresults.ResultsConfig(store(), no_secret)
    job = await results.resolve("ns", "j", "uid-7", spec)
    keys = []
    for attempt in (1, 2):
        urls = await jobresults.manifest_urls(job, spec, None, None)
        manifest = incluster.job_manifest(
            name="j", namespace="ns", uid="uid-7", spec=spec, attempt=attempt,
            gpu_product="Tesla-T4", **urls,
        )  # fmt: skip
        keys.append(urlsplit(env(manifest)["HYBRIDGPU_RESUME_URL"]).path)
    assert keys[0] == keys[1] == "/results/hybridgpu/ns/j/uid-7/checkpoint.jsonl"


async def test_a_runner_after_a_network_is_handed_the_parts_and_a_store_error_costs_nothing(
    monkeypatch: Any,
) -> None:
    """Only a job that ran on a network before has parts to hand over (a listing per
    dispatch otherwise); a store that cannot be read then only means resending."""
    from hybridgpu.results.store import StoreError

    spec = InferenceJobSpec.model_validate(StoreWorld().kube.obj["spec"])
    job = await jobresults.ResultsConfig(store(), no_secret).resolve("ns", "j", "uid-7", spec)
    calls: list[int] = []

    def seed(_store: ResultStore, _layout: Any, total: int) -> int:
        calls.append(total)
        raise StoreError("listing s3://results/...: connection refused")

    monkeypatch.setattr(jobresults, "seed_from_parts_sync", seed)
    first = await jobresults.manifest_urls(job, spec, None, None)
    assert calls == []
    after = await jobresults.manifest_urls(job, spec, None, None, parts_total=3)
    assert calls == [3]
    assert after.keys() == first.keys() and after["resume_url"]
