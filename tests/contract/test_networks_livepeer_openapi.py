"""The Livepeer adapter's requests and the stand-in's responses, checked against the
gateway's published OpenAPI document (tests/contract/specs/, see README there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from hybridgpu.standins import Standins
from tests.contract.networks_helpers import (
    KEY,
    adapter_for,
    control,
    job_spec,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
SPEC_PATH = Path(__file__).parent / "specs" / "livepeer-ai-gateway.openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
URI = "urn:livepeer-ai-gateway"
REGISTRY: Registry[Any] = Registry().with_resource(URI, Resource(SPEC, specification=DRAFT202012))


# go-livepeer server/handlers.go: APIErrorResponse{Error: &APIError{Message}}, every error
# the gateway itself answers (the published spec's HTTPError is the runner's shape).
GATEWAY_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message"],
            "additionalProperties": False,
            "properties": {"message": {"type": "string"}},
        }
    },
}
# go-livepeer server/ai_mediaserver.go LLM(): Model, Messages (non-empty), Stream, MaxTokens.
LLM_REQUIRED = {"model", "messages", "stream", "max_tokens"}


def _validate(instance: Any, schema_ref: str) -> None:
    schema = {"$ref": f"{URI}{schema_ref}"}
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(instance)


def request_schema(path: str) -> str:
    """The JSON request body schema ref of POST ``path`` in the spec."""
    operation = SPEC["paths"][path]["post"]
    ref: str = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref


def response_schema(path: str, status: int) -> str:
    """The response schema ref of POST ``path`` for ``status`` (fails if undeclared)."""
    responses = SPEC["paths"][path]["post"]["responses"]
    assert str(status) in responses, f"{status} is not a declared response of {path}"
    ref: str = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
    return ref


def test_the_spec_copy_is_the_published_gateway_spec() -> None:
    assert SPEC["info"]["title"] == "Livepeer AI Runner"
    assert {"/text-to-image", "/llm", "/text-to-speech"} <= set(SPEC["paths"])
    with pytest.raises(jsonschema.ValidationError):
        _validate({"prompt": "a fox"}, request_schema("/text-to-image"))  # model_id is required


@pytest.mark.parametrize(
    ("task", "model", "path"),
    [
        ("text-to-image", "SG161222/RealVisXL_V4.0_Lightning", "/text-to-image"),
        ("llm", "meta-llama/Meta-Llama-3.1-8B-Instruct", "/llm"),
        ("text-to-speech", "parler-tts/parler-tts-large-v1", "/text-to-speech"),
    ],
)
async def test_adapter_requests_and_stand_in_responses_match_the_spec(
    standins: Standins, task: str, model: str, path: str
) -> None:
    adapter = adapter_for(standins, "livepeer")
    exchanges: list[tuple[str, Any, int, Any]] = []

    async def on_response(response: httpx.Response) -> None:
        await response.aread()
        body = json.loads(response.request.content) if response.request.content else None
        exchanges.append((response.request.url.path, body, response.status_code, response.json()))

    adapter.client._client.event_hooks["response"].append(on_response)  # type: ignore[attr-defined]
    await control(standins, "livepeer", "/_faults", {"failNext": 1, "errorStatus": 500})
    job = job_spec("livepeer", task=task, model=model, input={"requests": 3, "inputTokens": 4})
    try:
        ref = await submit(adapter, "livepeer", f"spec-{task}", job=job)
        status = await wait_for(adapter, ref, {"Succeeded", "Failed"}, timeout=10)
    finally:
        await adapter.aclose()
    assert status.state == "Succeeded", status.message
    assert len(exchanges) == 4  # one 500 retried, then three 200s
    statuses = sorted(code for _, _, code, _ in exchanges)
    assert statuses == [200, 200, 200, 500]
    for sent_path, body, code, answer in exchanges:
        assert sent_path == path
        _validate(body, request_schema(path))
        if path == "/llm":
            assert set(body) >= LLM_REQUIRED and body["messages"] and body["stream"] is False
        if code == 200:
            _validate(answer, response_schema(path, code))
        else:
            jsonschema.validate(answer, GATEWAY_ERROR)
            assert answer["error"]["message"] == "Internal Server Error"


async def test_stand_in_errors_are_the_gateways(standins: Standins) -> None:
    base = standins.base_url("livepeer")
    auth = {"Authorization": f"Bearer {KEY}"}
    llm = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with httpx.AsyncClient(base_url=base) as client:
        unauthorized = await client.post("/text-to-image", json={"prompt": "x", "model_id": "m"})
        no_stream = await client.post("/llm", json=llm, headers=auth)
        no_messages = await client.post(
            "/llm", json={**llm, "stream": False, "messages": []}, headers=auth
        )
        complete = await client.post("/llm", json={**llm, "stream": False}, headers=auth)
        default_model = await client.post("/text-to-image", json={"prompt": "x"}, headers=auth)
    assert unauthorized.status_code == 401
    _validate(unauthorized.json(), response_schema("/text-to-image", 401))
    for refused in (no_stream, no_messages):
        assert refused.status_code == 400
        jsonschema.validate(refused.json(), GATEWAY_ERROR)
        assert refused.json()["error"]["message"] == "missing required fields"
    # The published spec requires only messages; the gateway wants all four.
    _validate({**llm, "messages": llm["messages"]}, request_schema("/llm"))
    assert complete.status_code == 200
    _validate(complete.json(), response_schema("/llm", 200))
    # The gateway fills in the pipeline's default model; the spec's 422 is the runner's.
    assert default_model.status_code == 200
    _validate(default_model.json(), response_schema("/text-to-image", 200))


async def test_a_streamed_llm_answer_is_server_sent_llm_responses(standins: Standins) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=standins.base_url("livepeer")) as client:
        answer = await client.post("/llm", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.headers["content-type"].startswith("text/event-stream")
    chunks = [
        json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")
    ]
    assert len(chunks) == 2 and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for chunk in chunks:  # go-livepeer writes each worker.LLMResponse as one data: line
        _validate(chunk, response_schema("/llm", 200))
