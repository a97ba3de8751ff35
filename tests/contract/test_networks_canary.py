"""A canary credential must never appear in logs, exceptions, statuses or reprs."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from hybridgpu.networks import NetworkError, make_adapter
from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import NETWORKS
from tests.contract.networks_helpers import (
    FAST,
    adapter_for,
    control,
    provider_spec,
    standin_config,
    submit,
    wait_for,
)

CANARY = "canary-SECRET-5f1c9a7e3b"
LOGGERS = ("", "httpx", "httpcore", "hybridgpu", "aiohttp", "asyncio")


@pytest.fixture
async def canary_standins() -> Any:
    running = await start_standins(standin_config(key=CANARY))
    try:
        yield running
    finally:
        await running.close()


async def _exercise(running: Standins, network: str, seen: list[str]) -> None:
    """Submit, poll, fail and cancel with faults on; collect everything observable."""
    adapter = adapter_for(running, network, credential=CANARY)
    seen.append(repr(adapter))
    try:
        offers = await adapter.list_offers()
        seen.extend(repr(o) for o in offers)
        first: dict[str, object] = {"failNext": 1, "echoCredential": True}
        if network == "livepeer":  # go-livepeer masks 5xx messages: an echo needs a 4xx
            first["errorStatus"] = 400
        await control(running, network, "/_faults", first)
        ref = await submit(adapter, network, "canary")
        seen += [repr(ref), ref.to_str()]
        status = await wait_for(adapter, ref, {"Running", "Succeeded", "Failed"}, timeout=10)
        seen.append(repr(status))
        await control(running, network, "/_faults", {**first, "failNext": 0, "errorRate": 1.0})
        if network in ("livepeer", "openai"):  # the batch fails in the background
            seen.append(repr(await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=10)))
        for call in (
            adapter.status(ref),
            adapter.list_offers(),
            adapter.cancel(ref),
            adapter.list_offers(),
            adapter.list_offers(),
        ):
            try:
                seen.append(repr(await call))
            except NetworkError as exc:
                seen += [
                    str(exc),
                    repr(exc),
                    exc.message,
                    repr(exc.__cause__),
                    repr(exc.__context__),
                ]
        await control(
            running,
            network,
            "/_faults",
            {"errorStatus": 400, "errorRate": 1.0, "echoCredential": True},
        )
        try:
            second = await submit(adapter, network, "canary-2", cap=Decimal(1))
        except NetworkError as exc:
            seen += [str(exc), repr(exc)]
        else:
            seen.append(repr(await adapter.status(ref)))
            if network in ("livepeer", "openai"):  # its 400s surface in the batch's status
                states = {"Failed", "Succeeded"}
                seen.append(repr(await wait_for(adapter, second, states, timeout=10)))
        seen += [adapter.circuit_state, repr(adapter.start_latency)]
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("network", NETWORKS)
async def test_canary_credential_never_leaks(
    canary_standins: Standins, network: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Through caplog, which puts the levels back: a root logger left at DEBUG filled every
    # later failure's captured log with urllib3's requests.
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    seen: list[str] = []
    await _exercise(canary_standins, network, seen)

    stats = await control(canary_standins, network, "/_stats")
    assert stats["requests"] > 0 and stats["unauthorized"] == 0, "the canary was really sent"
    assert caplog.records, "logging was captured"
    everything = "\n".join(seen) + caplog.text
    assert "injected fault" in everything, "errors were provoked"
    assert "[redacted]" in everything, "the echoed canary was redacted, not merely absent"
    for text in seen:
        assert CANARY not in text
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in repr(record.args)
    assert CANARY not in caplog.text


async def test_the_stand_in_really_echoes_the_canary(canary_standins: Standins) -> None:
    """Guard for the test above: without redaction the canary would have leaked."""
    import httpx

    await control(canary_standins, "vastai", "/_faults", {"failNext": 1, "echoCredential": True})
    async with httpx.AsyncClient() as client:
        response = await client.post(
            canary_standins.base_url("vastai") + "/api/v0/bundles/",
            json={},
            headers={"Authorization": f"Bearer {CANARY}"},
        )
    assert CANARY in response.text


async def test_adapter_without_credential_sends_none(canary_standins: Standins) -> None:
    adapter = make_adapter("anon", provider_spec(canary_standins, "vastai"), None, http_policy=FAST)
    try:
        with pytest.raises(NetworkError, match="credential refused"):
            await adapter.list_offers()
    finally:
        await adapter.aclose()
