"""The result store on a real S3-compatible server (SeaweedFS, built by hack/): objects,
presigned URLs, tenant isolation, input checks, and client-driven batches whose output holds
exactly one line per custom_id, also when the operator dies mid-batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hybridgpu.networks import make_adapter
from hybridgpu.networks.batch import BatchResults
from hybridgpu.results.layout import JobLayout, chunk_size
from hybridgpu.results.output import BatchOutput
from hybridgpu.results.reader import InputError, scan
from hybridgpu.results.source import RequestSource
from hybridgpu.results.store import ResultStore, StoreError
from hybridgpu.results.urls import ObjectURL
from hybridgpu.standins import Standins, media
from tests.contract.networks_helpers import (
    FAST,
    KEY,
    control,
    job_spec,
    product_for,
    provider_spec,
    standin_config,
    wait_for,
)
from tests.objectstore import ADMIN, DEFAULT_BUCKET, TENANT, TENANT_BUCKET, SeaweedFS

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


@pytest.fixture
async def standins() -> AsyncIterator[Standins]:
    from hybridgpu.standins import start_standins

    running = await start_standins(standin_config())
    try:
        yield running
    finally:
        await running.close()


def admin(s3: SeaweedFS) -> ResultStore:
    return ResultStore(s3.config())


def jsonl(items: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


async def test_objects_are_written_listed_streamed_and_signed(s3: SeaweedFS) -> None:
    store = admin(s3)
    url = ObjectURL(DEFAULT_BUCKET, "t/objects/a.jsonl")
    await store.put(url, b'{"a":1}\n{"a":2}\n')
    assert [line async for line in store.lines(url)] == [b'{"a":1}', b'{"a":2}']
    assert await store.keys(ObjectURL(DEFAULT_BUCKET, "t/objects")) == ["t/objects/a.jsonl"]
    meta = await store.head(url)
    assert meta is not None and meta["size"] == 16
    assert await store.head(ObjectURL(DEFAULT_BUCKET, "t/objects/none")) is None
    # A runner holds only presigned URLs: it writes the output and reads the input with them.
    put = store.sign("PUT", ObjectURL(DEFAULT_BUCKET, "t/objects/out.jsonl"), timedelta(minutes=5))
    get = store.sign("GET", url, timedelta(minutes=5))
    async with httpx.AsyncClient() as client:
        assert (await client.put(put, content=b"written by a runner\n")).status_code == 200
        assert (await client.get(get)).content == b'{"a":1}\n{"a":2}\n'
        # Unsigned, the same object is refused: the store is not public.
        assert (
            await client.get(f"{s3.endpoint}/{DEFAULT_BUCKET}/t/objects/a.jsonl")
        ).status_code == 403
    assert await store.get_bytes(ObjectURL(DEFAULT_BUCKET, "t/objects/out.jsonl"), 100) == (
        b"written by a runner\n"
    )


async def test_a_tenant_store_reaches_its_own_bucket_and_nothing_else(s3: SeaweedFS) -> None:
    tenant = ResultStore(s3.config(TENANT_BUCKET, tenant=True))
    await tenant.check_writable(ObjectURL(TENANT_BUCKET, "jobs"))
    for bucket in (DEFAULT_BUCKET, "other-tenant"):
        with pytest.raises(StoreError) as denied:
            await tenant.check_writable(ObjectURL(bucket, "jobs"))
        assert denied.value.denied
        # The message names the object, never a key.
        for secret in (*TENANT, *ADMIN):
            assert secret not in denied.value.message


async def test_wrong_credentials_are_denied_without_showing_them(s3: SeaweedFS) -> None:
    from dataclasses import replace

    wrong = ResultStore(replace(s3.config(), secret_access_key="not-the-secret-0123"))
    with pytest.raises(StoreError) as denied:
        await wrong.check_writable(ObjectURL(DEFAULT_BUCKET, "x"))
    assert denied.value.denied and "not-the-secret-0123" not in denied.value.message


async def test_input_is_checked_line_by_line_before_anything_is_sent(s3: SeaweedFS) -> None:
    store = admin(s3)
    base = ObjectURL(DEFAULT_BUCKET, "t/input")
    good = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": f"q {i}"}]},
        }
        for i in range(50)
    ]
    await store.put(base.join("good.jsonl"), jsonl(good))
    summary = await scan(store, base.join("good.jsonl"), max_bytes=10**6, max_requests=1000)
    assert summary.total == 50

    await store.put(base.join("bad.jsonl"), jsonl(good[:3]) + b"{not json\n")
    with pytest.raises(InputError) as bad:
        await scan(store, base.join("bad.jsonl"), max_bytes=10**6, max_requests=1000)
    assert bad.value.reason == "InputInvalid" and "line 4" in bad.value.message

    await store.put(base.join("dup.jsonl"), jsonl([*good[:5], good[2]]))
    with pytest.raises(InputError) as dup:
        await scan(store, base.join("dup.jsonl"), max_bytes=10**6, max_requests=1000)
    assert dup.value.reason == "DuplicateCustomId"
    assert "line 6" in dup.value.message and "line 3" in dup.value.message

    with pytest.raises(InputError) as missing:
        await scan(store, base.join("none.jsonl"), max_bytes=10**6, max_requests=1000)
    assert missing.value.reason == "InputNotFound"

    with pytest.raises(InputError) as large:
        await scan(store, base.join("good.jsonl"), max_bytes=100, max_requests=1000)
    assert large.value.reason == "InputTooLarge"


async def finished(adapter: Any, ref: Any) -> Any:
    """The batch's status once it has ended; the adapter is closed either way."""
    try:
        return await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=30)
    finally:
        await adapter.aclose()


def output_lines(store: ResultStore, layout: JobLayout) -> list[dict[str, Any]]:
    data = store.get_bytes_sync(layout.output, 10**8)
    return [json.loads(line) for line in data.splitlines()]


async def _batch(
    store: ResultStore,
    standins: Standins,
    network: str,
    key: str,
    total: int,
    layout: JobLayout,
    items: list[dict[str, Any]] | None = None,
) -> tuple[Any, Any, BatchResults]:
    if items is not None:
        job = job_spec(network, input={"requests": total})
    elif network == "openai":
        items = [
            {
                "custom_id": f"c-{i}",
                "body": {
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": 4,
                },
            }
            for i in range(total)
        ]
        job = job_spec("openai", input={"requests": total})
    else:
        items = [{"custom_id": f"c-{i}", "prompt": f"a fox number {i}"} for i in range(total)]
        job = job_spec("livepeer", input={"requests": total})
    source_url = layout.base.join("in.jsonl")
    await store.put(source_url, jsonl(items))
    results = BatchResults(
        RequestSource.from_store(store, source_url, total), BatchOutput(store, layout, total)
    )
    adapter = make_adapter(
        "p", provider_spec(standins, network), KEY, http_policy=FAST, batch_concurrency=4
    )
    ref = await adapter.submit(
        job,
        idempotency_key=key,
        gpu_product=product_for(network),
        max_price_per_gpu_hour=None,
        results=results,
    )
    return adapter, ref, results


@pytest.mark.parametrize("network", ["openai", "livepeer"])
async def test_a_batch_survives_a_crash_with_one_output_line_per_custom_id(
    s3: SeaweedFS, standins: Standins, network: str
) -> None:
    store = admin(s3)
    total = 70  # chunks of 16: four full parts and one of six
    assert chunk_size(total) == 16
    layout = JobLayout.for_job(store.root, "ns", f"crash-{network}", "uid-1")
    standins.states[network].config.request_latency_seconds = 0.01  # type: ignore[index]
    first, _, _ = await _batch(store, standins, network, f"k-{network}", total, layout)
    while len(await store.keys(layout.parts)) < 2:
        await asyncio.sleep(0.01)
    await first.aclose()  # the operator is killed: requests in flight are abandoned
    written = {JobLayout.part_first(k) for k in await store.keys(layout.parts)}
    sent_before = dict((await control(standins, network, "/_stats"))["submissions"])

    second, again, _ = await _batch(store, standins, network, f"k-{network}", total, layout)
    final = await finished(second, again)
    assert final.state == "Succeeded", final.message
    assert final.output is not None and final.output.records == total
    lines = output_lines(store, layout)
    assert [line["custom_id"] for line in lines] == [f"c-{i}" for i in range(total)]
    sent = (await control(standins, network, "/_stats"))["submissions"]
    for first_index in written:
        assert first_index is not None
        for index in range(first_index, first_index + 16):
            # A request whose part was in the store was not sent again.
            assert sent[f"k-{network}/{index}"] == sent_before[f"k-{network}/{index}"] == 1
    assert final.output.checksum.startswith("sha256:") and final.output.bytes > 0
    for index, line in enumerate(lines):
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = line["response"]["body"]
        if network == "openai":
            # The stand-in echoes the prompt: each line answers its own request.
            assert f"question {index}" in body["choices"][0]["message"]["content"]
        else:
            image = body["images"][0]
            assert image["url"].startswith(f"s3://{DEFAULT_BUCKET}/")
            copied = store.get_bytes_sync(ObjectURL.parse(image["url"], "url"), 10**6)
            assert copied == media.png(f"{media.digest(f'a fox number {index}')}-0")


async def test_the_results_command_streams_a_finished_jobs_output(
    s3: SeaweedFS,
) -> None:
    import io

    from hybridgpu.commands.explain import render
    from hybridgpu.commands.results import copy_output, output_url, store_config

    store = admin(s3)
    url = ObjectURL(DEFAULT_BUCKET, "results/ns/j/uid/output.jsonl")
    data = b"".join(b'{"custom_id":"c-%d","error":null}\n' % i for i in range(3000))
    await store.put(url, data)
    body = {
        "status": {
            "phase": "Succeeded",
            "output": {
                "uri": str(url),
                "records": 3000,
                "summary": "3000/3000",
                "bytes": len(data),
            },
        }
    }
    found, why = output_url(body)
    assert found == url and why == ""
    env = {
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "AWS_ENDPOINT_URL": s3.endpoint,
    }
    out = io.BytesIO()
    assert copy_output(ResultStore(store_config(url.bucket, env)), url, out) == len(data)
    assert out.getvalue() == data
    running = {"status": {"phase": "Running", "output": {"uri": str(url), "summary": "5/9"}}}
    assert output_url(running) == (None, "the output is not complete yet (phase Running, 5/9)")
    text = io.StringIO()
    render("j", "ns", body, text)
    assert f"Output: {url} (3000/3000 records" in text.getvalue()
    assert "hybridgpu results j -n ns" in text.getvalue()


async def test_a_batch_failed_over_from_the_cluster_resumes_from_the_runners_checkpoint(
    s3: SeaweedFS, standins: Standins
) -> None:
    """An in-cluster text-to-image attempt saved 40 finished lines when it was evicted; the
    job goes on on Livepeer, driven by the operator. Only the rest is sent: the runner's
    lines (written here by the runner's own line writer) go into the output as they are,
    except a 5xx line (the ai-runner may answer now) and one whose custom_id is not the
    input's (the input changed since), which are sent again."""
    from hybridgpu.runner.jsonl import output_line

    store = admin(s3)
    total = 70
    layout = JobLayout.for_job(store.root, "ns", "evicted-from-cluster", "uid-1")
    runner_lines = []
    for i in range(40):
        if i == 7:
            runner_lines.append(output_line(i, f"c-{i}", 503, {"detail": "busy"}, "HTTP 503"))
        elif i == 9:
            runner_lines.append(output_line(i, "another-input", 200, {"images": []}, None))
        else:
            body = {"images": [{"url": f"data:image/png;base64,cluster{i}", "seed": i}]}
            runner_lines.append(output_line(i, f"c-{i}", 200, body, None))
    await store.put(layout.checkpoint, b"".join(runner_lines))

    adapter, ref, _ = await _batch(store, standins, "livepeer", "k-resume", total, layout)
    final = await finished(adapter, ref)
    assert final.state == "Succeeded", final.message
    assert final.output is not None and final.output.records == total
    lines = output_lines(store, layout)
    assert [line["custom_id"] for line in lines] == [f"c-{i}" for i in range(total)]
    sent = (await control(standins, "livepeer", "/_stats"))["submissions"]
    resent = {7, 9}
    for i in range(total):
        kept = i < 40 and i not in resent
        assert sent.get(f"k-resume/{i}", 0) == (0 if kept else 1), i
        image = lines[i]["response"]["body"]["images"][0]
        if kept:
            assert json.dumps(lines[i], separators=(",", ":")).encode() + b"\n" == runner_lines[i]
        else:
            assert image["url"].startswith(f"s3://{DEFAULT_BUCKET}/")
    # Only what the network did is billed to it: 32 requests of the 70 a fresh batch pays.
    fresh_layout = JobLayout.for_job(store.root, "ns", "never-in-cluster", "uid-2")
    fresh, fresh_ref, _ = await _batch(store, standins, "livepeer", "k-fresh", total, fresh_layout)
    whole = await finished(fresh, fresh_ref)
    assert whole.state == "Succeeded" and whole.accrued_usd > 0
    assert final.accrued_usd == (whole.accrued_usd * 32 / total).quantize(Decimal("1e-8"))


async def test_a_request_the_network_refuses_is_an_error_line_not_a_failed_batch(
    s3: SeaweedFS, standins: Standins
) -> None:
    """go-livepeer answers 400 "prompt field is required" for a text-to-image request
    without a prompt (the stand-in as its handler does): that request's line says so, every
    other request is answered, and the batch succeeds with one failed line."""
    store = admin(s3)
    total = 20
    items = [{"custom_id": f"c-{i}", "prompt": f"a fox number {i}"} for i in range(total)]
    items[6] = {"custom_id": "c-6", "negative_prompt": "no prompt at all"}
    layout = JobLayout.for_job(store.root, "ns", "one-bad-line", "uid-1")
    adapter, ref, _ = await _batch(
        store, standins, "livepeer", "k-refused", total, layout, items=items
    )
    final = await finished(adapter, ref)
    assert final.state == "Succeeded", final.message
    assert final.output is not None and final.output.records == total
    assert final.output.failed == 1
    lines = output_lines(store, layout)
    assert [line["custom_id"] for line in lines] == [f"c-{i}" for i in range(total)]
    refused = lines[6]["response"]
    assert refused["status_code"] == 400
    assert "prompt field is required" in refused["body"]["error"]["message"]
    assert all(line["response"]["status_code"] == 200 for i, line in enumerate(lines) if i != 6)


async def test_a_job_back_from_a_network_hands_what_it_finished_to_the_in_cluster_runner(
    s3: SeaweedFS, standins: Standins
) -> None:
    """A Livepeer batch wrote some parts before it broke; the job fails over to the
    cluster. Before the runner starts, the parts are merged into its checkpoint, beside a
    line an earlier in-cluster attempt saved; the real runner, through presigned URLs on
    the real store, then sends the ai-runner only the requests nobody finished."""
    from hybridgpu.results.resume import seed_from_parts_sync
    from hybridgpu.runner import checkpoint, livepeer
    from hybridgpu.runner.jsonl import output_line
    from tests.unit.test_runner_livepeer import FlakyRunner

    store = admin(s3)
    total = 70
    layout = JobLayout.for_job(store.root, "ns", "back-to-cluster", "uid-1")
    standins.states["livepeer"].config.request_latency_seconds = 0.01  # type: ignore[index]
    network, _, _ = await _batch(store, standins, "livepeer", "k-back", total, layout)
    while len(await store.keys(layout.parts)) < 2:
        await asyncio.sleep(0.01)
    await network.aclose()  # the network breaks: the job fails over to the cluster
    firsts = [JobLayout.part_first(k) for k in await store.keys(layout.parts)]
    by_network = {i for f in firsts if f is not None for i in range(f, min(f + 16, total))}
    assert 0 < len(by_network) < total - 1 and 69 not in by_network
    earlier = {"images": [{"url": "data:image/png;base64,earlier", "seed": 69}]}
    await store.put(layout.checkpoint, output_line(69, "c-69", 200, earlier, None))

    handed = await asyncio.to_thread(seed_from_parts_sync, store, layout, total)
    assert handed == len(by_network)

    hour = timedelta(hours=1)
    runner = FlakyRunner("text-to-image")
    cfg = livepeer.Config(
        pipeline="text-to-image",
        model="stabilityai/sd-turbo",
        runner_url=runner.url,
        input_url=store.sign("GET", layout.base.join("in.jsonl"), hour),
        output_url=store.sign("PUT", layout.output, hour),
        ready_timeout=5,
        retry_delay=0.01,
    )
    cfg.checkpointing = checkpoint.Settings(
        checkpoint_url=store.sign("PUT", layout.checkpoint, hour),
        resume_url=store.sign("GET", layout.checkpoint, hour),
    )
    try:
        assert await asyncio.to_thread(livepeer.run, cfg) == livepeer.EXIT_OK
    finally:
        runner.close()
    nobody = {i for i in range(total) if i not in by_network and i != 69}
    assert sorted(b["prompt"] for b in runner.bodies) == sorted(f"a fox number {i}" for i in nobody)
    lines = output_lines(store, layout)
    assert [line["custom_id"] for line in lines] == [f"c-{i}" for i in range(total)]
    assert lines[69]["response"]["body"] == earlier
    for i in by_network:  # the network's own answers, its media copied into the store
        assert lines[i]["response"]["body"]["images"][0]["url"].startswith(
            f"s3://{DEFAULT_BUCKET}/"
        )
