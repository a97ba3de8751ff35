"""RemoteRef, Checkpoint, GPU name mapping, request building, container helpers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks import Checkpoint, RemoteRef, RemoteStatus
from hybridgpu.networks.akash import build_sdl
from hybridgpu.networks.container import (
    RemoteJob,
    accrued,
    decimal_of,
    epoch_of,
    server_time,
    unwrap,
)
from hybridgpu.networks.gpu_names import from_akash, from_nosana, from_vast, names_for
from hybridgpu.networks.livepeer import livepeer_body
from hybridgpu.networks.nosana import job_definition
from hybridgpu.networks.requests import batch_requests


def job(**extra: object) -> InferenceJobSpec:
    data: dict[str, object] = {
        "task": "llm",
        "model": "m",
        "input": {"requests": 3},
        "estimatedDuration": "30m",
    }
    data.update(extra)
    return InferenceJobSpec.model_validate(data)


def test_remote_ref_round_trips_and_rejects_garbage() -> None:
    ref = RemoteRef("vast-eu", "12345", "uid-1-attempt-2")
    assert RemoteRef.from_str(ref.to_str()) == ref
    with pytest.raises(ValueError, match="provider\\|id\\|idempotencyKey"):
        RemoteRef.from_str("only|two")
    with pytest.raises(ValueError, match="must not contain"):
        RemoteRef("a|b", "1", "k").to_str()


@given(st.sets(st.integers(min_value=0, max_value=400), max_size=120))
def test_checkpoint_round_trips_any_set_of_completed_requests(done: set[int]) -> None:
    checkpoint = Checkpoint.from_done(done)
    assert {i for i in range(401) if checkpoint.is_done(i)} == done
    assert Checkpoint.from_str(checkpoint.to_str()) == checkpoint
    assert checkpoint.count() == len(done)


def test_checkpoint_text_is_compact() -> None:
    checkpoint = Checkpoint.from_done([*range(120), 122, 123, 124, 125, 130])
    assert checkpoint.to_str() == "120+122-125,130"
    assert Checkpoint.from_str("120+122-125,130") == checkpoint
    assert Checkpoint(5).with_done(5) == Checkpoint(6)


@pytest.mark.parametrize("text", ["", "-1", "5+3", "5+9-7", "x", "5+a"])
def test_checkpoint_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        Checkpoint.from_str(text)


def test_remote_status_terminal() -> None:
    assert RemoteStatus("Lost").terminal and not RemoteStatus("Running").terminal


def test_gpu_names_map_both_ways() -> None:
    assert from_vast("A100 SXM4", 81920) == "NVIDIA-A100-SXM4-80GB"
    assert from_vast("A100 SXM4", 40960) == "NVIDIA-A100-SXM4-40GB"
    assert from_vast("RTX 4090", 24564) == "NVIDIA-GeForce-RTX-4090"
    assert from_akash("h100", "80Gi", "sxm") == "NVIDIA-H100-80GB-HBM3"
    assert from_akash("rtx4090", "24Gi", "pcie") == "NVIDIA-GeForce-RTX-4090"
    assert from_nosana("NVIDIA 4090") == "NVIDIA-GeForce-RTX-4090"
    assert names_for("Unknown-GPU").vast == "Unknown-GPU"


def test_requests_come_from_argument_then_inline_then_synthetic() -> None:
    inline = job(
        input={"requests": 2, "inline": [{"messages": [{"role": "user", "content": "a"}]}]}
    )
    assert list(batch_requests(inline, [{"x": 1}])) == [{"x": 1}]
    assert list(batch_requests(inline)) == inline.input.inline
    synthetic = batch_requests(job(input={"requests": 4, "inputTokens": 5, "outputTokens": 7}))
    assert len(synthetic) == 4
    assert synthetic[0]["max_tokens"] == 7
    assert len(synthetic[0]["messages"][0]["content"].split()) == 5


def test_livepeer_body_fills_the_model_field_the_schema_requires() -> None:
    from hybridgpu.api.inferencejob import Task

    assert livepeer_body(Task.TEXT_TO_IMAGE, "sd", {"prompt": "p"})["model_id"] == "sd"
    assert livepeer_body(Task.LLM, "llama", {"messages": []})["model"] == "llama"
    assert livepeer_body(Task.TEXT_TO_IMAGE, "sd", {"model_id": "other"})["model_id"] == "other"


def test_sdl_asks_for_the_gpu_model_memory_count_and_carries_the_key() -> None:
    spec = job(task="container", image="img:1", model=None, gpu={"count": 2, "minMemory": "40Gi"})
    sdl = yaml.safe_load(build_sdl(spec, "key-9", "NVIDIA-A100-SXM4-80GB"))
    gpu = sdl["profiles"]["compute"]["job"]["resources"]["gpu"]
    assert gpu["units"] == 2
    assert gpu["attributes"]["vendor"]["nvidia"] == [
        {"model": "a100", "ram": "80Gi", "interface": "sxm"}
    ]
    assert "HYBRIDGPU_IDEMPOTENCY_KEY=key-9" in sdl["services"]["job"]["env"]
    # The bid ceiling in uact per block (the Console rewrites the denom to its grant denom):
    # no cap means 10 USD/GPU-hour, x 2 GPUs x 10^6 / 600 blocks per hour.
    pricing = sdl["profiles"]["placement"]["dcloud"]["pricing"]["job"]
    assert pricing == {"denom": "uact", "amount": 33334}


def test_nosana_definition_is_stable_for_a_key() -> None:
    spec = job(task="container", image="img:1", model=None)
    assert job_definition(spec, "k") == job_definition(spec, "k")
    assert job_definition(spec, "k") != job_definition(spec, "other")
    assert job_definition(spec, "k")["ops"][0]["args"]["image"] == "img:1"


def test_container_helpers() -> None:
    assert unwrap({"data": {"data": {"dseq": "1"}}}) == {"dseq": "1"}
    assert unwrap({"data": {"deployments": [], "pagination": {}}}) == {
        "deployments": [],
        "pagination": {},
    }
    assert decimal_of(0.1) == Decimal("0.1")  # via str: no binary-float noise
    assert decimal_of("x") is None and decimal_of(True) is None
    assert epoch_of("1970-01-01T00:01:00Z") == 60.0
    assert accrued(Decimal("3.6"), 100.0) == Decimal("0.1")
    assert accrued(None, 1.0) == Decimal(0)
    assert accrued(Decimal("3.6"), None) == Decimal(0)


def test_run_time_comes_from_the_network_clock() -> None:
    running = RemoteJob(
        "Running", price_per_hour=Decimal("0.6"), gpus=2, started=1000.0, now=4600.0
    )
    assert running.run_seconds() == 3600.0
    assert running.price_per_gpu_hour == Decimal("0.3")
    ended = RemoteJob("Succeeded", started=1000.0, ended=1900.0, now=99_999.0)
    assert ended.run_seconds() == 900.0
    reported = RemoteJob("Succeeded", started=1000.0, ended=1900.0, ran_seconds=60.0)
    assert reported.run_seconds() == 60.0
    assert RemoteJob("Pending").run_seconds() is None


def test_server_time_reads_the_date_header() -> None:
    dated = httpx.Response(200, headers={"Date": "Tue, 01 Dec 2026 10:00:00 GMT"})
    assert server_time(dated) == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()
    undated = httpx.Response(200)
    assert abs(server_time(undated) - time.time()) < 5
    garbled = httpx.Response(200, headers={"Date": "yesterday"})
    assert abs(server_time(garbled) - time.time()) < 5


@pytest.mark.parametrize(
    ("provider_tier", "offer_tier", "expected"),
    [
        ("verified", "community", "community"),  # a Nosana community market
        ("community", "audited", "community"),  # an offer never outranks its provider
        ("audited", None, "audited"),
    ],
)
def test_an_offer_is_trusted_at_the_lower_of_its_tier_and_its_providers(
    provider_tier: str, offer_tier: str | None, expected: str
) -> None:
    from hybridgpu.api.computeprovider import ComputeProviderSpec, TrustTier
    from hybridgpu.networks.base import make_adapter
    from hybridgpu.routing.snapshot import PerGPUHour

    spec = ComputeProviderSpec.model_validate(
        {"type": "vastai", "endpoint": "https://vast.test", "trustTier": provider_tier}
    )
    adapter = make_adapter("p", spec, None)
    offer = adapter.offer(  # type: ignore[attr-defined]
        "NVIDIA-GeForce-RTX-4090",
        memory_bytes=24 * 2**30,
        pricing=PerGPUHour(Decimal("0.3")),
        available=1,
        typical_start_seconds=30,
        trust_tier=TrustTier(offer_tier) if offer_tier else None,
    )
    assert offer.trust_tier is TrustTier(expected)
