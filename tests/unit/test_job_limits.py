"""One job author cannot exhaust the operator: schema bounds, lazy request building, bounded
inline and ConfigMap inputs (see hybridgpu.api.limits)."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from hybridgpu.api import limits
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.batch import BatchRunner, RequestResult, memory_results
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.requests import InputTooLarge, batch_requests, load_request_items
from hybridgpu.results.reader import Request
from hybridgpu.results.source import RequestSource
from hybridgpu.units import parse_duration
from tests.hostile.corpus import FAILED_BY_OPERATOR, REJECTED_BY_APISERVER, HostileJob

MIB = 2**20


def spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task": "llm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "input": {"requests": 10},
        "estimatedDuration": "1h",
    }
    data.update(overrides)
    return data


def refused(data: dict[str, Any]) -> str:
    """The first error of validating ``data`` as a spec, as the operator reports it."""
    with pytest.raises(ValidationError) as info:
        InferenceJobSpec.model_validate(data)
    first = info.value.errors()[0]
    # A check of the whole spec has an empty location: it is the spec itself.
    return ".".join(["spec", *(str(p) for p in first["loc"])]) + ": " + first["msg"]


def peak_bytes(run: Any) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "hostile", REJECTED_BY_APISERVER + FAILED_BY_OPERATOR, ids=lambda h: h.name
)
def test_the_operator_refuses_what_is_beyond_a_jobs_bounds_naming_the_field(
    hostile: HostileJob,
) -> None:
    message = refused(spec(**hostile.spec))
    assert message.startswith(hostile.model_field + ":"), message
    if hostile in FAILED_BY_OPERATOR:
        # Bounds no schema holds: the message says how big the input is and what to do.
        assert hostile.words in message and "configMapRef" in message, message


def test_the_bounds_themselves_are_accepted() -> None:
    job = InferenceJobSpec.model_validate(
        spec(
            input={
                "requests": limits.MAX_REQUESTS,
                "inputTokens": 131_072,
                "outputTokens": 131_072,
            },
            command=["x" * 4096] * 2,
            env=[{"name": "A", "value": "v" * 8192}],
            estimatedDuration="8760h",
        )
    )
    assert job.input.requests == 1_000_000


def test_a_duration_beyond_what_timedelta_holds_is_an_input_error_not_an_overflow() -> None:
    with pytest.raises(ValueError, match="longer than any duration"):
        parse_duration("99999999999h")
    assert "spec.estimatedDuration" in refused(spec(estimatedDuration="99999999999h"))


def test_a_million_synthetic_requests_are_not_built_at_once() -> None:
    job = InferenceJobSpec.model_validate(
        spec(input={"requests": 1_000_000, "inputTokens": 1000, "outputTokens": 10})
    )
    built: list[Any] = []
    peak = peak_bytes(lambda: built.append(batch_requests(job)))
    bodies = built[0]
    assert len(bodies) == 1_000_000
    assert peak < 1 * MIB
    assert bodies[999_999]["max_tokens"] == 10
    assert len(bodies[-1]["messages"][0]["content"].split()) == 1000
    with pytest.raises(IndexError):
        bodies[1_000_000]


def test_bodies_are_copies_so_an_adapter_changing_one_changes_no_other() -> None:
    job = InferenceJobSpec.model_validate(spec())
    bodies = batch_requests(job).map(lambda b: {**b, "model": "m"})
    first = bodies[0]
    first["max_tokens"] = 1
    assert bodies[0]["max_tokens"] == 256
    inline = InferenceJobSpec.model_validate(
        spec(input={"requests": 1, "inline": [{"prompt": "a"}]})
    )
    batch_requests(inline)[0]["prompt"] = "changed"
    assert inline.input.inline == [{"prompt": "a"}]


async def test_a_batch_of_a_million_requests_runs_in_bounded_memory() -> None:
    job = InferenceJobSpec.model_validate(spec(input={"requests": 1_000_000, "inputTokens": 100}))
    sent = 0

    async def send(request: Request) -> RequestResult:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        return RequestResult(Decimal("0.000001"), line=b'{"custom_id":"%d"}' % request.index)

    runner = BatchRunner(8)
    source = RequestSource.of_bodies(batch_requests(job))
    tracemalloc.start()
    try:
        batch = await runner.start(
            "k", memory_results("k", source), send, None, lambda b: Decimal(0), durable=False
        )
        while batch.checkpoint.count() < 4000:
            await asyncio.sleep(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await runner.aclose()
    # A chunk of 1024 requests and its lines at a time, whatever the batch's size.
    assert peak < 4 * MIB
    assert sent >= 4000


def test_a_restarted_batch_costs_a_million_prior_requests_without_building_them() -> None:
    job = InferenceJobSpec.model_validate(spec(input={"requests": 1_000_000, "inputTokens": 4000}))
    calls = 0

    def prior_cost(body: dict[str, Any]) -> Decimal:
        nonlocal calls
        calls += 1
        return Decimal("0.001")

    async def send(request: Request) -> RequestResult:
        return RequestResult(Decimal(0))

    async def go() -> Decimal:
        runner = BatchRunner(2)
        started = time.monotonic()
        source = RequestSource.of_bodies(batch_requests(job))
        batch = await runner.start(
            "k", memory_results("k", source), send, Checkpoint(999_990), prior_cost, durable=False
        )
        assert time.monotonic() - started < 1.0
        await runner.aclose()
        return batch.accrued_usd

    assert asyncio.run(go()) == Decimal("999.990")
    assert calls == 1


async def test_a_request_whose_answer_cannot_be_read_fails_the_batch() -> None:
    async def send(request: Request) -> RequestResult:
        raise KeyError("usage")

    runner = BatchRunner(2)
    job = InferenceJobSpec.model_validate(spec())
    source = RequestSource.of_bodies(batch_requests(job))
    batch = await runner.start(
        "k", memory_results("k", source), send, None, lambda b: Decimal(0), durable=False
    )
    assert batch.task is not None
    await batch.task
    assert batch.status().state == "Failed"
    assert "unexpected answer (KeyError)" in batch.status().message


FIELD = "spec.input.configMapRef"


def test_configmap_requests_are_read_as_json_or_yaml() -> None:
    assert load_request_items('[{"prompt": "a"}]', FIELD) == [{"prompt": "a"}]
    assert load_request_items("- prompt: a\n- prompt: b\n", FIELD) == [
        {"prompt": "a"},
        {"prompt": "b"},
    ]


def test_yaml_aliases_are_refused_so_a_small_value_cannot_expand() -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    with pytest.raises(ValueError, match=r"^spec\.input\.configMapRef: .*aliases"):
        load_request_items(bomb, FIELD)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" + ",".join(["{}"] * (limits.MAX_CONFIGMAP_ITEMS + 1)) + "]", "at most 100000"),
        ('[{"p": "' + "x" * (limits.MAX_CONFIGMAP_INPUT_BYTES + 1) + '"}]', "bytes"),
    ],
    ids=["items", "bytes"],
)
def test_configmap_requests_beyond_the_bounds_are_refused(text: str, match: str) -> None:
    with pytest.raises(InputTooLarge, match=f"^{FIELD}: .*{match}"):
        load_request_items(text, FIELD)


@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2]", "[{", "- a\n-: b: c"])
def test_configmap_values_that_are_no_list_of_objects_name_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{FIELD}: "):
        load_request_items(text, FIELD)
