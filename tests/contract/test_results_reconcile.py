"""The reconcile step with a real result store (SeaweedFS): bad input and unwritable output
fail before anything is dispatched, runners get presigned URLs, and a job succeeds only with
its output object in the store."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hybridgpu.controller.results import ResultsConfig
from hybridgpu.results.layout import JobLayout
from hybridgpu.results.store import ResultStore
from hybridgpu.results.urls import ObjectURL
from hybridgpu.routing.snapshot import PerToken
from tests.objectstore import DEFAULT_BUCKET, TENANT, TENANT_BUCKET, SeaweedFS
from tests.unit.test_reconcile import World

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


class ResultsWorld(World):
    def __init__(
        self, s3: SeaweedFS, secrets: dict[str, dict[str, str]] | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        # Each world its own job: the store outlives a test, and a key is a job's uid.
        self.uid = f"uid-{uuid.uuid4().hex[:8]}"
        self.kube.obj["metadata"]["uid"] = self.uid
        self.store = ResultStore(s3.config())
        self.secrets = secrets or {}

        async def read_secret(ns: str, name: str, key: str) -> str | None:
            return self.secrets.get(f"{ns}/{name}", {}).get(key)

        self.results = ResultsConfig(self.store, read_secret)

    def deps(self) -> Any:
        deps = super().deps()
        deps.results = self.results
        return deps

    @property
    def layout(self) -> JobLayout:
        return JobLayout.for_job(self.store.root, "ns", "j", self.uid)

    def submitted(self) -> list[str]:
        return [line for line in self.log if line.startswith("submit")]


def lines(items: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def failed(world: World) -> dict[str, Any]:
    return next(c for c in world.status["conditions"] if c["type"] == "Failed")


@pytest.mark.parametrize(
    ("content", "reason", "words"),
    [
        (None, "InputNotFound", "no such object"),
        (b'{"custom_id":"a","prompt":"x"}\n[1]\n', "InputInvalid", "line 2"),
        (
            b'{"custom_id":"a"}\n{"custom_id":"b"}\n{"custom_id":"a"}\n',
            "DuplicateCustomId",
            "line 3",
        ),
    ],
)
async def test_bad_input_fails_the_job_before_anything_is_dispatched(
    s3: SeaweedFS, content: bytes | None, reason: str, words: str
) -> None:
    key = f"results/ns/inputs/{reason}.jsonl"
    if content is not None:
        await ResultStore(s3.config()).put(ObjectURL(DEFAULT_BUCKET, key), content)
    world = ResultsWorld(
        s3,
        spec={
            "task": "text-to-image",
            "model": "m",
            "input": {"requests": 3, "source": f"s3://{DEFAULT_BUCKET}/{key}"},
        },
    )
    assert await world.step() is None
    assert world.status["phase"] == "Failed"
    assert failed(world)["reason"] == reason and words in failed(world)["message"]
    assert (world.submitted() == [] and "attempts" not in world.status) or not world.status[
        "attempts"
    ]


async def test_a_job_may_not_name_another_namespaces_part_of_the_default_store(
    s3: SeaweedFS,
) -> None:
    world = ResultsWorld(
        s3, spec={"output": {"uri": f"s3://{DEFAULT_BUCKET}/results/other-ns/steal/"}}
    )
    assert await world.step() is None
    assert failed(world)["reason"] == "OutputForbidden" and world.submitted() == []
    source = ResultsWorld(
        s3,
        spec={
            "task": "llm",
            "model": "m",
            "input": {"requests": 1, "source": f"s3://{DEFAULT_BUCKET}/results/other-ns/in.jsonl"},
        },
    )
    assert await source.step() is None
    assert failed(source)["reason"] == "InputForbidden" and source.submitted() == []


async def test_an_output_location_the_tenants_credentials_cannot_write_fails_before_dispatch(
    s3: SeaweedFS,
) -> None:
    secret = {
        "AWS_ACCESS_KEY_ID": TENANT[0],
        "AWS_SECRET_ACCESS_KEY": TENANT[1],
        "AWS_ENDPOINT_URL": s3.endpoint,
    }
    spec = {"output": {"uri": "s3://other-tenant/mine/", "credentialsSecretRef": {"name": "creds"}}}
    world = ResultsWorld(s3, secrets={"ns/creds": secret}, spec=spec)
    assert await world.step() is None
    assert failed(world)["reason"] == "OutputNotWritable" and world.submitted() == []
    for value in TENANT:
        assert value not in json.dumps(world.status)

    own = ResultsWorld(
        s3,
        secrets={"ns/creds": secret},
        spec={
            "output": {
                "uri": f"s3://{TENANT_BUCKET}/mine/",
                "credentialsSecretRef": {"name": "creds"},
            }
        },
    )
    assert await own.step() == 0.0
    assert own.status["output"]["uri"] == f"s3://{TENANT_BUCKET}/mine/ns/j/{own.uid}/output.jsonl"


async def test_a_missing_secret_makes_the_job_wait_with_a_reason(s3: SeaweedFS) -> None:
    world = ResultsWorld(
        s3,
        spec={
            "output": {"uri": f"s3://{TENANT_BUCKET}/x/", "credentialsSecretRef": {"name": "none"}}
        },
    )
    assert await world.step() == 30.0
    routed = next(c for c in world.status["conditions"] if c["type"] == "Routed")
    assert routed["reason"] == "CredentialsMissing" and world.status["phase"] != "Failed"


async def test_a_container_gets_presigned_urls_and_succeeds_only_once_its_output_is_there(
    s3: SeaweedFS,
) -> None:
    world = ResultsWorld(
        s3,
        spec={
            "input": {
                "requests": 2,
                "inline": [{"custom_id": "a", "x": 1}, {"custom_id": "b", "x": 2}],
            }
        },
    )
    captured: list[Any] = []
    network = world.networks["cheap"]
    original = network.submit

    async def submit(job: Any, **kw: Any) -> Any:
        captured.append(job)
        return await original(job, **kw)

    network.submit = submit  # type: ignore[method-assign]
    assert await world.step() == 0.0  # output location probed, input checked
    assert world.status["output"]["summary"] == "0/2"
    await world.step()  # routed and submitted
    env = {e.name: e.value for e in captured[0].env}
    async with httpx.AsyncClient() as client:
        staged = (await client.get(env["HYBRIDGPU_INPUT_URL"])).content
        assert [json.loads(x)["custom_id"] for x in staged.splitlines()] == ["a", "b"]
        # The container ends but wrote nothing: no success.
        network.state = "Succeeded"
        await world.step()
        assert world.status["attempts"][0]["reason"] == "OutputMissing"
        assert world.status["phase"] != "Succeeded"
        # The next attempt's container writes its output through its presigned URL.
        network.state = "Running"
        await world.step()
        await world.step()
        env = {e.name: e.value for e in captured[-1].env}
        out = b'{"custom_id":"a","response":{"status_code":200,"body":{}},"error":null}\n'
        out += (
            b'{"custom_id":"b","response":{"status_code":500,"body":{}},"error":{"message":"x"}}\n'
        )
        assert (await client.put(env["HYBRIDGPU_OUTPUT_URL"], content=out)).status_code == 200
    network = world.networks[world.status["attempts"][-1]["provider"]]
    network.state = "Succeeded"
    await world.step()
    assert world.status["phase"] == "Succeeded"
    output = world.status["output"]
    assert output["records"] == 2 and output["failed"] == 1 and output["bytes"] == len(out)
    assert output["summary"] == "2/2" and output["checksum"].startswith("sha256:")
    # No presigned URL in status.
    assert "X-Amz-Signature" not in json.dumps(world.status)


async def test_an_openai_batch_restarted_mid_way_writes_one_line_per_custom_id(
    s3: SeaweedFS,
) -> None:
    import asyncio

    from hybridgpu.networks import make_adapter
    from hybridgpu.standins import start_standins
    from tests.contract.networks_helpers import FAST, KEY, provider_spec, standin_config

    standins = await start_standins(standin_config())
    total = 40
    items = [
        {"custom_id": f"q{i}", "body": {"messages": [{"role": "user", "content": f"n {i}"}]}}
        for i in range(total)
    ]
    world = ResultsWorld(
        s3,
        spec={
            "task": "llm",
            "model": "meta-llama/Llama-3.3-70B-Instruct",
            "input": {"requests": total, "inline": items},
        },
    )
    standins.states["openai"].config.request_latency_seconds = 0.02  # type: ignore[index]
    # A token-priced offer, as the OpenAI-compatible network makes: a 70B model fits no single
    # hour-priced 24 GiB GPU (ModelTooLarge), and it is the token price that this batch pays.
    world.offers = tuple(
        dataclasses.replace(
            o,
            pricing=PerToken(Decimal("0.13"), Decimal("0.38")),
            labels={"hybridgpu.dev/model": "meta-llama/Llama-3.3-70B-Instruct"},
        )
        for o in world.offers
    )

    def connect() -> Any:
        adapter = make_adapter(
            "cheap", provider_spec(standins, "openai"), KEY, http_policy=FAST, batch_concurrency=2
        )
        world.registry.providers["cheap"].adapter = adapter
        return adapter

    first = connect()
    try:
        await world.step()  # checked
        await world.step()  # routed and submitted
        while len(await world.store.keys(world.layout.parts)) < 1:
            await asyncio.sleep(0.02)
        await first.aclose()  # the operator is SIGKILLed
        world.registry.submitted.clear()
        second = connect()
        for _ in range(200):
            if await world.step() is None:
                break
            await asyncio.sleep(0.05)
        await second.aclose()
    finally:
        await standins.close()
    assert world.status["phase"] == "Succeeded", world.status["conditions"]
    output = world.status["output"]
    assert output["records"] == total and output["failed"] == 0 and output["summary"] == "40/40"
    assert not world.status.get("externalRef", {}).get("checkpoint")
    data = world.store.get_bytes_sync(world.layout.output, 10**7)
    got = [json.loads(line) for line in data.splitlines()]
    assert [g["custom_id"] for g in got] == [f"q{i}" for i in range(total)]
    assert all(
        f"n {i}" in g["response"]["body"]["choices"][0]["message"]["content"]
        for i, g in enumerate(got)
    )


async def test_a_container_networks_output_object_ends_the_job_and_its_deployment(
    s3: SeaweedFS,
) -> None:
    world = ResultsWorld(s3, spec={"input": {"requests": 1, "inline": [{"custom_id": "only"}]}})
    captured: list[Any] = []
    network = world.networks["cheap"]
    original = network.submit

    async def submit(job: Any, **kw: Any) -> Any:
        captured.append(job)
        return await original(job, **kw)

    network.submit = submit  # type: ignore[method-assign]
    await world.step()  # checked
    await world.step()  # submitted
    network.state = "Running"  # an Akash deployment: it never ends by itself
    await world.step()
    assert world.status["phase"] == "Running" and network.cancelled == []
    env = {e.name: e.value for e in captured[0].env}
    line = b'{"custom_id":"only","response":{"status_code":200,"body":{}},"error":null}\n'
    async with httpx.AsyncClient() as client:
        assert (await client.put(env["HYBRIDGPU_OUTPUT_URL"], content=line)).status_code == 200
    assert await world.step() is None
    assert world.status["phase"] == "Succeeded"
    assert network.cancelled == [world.status["attempts"][0]["externalId"]]  # lease closed
    assert world.status["output"]["records"] == 1 and world.status["output"]["summary"] == "1/1"


async def test_a_resubmitted_attempt_sends_the_same_presigned_urls(s3: SeaweedFS) -> None:
    """Akash finds earlier work by its manifest's hash, which covers the env: a retry under
    the same key must send the same spec, not freshly signed URLs."""
    from hybridgpu.api.inferencejob import InferenceJobSpec
    from hybridgpu.controller.reconcile import JobStep

    world = ResultsWorld(
        s3,
        spec={"input": {"requests": 2, "inline": [{"custom_id": "a"}, {"custom_id": "b"}]}},
    )
    await world.step()  # checked: the output location is known
    step = JobStep(dict(world.kube.obj), world.deps(), lambda *_: None)
    spec = InferenceJobSpec.model_validate(world.kube.obj["spec"])
    job = await step.job_results(spec)
    assert job is not None
    first = await step.runner_spec(spec, job, "uid-1")
    again = await step.runner_spec(spec, job, "uid-1")
    env = {e.name: e.value for e in first.env or []}
    assert "HYBRIDGPU_OUTPUT_URL" in env
    assert first == again


async def test_a_container_network_gets_the_checkpoint_only_for_the_users_own_program(
    s3: SeaweedFS,
) -> None:
    """A batch evicted from (or failed over between) container networks resumes from what it
    saved: the user's container gets the job's checkpoint PUT and GET, on the real store;
    vLLM's run-batch, the default there, cannot resume and gets no credential it would not
    read."""
    from hybridgpu.api.inferencejob import InferenceJobSpec
    from hybridgpu.controller.reconcile import JobStep

    inline = {"input": {"requests": 2, "inline": [{"custom_id": "a"}, {"custom_id": "b"}]}}

    async def sent_env(spec: dict[str, Any]) -> dict[str, str]:
        world = ResultsWorld(s3, spec=spec)
        await world.step()  # checked: the output location is known
        step = JobStep(dict(world.kube.obj), world.deps(), lambda *_: None)
        model = InferenceJobSpec.model_validate(world.kube.obj["spec"])
        job = await step.job_results(model)
        assert job is not None
        sent = await step.runner_spec(model, job, f"{world.uid}-1")
        return {e.name: e.value for e in sent.env or []}

    own = await sent_env({**inline, "task": "container", "image": "example.org/batch:1"})
    assert {"HYBRIDGPU_CHECKPOINT_URL", "HYBRIDGPU_RESUME_URL"} <= set(own)
    async with httpx.AsyncClient() as client:
        assert (await client.get(own["HYBRIDGPU_RESUME_URL"])).status_code in (403, 404)
        saved = b'{"done":["a"]}\n'
        put = await client.put(own["HYBRIDGPU_CHECKPOINT_URL"], content=saved)
        assert put.status_code == 200
        resumed = await client.get(own["HYBRIDGPU_RESUME_URL"])
        assert resumed.status_code == 200 and resumed.content == saved

    default_llm = await sent_env({**inline, "task": "llm", "model": "m"})
    assert "HYBRIDGPU_INPUT_URL" in default_llm
    assert not {"HYBRIDGPU_CHECKPOINT_URL", "HYBRIDGPU_RESUME_URL"} & set(default_llm)
