"""The API models: validation, units and the errors users see."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hybridgpu.api import ComputeProvider, InferenceJob, RoutingPolicy
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KINDS = {
    "InferenceJob": InferenceJob,
    "RoutingPolicy": RoutingPolicy,
    "ComputeProvider": ComputeProvider,
}


def _spec(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task": "llm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "input": {"requests": 10},
        "estimatedDuration": "30m",
    }
    base.update(overrides)
    return base


def _error_locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.errors()]


def test_every_example_parses_with_the_models() -> None:
    seen = set()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in KINDS:
                KINDS[doc["kind"]].model_validate(doc)
                seen.add(doc["kind"])
    assert seen == set(KINDS)


def test_units_are_parsed_into_decimal_and_timedelta() -> None:
    spec = InferenceJobSpec.model_validate(
        _spec(maxPricePerGPUHour="2.50", maxCost="10", startWithin="1h30m", gpu={"count": 2})
    )
    assert spec.max_price_per_gpu_hour == Decimal("2.50")
    assert spec.max_cost == Decimal("10")
    assert spec.start_within == timedelta(minutes=90)
    assert spec.gpu_hours() == Decimal(1)  # 30 minutes on two GPUs
    wire = spec.to_api()
    assert wire["maxPricePerGPUHour"] == "2.5"
    assert wire["startWithin"] == "1h30m"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"maxPricePerGPUHour": 2.5}, "maxPricePerGPUHour", "never floats"),
        ({"maxCost": "-1"}, "maxCost", "decimal string"),
        ({"estimatedDuration": "ten minutes"}, "estimatedDuration", "not a duration"),
        ({"gpu": {"count": 9}}, "gpu.count", "less than or equal to 8"),
        ({"gpu": {"products": []}}, "gpu.products", "at least 1"),
        ({"gpu": {"minMemory": "24 GB"}}, "gpu.minMemory", "pattern"),
        ({"task": "painting"}, "task", "llm"),
        ({"placement": "Moon"}, "placement", "InCluster"),
        ({"input": {"requests": 0}}, "input.requests", "greater than or equal to 1"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_bad_fields_are_named(overrides: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        InferenceJobSpec.model_validate(_spec(**overrides))
    assert field in _error_locs(info.value)
    assert words in str(info.value)


def test_container_task_needs_an_image_and_others_need_a_model() -> None:
    with pytest.raises(ValidationError, match=r"spec\.image is required"):
        InferenceJobSpec.model_validate(_spec(task="container", model=None))
    with pytest.raises(ValidationError, match=r"spec\.model is required"):
        InferenceJobSpec.model_validate(_spec(model=None))
    ok = InferenceJobSpec.model_validate(_spec(task="container", model=None, image="busybox"))
    assert ok.image == "busybox"


def test_inline_and_config_map_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="at most one of source, inline and configMapRef"):
        InferenceJobSpec.model_validate(
            _spec(
                input={
                    "requests": 1,
                    "inline": [{"p": 1}],
                    "configMapRef": {"name": "a", "key": "b"},
                }
            )
        )


def test_policy_defaults_and_price_lookup() -> None:
    policy = RoutingPolicySpec.model_validate(
        {
            "inCluster": {
                "gpuPrices": [
                    {"gpuProduct": "Tesla-T4", "pricePerGPUHour": "0.2"},
                    {"gpuProduct": "default", "pricePerGPUHour": "0.6"},
                ]
            }
        }
    )
    assert policy.in_cluster.price_for("Tesla-T4") == Decimal("0.2")
    assert policy.in_cluster.price_for("NVIDIA-A10") == Decimal("0.6")
    assert policy.failover.max_attempts == 3
    assert policy.in_cluster.max_queue_time == timedelta(minutes=5)
    with pytest.raises(ValidationError, match="at least one weight"):
        RoutingPolicySpec.model_validate(
            {"weights": {"price": 0, "latency": 0, "reliability": 0, "carbon": 0}}
        )


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://dream-gateway.livepeer.cloud", True),
        ("https://console-api.akash.network/v1", True),
        ("http://127.0.0.1:18081", True),
        ("http://localhost:8080/api/v0", True),
        ("http://gateway.example.com", False),
        ("ftp://x", False),
    ],
)
def test_provider_endpoint_is_https_except_on_loopback(endpoint: str, ok: bool) -> None:
    doc = {"type": "livepeer", "endpoint": endpoint}
    if ok:
        assert ComputeProvider.model_validate({"spec": doc}).spec.endpoint == endpoint
    else:
        with pytest.raises(ValidationError) as info:
            ComputeProvider.model_validate({"spec": doc})
        assert "spec.endpoint" in _error_locs(info.value)


def test_deferral_is_off_unless_asked_for_and_its_fields_are_checked() -> None:
    assert RoutingPolicySpec.model_validate({}).deferral is None
    deferral = RoutingPolicySpec.model_validate({"deferral": {}}).deferral
    assert deferral is not None
    assert (deferral.max_premium_percent, deferral.max_wait) == (10, timedelta(days=14))
    with pytest.raises(ValidationError, match="maxPremiumPercent"):
        RoutingPolicySpec.model_validate({"deferral": {"maxPremiumPercent": 5000}})
    with pytest.raises(ValidationError, match=r"spec\.deferral\.maxWait: must be above 0"):
        RoutingPolicySpec.model_validate({"deferral": {"maxWait": "0s"}})
