from __future__ import annotations

from decimal import Decimal

import pytest

from hybridgpu.api.inferencejob import Task
from hybridgpu.routing.cost import (
    DEFAULT_INPUT_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    estimate_cost,
    job_gpu_hours,
    per_gpu_hour_equivalent,
    units_per_request,
)
from hybridgpu.routing.snapshot import PerGPUHour, PerToken, PerUnit

from .routing_fixtures import job


def test_per_gpu_hour_multiplies_duration_and_count() -> None:
    spec = job(estimatedDuration="90m", gpu={"count": 4})
    assert job_gpu_hours(spec) == Decimal(6)
    assert estimate_cost(spec, PerGPUHour(Decimal("2.50"))) == Decimal("15.00")


def test_per_gpu_hour_is_exact_for_odd_durations() -> None:
    spec = job(estimatedDuration="20m")
    cost = estimate_cost(spec, PerGPUHour(Decimal("3")))
    assert isinstance(cost, Decimal)
    assert cost == Decimal(1)


def test_per_token_uses_the_batch_token_counts() -> None:
    spec = job(input={"requests": 1000, "inputTokens": 800, "outputTokens": 200})
    cost = estimate_cost(spec, PerToken(Decimal("0.10"), Decimal("0.40")))
    # 800k prompt tokens at 0.10/M plus 200k generated at 0.40/M.
    assert cost == Decimal("0.08") + Decimal("0.08")


def test_per_token_defaults_when_counts_are_missing() -> None:
    spec = job(input={"requests": 10})
    cost = estimate_cost(spec, PerToken(Decimal(1), Decimal(0)))
    assert cost == Decimal(10 * DEFAULT_INPUT_TOKENS) / 1_000_000
    cost_out = estimate_cost(spec, PerToken(Decimal(0), Decimal(1)))
    assert cost_out == Decimal(10 * DEFAULT_OUTPUT_TOKENS) / 1_000_000


def test_per_pixel_counts_the_default_image_size() -> None:
    spec = job(task="text-to-image", model="stabilityai/sdxl-turbo", input={"requests": 3})
    cost = estimate_cost(spec, PerUnit(Decimal("0.000000001"), "pixel"))
    assert cost == Decimal("0.000000001") * 1024 * 576 * 3


def test_video_costs_frames_times_pixels() -> None:
    assert units_per_request(Task.IMAGE_TO_VIDEO, "pixel") == 25 * units_per_request(
        Task.IMAGE_TO_IMAGE, "pixel"
    )


def test_unknown_unit_counts_one_per_request() -> None:
    spec = job(input={"requests": 7})
    assert estimate_cost(spec, PerUnit(Decimal("0.5"), "request")) == Decimal("3.5")


@pytest.mark.parametrize(("cost", "millis", "expected"), [("3", 5_400_000, "2"), ("4", 0, "4")])
def test_per_gpu_hour_equivalent(cost: str, millis: int, expected: str) -> None:
    assert per_gpu_hour_equivalent(Decimal(cost), millis) == Decimal(expected)
