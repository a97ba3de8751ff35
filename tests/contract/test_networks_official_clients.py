"""The stand-ins driven by the networks' own Python clients, through the calls the adapters
make: a stand-in an official client cannot use is a bug in the stand-in.

``livepeer-ai`` (Livepeer's generated SDK, ``server_url`` pointed at the stand-in) and
``openai`` (the OpenAI client with ``base_url``), both from the ``dev`` extra. The clients
are synchronous here, so each runs in a worker thread beside the in-process stand-ins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from hybridgpu.standins import Standins, start_standins
from tests.contract import openapi
from tests.contract.networks_helpers import (
    KEY,
    adapter_for,
    standin_config,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
livepeer_ai = pytest.importorskip("livepeer_ai")
openai = pytest.importorskip("openai")


async def test_the_livepeer_sdk_uses_the_livepeer_stand_in(standins: Standins) -> None:
    base = standins.base_url("livepeer")

    def work() -> tuple[object, object, object, object]:
        client = livepeer_ai.Livepeer(server_url=base, http_bearer=KEY)
        image = client.generate.text_to_image(
            request={"prompt": "a fox", "model_id": "SG161222/RealVisXL_V4.0_Lightning"}
        )
        # The SDK serialises LLMRequest's defaults (model "", max_tokens 256, stream false),
        # which is what keeps go-livepeer's "missing required fields" check quiet.
        defaults = client.generate.llm(request={"messages": [{"role": "user", "content": "hi"}]})
        explicit = client.generate.llm(
            request={
                "messages": [{"role": "user", "content": "one two three"}],
                "model": "meta-llama/Meta-Llama-3.1-8B-Instruct",
                "max_tokens": 8,
                "stream": False,
            }
        )
        speech = client.generate.text_to_speech(
            request={"text": "hello", "model_id": "parler-tts/parler-tts-large-v1"}
        )
        return image, defaults, explicit, speech

    image, defaults, explicit, speech = await asyncio.to_thread(work)
    assert image.image_response.images[0].url.endswith(".png")  # type: ignore[attr-defined]
    assert defaults.llm_response.usage.completion_tokens == 256  # type: ignore[attr-defined]
    reply = explicit.llm_response  # type: ignore[attr-defined]
    assert reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 8
    assert reply.choices[0].message.role == "assistant"
    assert speech.audio_response.audio.url.endswith(".wav")  # type: ignore[attr-defined]
    stats = standins.states["livepeer"].stats()  # type: ignore[index]
    assert stats["unauthorized"] == 0 and stats["requests"] == 4


async def test_the_livepeer_sdk_is_refused_without_the_credential(standins: Standins) -> None:
    base = standins.base_url("livepeer")

    def work() -> Exception:
        client = livepeer_ai.Livepeer(server_url=base, http_bearer="wrong")
        try:
            client.generate.text_to_image(request={"prompt": "a fox", "model_id": "m"})
        except Exception as exc:  # the SDK's own error types
            return exc
        raise AssertionError("no error")

    error = await asyncio.to_thread(work)
    # The SDK's typed HTTPError (the spec's 401 shape), not a failure to parse the answer.
    assert type(error).__name__ == "HTTPError", repr(error)
    assert error.data.detail.msg == "Unauthorized"  # type: ignore[attr-defined]


async def test_the_openai_client_uses_the_openai_stand_in(standins: Standins) -> None:
    base = standins.endpoint("openai")

    def work() -> tuple[list[object], object]:
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
        models = list(client.models.list())
        reply = client.chat.completions.create(
            model="meta-llama/Llama-3.3-70B-Instruct",
            messages=[{"role": "user", "content": "one two three four"}],
            max_completion_tokens=5,
        )
        return models, reply

    models, reply = await asyncio.to_thread(work)
    ids = {m.id for m in models}  # type: ignore[attr-defined]
    assert "meta-llama/Llama-3.3-70B-Instruct" in ids
    assert reply.usage.prompt_tokens == 4 and reply.usage.completion_tokens == 5  # type: ignore[attr-defined]
    assert reply.choices[0].finish_reason in ("stop", "length")  # type: ignore[attr-defined]
    assert isinstance(Decimal(str(reply.usage.total_tokens)), Decimal)  # type: ignore[attr-defined]


vastai = pytest.importorskip("vastai")


async def test_the_vastai_sdk_uses_the_vastai_stand_in(standins: Standins) -> None:
    base = standins.base_url("vastai")

    def work() -> dict[str, object]:
        client = vastai.VastAI(api_key=KEY, server_url=base, quiet=True)
        offers = client.search_offers(query="gpu_name=A100_SXM4 num_gpus=1", order="dph_total")
        created = client.create_instance(
            offers[0]["id"], image="ghcr.io/example/batch:1", disk=40, label="sdk-test"
        )
        listed = client.show_instances()
        shown = client.show_instance(created["new_contract"])
        relabelled = client.label_instance(created["new_contract"], "sdk-test-2")
        destroyed = client.destroy_instance(created["new_contract"])
        gone = client.show_instance(created["new_contract"])
        return {
            "offers": offers,
            "created": created,
            "listed": listed,
            "shown": shown,
            "relabelled": relabelled,
            "destroyed": destroyed,
            "gone": gone,
        }

    out = await asyncio.to_thread(work)
    offers = out["offers"]
    assert isinstance(offers, list) and offers
    assert {o["gpu_name"] for o in offers} == {"A100 SXM4"}
    assert all(isinstance(o["dph_total"], float) for o in offers)  # numbers, as Vast.ai sends
    created = out["created"]
    assert isinstance(created, dict) and created["success"] is True
    listed = out["listed"]
    assert isinstance(listed, list) and [i["label"] for i in listed] == ["sdk-test"]
    shown = out["shown"]
    assert isinstance(shown, dict) and shown["id"] == created["new_contract"]
    assert isinstance(shown["extra_env"], dict)  # the client turned [[k, v]] into a dict
    assert out["relabelled"] == {"success": True} and out["destroyed"] == {"success": True}
    assert out["gone"] is None


@pytest.fixture
async def paged() -> AsyncIterator[Standins]:
    running = await start_standins(standin_config().model_copy(update={"models_page_size": 1}))
    try:
        yield running
    finally:
        await running.close()


async def test_the_openai_adapter_reads_every_page_and_sends_max_completion_tokens(
    paged: Standins,
) -> None:
    adapter = adapter_for(paged, "openai")
    exchanges = openapi.record(adapter)
    try:
        offers = await adapter.list_offers()
        ref = await submit(adapter, "openai", "paged", input={"requests": 2, "outputTokens": 3})
        status = await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=10)
    finally:
        await adapter.aclose()
    config = paged.states["openai"].config  # type: ignore[index]
    assert len(offers) == len(config.token_prices) == 3  # one model per page, three pages
    pages = [e.query.get("page", "1") for e in exchanges if e.path.endswith("/models")]
    assert pages[:3] == ["1", "2", "3"]
    sent = [e.body for e in exchanges if e.path.endswith("/chat/completions")]
    assert sent and all("max_tokens" not in b and b["max_completion_tokens"] == 3 for b in sent)
    assert status.state == "Succeeded", status.message
