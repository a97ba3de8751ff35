"""Odd answers of a network stop nothing: stand-ins answer non-JSON 200s, prices such as
``1E+999999``, negative or billion-dollar figures, and capacities of the wrong type (the
``malformedNext`` and ``replaceFields`` faults); the adapters answer with network errors, the
provider refresh drops the offers with a reason in status, and routing goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridgpu.api.computeprovider import ComputeProvider, ComputeProviderStatus
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.commands.quote import quote_provider
from hybridgpu.controller.providers import provider_status, refresh
from hybridgpu.controller.registry import ProviderEntry
from hybridgpu.networks import MalformedAnswer, NetworkError
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import Snapshot
from hybridgpu.standins import Standins
from tests.contract.networks_helpers import (
    KEY,
    adapter_for,
    control,
    job_spec,
    provider_spec,
    standins,
    submit,
    wait_for,
)
from tests.hostile.corpus import ODD_ANSWERS, OddAnswer

__all__ = ["standins"]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OFFER_NETWORKS = ("akash", "openai", "nosana", "vastai")

# (network, the stand-in's price field) for networks whose answer carries the price.
PRICE_FIELDS = (
    ("vastai", "dph_total"),
    ("nosana", "usd_reward_per_hour"),
    ("openai", "input_token_price"),
)
# Prices in the spec, so submission itself asks the network nothing.
PRICED: dict[str, dict[str, Any]] = {
    "openai": {
        "tokenPrices": [
            {
                "model": "meta-llama/Llama-3.3-70B-Instruct",
                "inputPerMillion": "0.1",
                "outputPerMillion": "0.4",
            }
        ]
    }
}
ODD_PRICES: tuple[Any, ...] = (
    {"$raw": "1E+999999"},
    "1E+999999",
    "-0.25",
    "1000000000",
    "Infinity",
)


@pytest.mark.parametrize("network", OFFER_NETWORKS)
async def test_a_non_json_200_is_a_network_error(standins: Standins, network: str) -> None:
    await control(standins, network, "/_faults", {"malformedNext": 10})
    adapter = adapter_for(standins, network)
    try:
        with pytest.raises(MalformedAnswer, match="list_offers: unexpected answer: not JSON"):
            await adapter.list_offers()
        # A network answering garbage counts as failing: enough of it opens the circuit.
        for _ in range(3):
            with pytest.raises(NetworkError):
                await adapter.list_offers()
        assert adapter.circuit_state == "Open"
    finally:
        await adapter.aclose()


async def test_capacity_of_the_wrong_type_is_a_network_error(standins: Standins) -> None:
    await control(standins, "vastai", "/_faults", {"replaceFields": {"num_gpus": "lots"}})
    adapter = adapter_for(standins, "vastai")
    try:
        with pytest.raises(MalformedAnswer, match="ValueError"):
            await adapter.list_offers()
    finally:
        await adapter.aclose()


def _entry(standins: Standins, network: str) -> ProviderEntry:
    spec = provider_spec(standins, network, priceRefreshInterval="60s")
    return ProviderEntry(name=f"{network}-test", spec=spec, adapter=adapter_for(standins, network))


@pytest.mark.parametrize("price", ODD_PRICES, ids=str)
@pytest.mark.parametrize(("network", "field"), PRICE_FIELDS)
async def test_an_odd_price_drops_the_offer_with_a_reason_and_routing_goes_on(
    standins: Standins, network: str, field: str, price: Any
) -> None:
    await control(standins, network, "/_faults", {"replaceFields": {field: price}})
    entry = _entry(standins, network)
    try:
        refreshed = await refresh(entry, NOW)
        status = provider_status(
            entry, refreshed.ready, refreshed.message, 1, [], NOW, refreshed.dropped
        )
    finally:
        await entry.adapter.aclose()
    assert refreshed.ready
    assert entry.offers == ()
    assert refreshed.dropped
    assert "dropped" in refreshed.message
    # What is written to status passes the CRD's schema (money pattern, bounded text).
    written = ComputeProviderStatus.model_validate(status)
    assert written.dropped_offers
    reason = written.dropped_offers[0].reason
    assert "price per" in reason
    assert any(word in reason for word in ("finite", "negative", "ceiling"))
    # Nothing odd reaches the engine: a decision over the refreshed offers does not raise.
    job = job_spec(network)
    policy = RoutingPolicySpec.model_validate({})
    decision = decide(job, policy, Snapshot(now=NOW, offers=entry.offers))
    assert decision.outcome in ("Wait", "Rejected")


async def test_sane_offers_of_the_same_answer_are_kept(standins: Standins) -> None:
    entry = _entry(standins, "vastai")
    try:
        before = await refresh(entry, NOW)
    finally:
        await entry.adapter.aclose()
    assert before.ready and entry.offers and not before.dropped


async def test_offers_expire_when_refreshes_keep_failing(standins: Standins) -> None:
    entry = _entry(standins, "vastai")
    try:
        assert (await refresh(entry, NOW)).ready
        assert entry.offers
        await control(standins, "vastai", "/_faults", {"malformedNext": 1000})
        # Two intervals later the offers still stand (one failed refresh is not enough) ...
        failed = await refresh(entry, NOW + timedelta(seconds=120))
        assert not failed.ready and entry.offers
        # ... after three intervals without a good refresh they are gone.
        expired = await refresh(entry, NOW + timedelta(seconds=181))
    finally:
        await entry.adapter.aclose()
    assert not expired.ready
    assert entry.offers == ()
    assert not entry.ready
    assert "expired" in expired.message


@pytest.mark.parametrize("network", ["livepeer", "openai"])
async def test_a_non_json_answer_fails_a_client_driven_batch(
    standins: Standins, network: str
) -> None:
    adapter = adapter_for(standins, network, **PRICED.get(network, {}))
    try:
        await control(standins, network, "/_faults", {"malformedNext": 1000})
        ref = await submit(adapter, network, "odd-batch-1")
        status = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=5.0)
    finally:
        await adapter.aclose()
    assert status.state == "Failed"
    assert status.message.startswith("request ")


async def test_odd_token_counts_fail_an_openai_batch(standins: Standins) -> None:
    adapter = adapter_for(standins, "openai")
    try:
        await control(standins, "openai", "/_faults", {"replaceFields": {"prompt_tokens": -5}})
        ref = await submit(adapter, "openai", "odd-batch-2")
        status = await wait_for(adapter, ref, {"Failed", "Succeeded"}, timeout=5.0)
    finally:
        await adapter.aclose()
    assert status.state == "Failed"
    assert "usage.prompt_tokens -5" in status.message
    assert status.accrued_usd >= 0


@pytest.mark.parametrize("price", ["-3", {"$raw": "1E+999999"}], ids=str)
async def test_an_odd_price_in_a_container_status_is_a_network_error(
    standins: Standins, price: Any
) -> None:
    adapter = adapter_for(standins, "vastai")
    try:
        ref = await submit(adapter, "vastai", "odd-status-1")
        await control(standins, "vastai", "/_faults", {"replaceFields": {"dph_total": price}})
        with pytest.raises(MalformedAnswer, match="status"):
            await adapter.status(ref)
    finally:
        await adapter.aclose()


async def test_quote_prices_nothing_it_would_not_route_to(standins: Standins) -> None:
    await control(
        standins, "vastai", "/_faults", {"replaceFields": {"dph_total": {"$raw": "1E+999999"}}}
    )
    provider = ComputeProvider.model_validate(
        {
            "metadata": {"name": "vast"},
            "spec": provider_spec(standins, "vastai").to_api(),
        }
    )
    quoted = await quote_provider(provider, KEY, job_spec("vastai"))
    assert quoted.offers == []
    assert quoted.reason.startswith("no usable offers (")
    assert "price per GPU-hour" in quoted.reason


@pytest.mark.parametrize("odd", ODD_ANSWERS, ids=lambda o: o.name)
async def test_every_odd_answer_of_the_corpus_is_an_error_or_a_dropped_offer(
    standins: Standins, odd: OddAnswer
) -> None:
    await control(standins, odd.network, "/_faults", odd.faults)
    entry = _entry(standins, odd.network)
    try:
        refreshed = await refresh(entry, NOW)
    finally:
        await entry.adapter.aclose()
    if odd.expect == "MalformedAnswer":
        assert not refreshed.ready
        assert "unexpected answer" in refreshed.message
        assert odd.reason in refreshed.message, refreshed.message
        assert entry.offers == ()
    else:
        assert refreshed.ready
        assert any(odd.reason in d.reason for d in refreshed.dropped), refreshed.dropped
        status = provider_status(entry, True, refreshed.message, 1, [], NOW, refreshed.dropped)
        ComputeProviderStatus.model_validate(status)
    # Whatever is left is safe to route on.
    decide(
        job_spec(odd.network),
        RoutingPolicySpec.model_validate({}),
        Snapshot(now=NOW, offers=entry.offers),
    )
