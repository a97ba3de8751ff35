"""Odd provider answers stop nothing: offers are screened, parse errors are network errors,
status figures are checked, and the provider refresh loop outlives any error."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from hybridgpu.api import limits
from hybridgpu.api.computeprovider import ComputeProviderSpec, ComputeProviderStatus
from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.controller.providers import fresh_offers, provider_status
from hybridgpu.controller.registry import ProviderEntry, Registry
from hybridgpu.handlers import providers as provider_handlers
from hybridgpu.networks import MalformedAnswer, RemoteRef, RemoteStatus
from hybridgpu.networks.adapter import AdapterBase
from hybridgpu.networks.bounds import (
    MAX_USD_PER_GPU_HOUR,
    MAX_USD_PER_MILLION_TOKENS,
    MAX_USD_PER_UNIT,
    MONEY_LIMIT,
    DroppedOffer,
    screen_offers,
)
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.cost import estimate_cost
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour, PerToken, PerUnit
from hybridgpu.units import MONEY_PATTERN, format_money, parse_money
from tests.unit.routing_fixtures import offer

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "sk-live-0123456789abcdef"
SPEC = ComputeProviderSpec.model_validate({"type": "vastai", "endpoint": "https://x.test"})


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"pricing": PerGPUHour(Decimal("1E+999999"))}, "not below the ceiling"),
        ({"pricing": PerGPUHour(Decimal("Infinity"))}, "not a finite number"),
        ({"pricing": PerGPUHour(Decimal("NaN"))}, "not a finite number"),
        ({"pricing": PerGPUHour(Decimal("-0.01"))}, "negative"),
        ({"pricing": PerGPUHour(Decimal("1000000000"))}, "not below the ceiling"),
        ({"pricing": PerToken(Decimal("0.1"), Decimal("-1"))}, "1M output tokens -1 is negative"),
        ({"pricing": PerUnit(Decimal(1), "pixel")}, "price per pixel"),
        ({"available": -3}, "available -3"),
        ({"available": 10**30}, "available"),
        ({"available": 2.5}, "not a whole number"),
        ({"memory_bytes": -1}, "memory bytes"),
        ({"start_latency_seconds": float("inf")}, "start latency"),
        ({"gpu_product": "RTX 4090 (Ti)"}, "not a GPU Feature Discovery product name"),
        ({"region": "r" * 500}, "region"),
    ],
)
def test_an_offer_with_an_odd_figure_is_dropped_with_the_reason(
    bad: dict[str, Any], reason: str
) -> None:
    good = offer()
    kept, dropped = screen_offers([good, replace(good, **bad)])
    assert kept == (good,)
    assert len(dropped) == 1
    assert reason in dropped[0].reason
    assert len(dropped[0].reason) < 200


def test_money_refuses_an_infinite_decimal() -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_money(Decimal("Infinity"))


def test_offers_expire_after_three_refresh_intervals() -> None:
    from datetime import timedelta

    offers = (offer(),)
    minute = timedelta(minutes=1)
    assert fresh_offers(offers, NOW, minute, NOW + 3 * minute) == offers
    assert fresh_offers(offers, NOW, minute, NOW + 3 * minute + timedelta(seconds=1)) == ()
    assert fresh_offers(offers, None, minute, NOW) == ()


class Odd(AdapterBase):
    """An adapter whose answers are whatever the test sets."""

    def __init__(self, answer: Any) -> None:
        super().__init__("odd", SPEC, SECRET, HttpPolicy(failure_threshold=3), {})
        self.answer = answer

    async def list_offers(self) -> list[ExternalOffer]:
        self.client.breaker.record_success()  # as the HTTP layer does for any 2xx
        if isinstance(self.answer, BaseException):
            raise self.answer
        return list(self.answer)

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        assert isinstance(self.answer, RemoteStatus)
        return self.answer


async def test_a_parse_error_is_a_network_error_with_the_credential_redacted() -> None:
    # The secret sits across the 200-character cut: redaction must come first.
    adapter = Odd(KeyError("x" * 190 + SECRET))
    try:
        with pytest.raises(MalformedAnswer) as info:
            await adapter.list_offers()
    finally:
        await adapter.aclose()
    assert SECRET[:8] not in info.value.message
    assert "list_offers: unexpected answer: KeyError" in info.value.message


async def test_unusable_answers_open_the_circuit_and_a_usable_one_resets_the_count() -> None:
    adapter = Odd(ValueError("garbage"))
    try:
        for _ in range(2):
            with pytest.raises(MalformedAnswer):
                await adapter.list_offers()
        adapter.answer = []
        await adapter.list_offers()
        adapter.answer = ValueError("garbage")
        for _ in range(2):
            with pytest.raises(MalformedAnswer):
                await adapter.list_offers()
        assert adapter.circuit_state == "Closed"
        with pytest.raises(MalformedAnswer):
            await adapter.list_offers()
        assert adapter.circuit_state == "Open"
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (RemoteStatus("Running", accrued_usd=Decimal("-2")), "accrued cost -2 is negative"),
        (RemoteStatus("Running", accrued_usd=Decimal("1E+9")), "accrued cost"),
        (RemoteStatus("Running", price_per_gpu_hour=Decimal("Infinity")), "price per GPU-hour"),
        (RemoteStatus("Running", completed=-1), "completed requests"),
    ],
)
async def test_status_figures_that_no_status_write_accepts_are_a_network_error(
    status: RemoteStatus, reason: str
) -> None:
    adapter = Odd(status)
    try:
        with pytest.raises(MalformedAnswer, match=reason):
            await adapter.status(RemoteRef("odd", "1", "k"))
    finally:
        await adapter.aclose()


def test_provider_status_lists_bounded_dropped_offers_and_passes_the_schema() -> None:
    entry = ProviderEntry(name="p", spec=SPEC, adapter=Odd([]), offers=(offer(),) * 150)
    dropped = [DroppedOffer("X" * 100, "r" * 400)] * 40
    status = provider_status(entry, True, "ok", 1, [], NOW, dropped)
    assert len(status["offers"]) == 100
    assert len(status["droppedOffers"]) == 32
    parsed = ComputeProviderStatus.model_validate(status)
    assert parsed.dropped_offers[0].gpu_product == "X" * 63


class Kube:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    async def patch_provider_status(self, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)


class Flaky:
    """A fake adapter whose first refresh fails with an error nobody expected."""

    name = "flaky"
    circuit_state = "Closed"
    error_rate = 0.0
    start_latency = (None, None)

    def __init__(self) -> None:
        self.calls = 0

    async def list_offers(self) -> list[ExternalOffer]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug, not the network")
        return [offer(provider="flaky")]

    async def aclose(self) -> None:
        pass


async def test_the_refresh_loop_survives_an_unexpected_error() -> None:
    spec = {"type": "vastai", "endpoint": "https://x.test", "priceRefreshInterval": "100ms"}
    registry = Registry()
    adapter = Flaky()
    registry.providers["flaky"] = ProviderEntry(
        name="flaky",
        spec=ComputeProviderSpec.model_validate(spec),
        adapter=adapter,  # type: ignore[arg-type]
    )
    kube = Kube()
    memo = kopf.Memo(kube=kube, registry=registry)
    setter: FlagSetter = FlagSetter()  # type: ignore[type-arg]
    daemon = asyncio.create_task(
        provider_handlers.keep_provider(
            stopped=AsyncFlagWaiter(setter),
            name="flaky",
            body={"metadata": {"name": "flaky", "generation": 1}, "spec": spec},
            memo=memo,
            logger=logging.getLogger("test"),
        )
    )
    try:
        for _ in range(200):
            if registry.providers["flaky"].ready:
                break
            await asyncio.sleep(0.01)
    finally:
        setter.set()
        await asyncio.wait_for(daemon, 2.0)
    ready = [c for s in kube.statuses for c in s["conditions"] if c["type"] == "Ready"]
    assert "refresh failed: RuntimeError" in ready[0]["message"]
    assert ready[-1]["status"] == "True"
    assert registry.providers["flaky"].offers


@pytest.mark.parametrize("task", [t.value for t in Task])
@pytest.mark.parametrize(
    "pricing",
    [
        PerGPUHour(MAX_USD_PER_GPU_HOUR - Decimal("0.01")),
        PerToken(MAX_USD_PER_MILLION_TOKENS, MAX_USD_PER_MILLION_TOKENS),
        PerUnit(MAX_USD_PER_UNIT, "pixel"),
        PerUnit(MAX_USD_PER_UNIT, "second"),
    ],
    ids=["gpu-hour", "token", "pixel", "second"],
)
def test_no_estimate_from_a_screened_offer_breaks_the_money_pattern(
    task: str, pricing: PerGPUHour | PerToken | PerUnit
) -> None:
    # The largest job the schema admits, priced at the ceilings screening lets through.
    largest = InferenceJobSpec.model_validate(
        {
            "task": task,
            "model": "m",
            "image": "i",
            "input": {
                "requests": limits.MAX_REQUESTS,
                "inputTokens": limits.MAX_INPUT_TOKENS,
                "outputTokens": limits.MAX_OUTPUT_TOKENS,
            },
            "gpu": {"count": 8},
            "estimatedDuration": f"{limits.MAX_ESTIMATED_DURATION_HOURS}h",
        }
    )
    estimate = estimate_cost(largest, pricing)
    assert 0 <= estimate < MONEY_LIMIT
    assert re.fullmatch(MONEY_PATTERN, format_money(estimate, 8))


async def test_a_networks_status_text_reaches_status_redacted_on_one_line_and_bounded() -> None:
    # The secret straddles the cut: redacting after cutting would leak its first half.
    text = "x" * 240 + SECRET + "\n" + "y" * 10_000
    adapter = Odd(RemoteStatus("Running", message=text))
    try:
        status = await adapter.status(RemoteRef("odd", "1", "k"))
    finally:
        await adapter.aclose()
    assert len(status.message) <= 256
    assert SECRET[:6] not in status.message
    assert "\n" not in status.message
