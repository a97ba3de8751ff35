"""The Akash adapter's traffic and the stand-in's answers, checked against the Console's own
generated OpenAPI document (tests/contract/specs/akash-console.openapi.json, see README)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import jsonschema
import pytest

from hybridgpu.networks import PriceAboveCap, RemoteRef
from hybridgpu.networks.akash import AkashAdapter, build_sdl
from hybridgpu.networks.akash_manifest import manifest_of, manifest_version
from hybridgpu.standins import Standins, start_standins
from tests.contract import openapi
from tests.contract.networks_helpers import (
    KEY,
    adapter_for,
    job_spec,
    standin_config,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
SPEC = openapi.load("akash-console.openapi.json")
HEADERS = {"x-api-key": KEY}


def check(exchanges: list[openapi.Exchange]) -> set[str]:
    """Validate every exchange; return the operations seen as ``METHOD template``."""
    seen = set()
    for ex in exchanges:
        template, _ = openapi.operation(SPEC, ex.method, ex.path)
        openapi.validate_request(SPEC, ex.method, ex.path, ex.query, ex.body)
        assert openapi.validate_response(SPEC, ex.method, ex.path, ex.status, ex.answer), ex
        seen.add(f"{ex.method} {template}")
    return seen


def test_the_spec_is_the_consoles_and_the_pattern_fix_holds() -> None:
    assert SPEC["info"]["title"] == "Akash Network Console API"
    create = SPEC["paths"]["/v1/deployments"]["post"]["requestBody"]["content"]
    body_schema = openapi.schema(SPEC, create["application/json"]["schema"])
    jsonschema.validate({"data": {"sdl": "x", "deposit": 5}}, body_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sdl": "x", "deposit": 5}, body_schema)  # unwrapped: refused
    bids = openapi.schema(SPEC, SPEC["paths"]["/v1/bids"]["get"]["parameters"][0]["schema"])
    jsonschema.validate("1234567", bids)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("dddd", bids)


async def test_a_job_life_validates_against_the_console_spec(standins: Standins) -> None:
    adapter = adapter_for(standins, "akash")
    exchanges = openapi.record(adapter)
    job = job_spec("akash")
    try:
        offers = await adapter.list_offers()
        ref = await submit(adapter, "akash", "spec-life", cap=Decimal("1"), job=job)
        again = await submit(adapter, "akash", "spec-life", cap=Decimal("1"), job=job)
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
        await adapter.cancel(ref)
        assert await adapter.result(ref) is not None
    finally:
        await adapter.aclose()
    assert offers and again == ref
    assert final.state == "Succeeded", final.message
    seen = check(exchanges)
    assert {
        "GET /v1/gpu-prices",
        "GET /v1/deployments",
        "POST /v1/deployments",
        "GET /v1/bids",
        "POST /v1/leases",
        "GET /v1/deployments/{dseq}",
        "GET /v1/blocks",
        "DELETE /v1/deployments/{dseq}",
    } <= seen
    created = next(e for e in exchanges if e.method == "POST" and e.path == "/v1/deployments")
    leased = next(e for e in exchanges if e.path == "/v1/leases")
    # The lease carries the JSON manifest of the create response, not the SDL.
    assert leased.body["manifest"] == created.answer["data"]["manifest"]
    assert leased.body["manifest"].startswith("[{")
    # Bids are per block in the grant denom, never usd.
    bids = [e for e in exchanges if e.path == "/v1/bids" and e.answer["data"]]
    assert {b["bid"]["price"]["denom"] for e in bids for b in e.answer["data"]} == {"uact"}


async def test_the_deployment_list_has_no_sdl_but_the_manifest_version(
    standins: Standins,
) -> None:
    job = job_spec("akash")
    sdl = build_sdl(job, "list-key", "NVIDIA-GeForce-RTX-4090", Decimal("1"))
    async with httpx.AsyncClient(base_url=standins.base_url("akash"), headers=HEADERS) as client:
        created = await client.post("/v1/deployments", json={"data": {"sdl": sdl, "deposit": 5}})
        listed = await client.get("/v1/deployments", params={"skip": 0, "limit": 10})
    assert created.status_code == 201
    assert openapi.validate_response(SPEC, "POST", "/v1/deployments", 201, created.json())
    assert openapi.validate_response(SPEC, "GET", "/v1/deployments", 200, listed.json())
    item = listed.json()["data"]["deployments"][0]
    assert "sdl" not in item and "sdl" not in item["deployment"]
    manifest = created.json()["data"]["manifest"]
    assert item["deployment"]["hash"] == manifest_version(manifest) == manifest_of(sdl)[1]


async def test_the_stand_in_refuses_a_lease_with_the_sdl_for_a_manifest(
    standins: Standins,
) -> None:
    sdl = build_sdl(job_spec("akash"), "sdl-lease", "NVIDIA-GeForce-RTX-4090", Decimal("1"))
    async with httpx.AsyncClient(base_url=standins.base_url("akash"), headers=HEADERS) as client:
        dseq = await client.post("/v1/deployments", json={"data": {"sdl": sdl, "deposit": 5}})
        dseq_s = dseq.json()["data"]["dseq"]
        for _ in range(200):
            bids = (await client.get("/v1/bids", params={"dseq": dseq_s})).json()["data"]
            if bids:
                break
        provider = bids[0]["bid"]["id"]["provider"]
        lease = {"dseq": dseq_s, "gseq": 1, "oseq": 1, "provider": provider}
        refused = await client.post("/v1/leases", json={"manifest": sdl, "leases": [lease]})
        unwrapped = await client.post("/v1/deployments", json={"sdl": sdl, "deposit": 5})
    assert refused.status_code == 400 and "manifest" in refused.json()["message"]
    assert unwrapped.status_code == 400


@pytest.fixture
async def uakt() -> AsyncIterator[Standins]:
    config = standin_config().model_copy(update={"akash_denom": "uakt"})
    running = await start_standins(config)
    try:
        yield running
    finally:
        await running.close()


async def test_uakt_bids_are_priced_with_the_akt_price(uakt: Standins) -> None:
    adapter = adapter_for(uakt, "akash")
    exchanges = openapi.record(adapter)
    try:
        ref = await submit(adapter, "akash", "uakt", cap=Decimal("1"))
        status = await wait_for(adapter, ref, {"Running"}, timeout=10)
        await adapter.cancel(ref)
    finally:
        await adapter.aclose()
    check(exchanges)
    # 0.39 USD/GPU-hour in uakt at the stand-in's 2.5 USD/AKT, back to USD.
    assert status.price_per_gpu_hour == Decimal("0.39")
    assert any(e.path == "/v1/market-data/akt" for e in exchanges)


async def test_a_cap_under_every_recent_bid_is_refused_before_creating(
    standins: Standins,
) -> None:
    adapter = adapter_for(standins, "akash")
    exchanges = openapi.record(adapter)
    try:
        with pytest.raises(PriceAboveCap, match="before submission"):
            await submit(adapter, "akash", "too-cheap", cap=Decimal("0.01"))
    finally:
        await adapter.aclose()
    check(exchanges)
    assert not any(e.method == "POST" for e in exchanges)


async def test_providers_do_not_bid_above_the_sdl_ceiling(standins: Standins) -> None:
    cheap = build_sdl(job_spec("akash"), "ceiling", "NVIDIA-GeForce-RTX-4090", Decimal("0.38"))
    fair = build_sdl(job_spec("akash"), "ceiling-2", "NVIDIA-GeForce-RTX-4090", Decimal("0.39"))
    async with httpx.AsyncClient(base_url=standins.base_url("akash"), headers=HEADERS) as client:
        dseqs = [
            (await client.post("/v1/deployments", json={"data": {"sdl": s, "deposit": 5}})).json()[
                "data"
            ]["dseq"]
            for s in (cheap, fair)
        ]
        for _ in range(400):
            answers = [
                (await client.get("/v1/bids", params={"dseq": d})).json()["data"] for d in dseqs
            ]
            if answers[1]:
                break
    assert answers[1] and not answers[0]


async def test_a_restarted_adapter_finds_its_deployment_by_manifest_version(
    standins: Standins,
) -> None:
    job = job_spec("akash", estimatedDuration="10h")
    first = adapter_for(standins, "akash")
    try:
        ref = await submit(first, "akash", "restart", cap=Decimal("1"), job=job)
    finally:
        await first.aclose()
    second = adapter_for(standins, "akash")  # a new process: nothing remembered
    exchanges = openapi.record(second)
    try:
        again = await submit(second, "akash", "restart", cap=Decimal("1"), job=job)
        status = await wait_for(second, again, {"Running"}, timeout=10)
        await second.cancel(again)
    finally:
        await second.aclose()
    check(exchanges)
    assert again == ref and status.state == "Running"
    assert not any(e.method == "POST" for e in exchanges)
    stats = (await httpx.AsyncClient().get(standins.base_url("akash") + "/_stats")).json()
    assert len(stats["created"]) == 1


async def test_a_deployment_closed_before_its_limit_is_failed(standins: Standins) -> None:
    adapter = adapter_for(standins, "akash")
    try:
        ref = await submit(
            adapter, "akash", "closed-outside", job=job_spec("akash", estimatedDuration="10h")
        )
        await wait_for(adapter, ref, {"Running"}, timeout=10)
        async with httpx.AsyncClient(base_url=standins.base_url("akash"), headers=HEADERS) as c:
            closed = await c.delete(f"/v1/deployments/{ref.id}")
        status = await adapter.status(ref)
    finally:
        await adapter.aclose()
    assert openapi.validate_response(
        SPEC, "DELETE", f"/v1/deployments/{ref.id}", 200, closed.json()
    )
    assert status.state == "Failed"
    assert "before its runtime limit" in status.message
    assert status.accrued_usd > 0


def _lease(state: str, created: str = "100", closed: str = "0") -> dict[str, Any]:
    return {
        "id": {"owner": "o", "dseq": "1", "gseq": 1, "oseq": 1, "provider": "p", "bseq": 0},
        "state": state,
        "price": {"denom": "uact", "amount": "650"},
        "created_at": created,
        "closed_on": closed,
    }


@pytest.mark.parametrize(
    ("deployment", "leases", "expected", "words"),
    [
        ("active", [], "Pending", "waiting for a lease"),
        ("closed", [], "Failed", "without a lease"),
        ("active", [_lease("active")], "Running", "lease active"),
        ("closed", [_lease("closed", closed="110")], "Failed", "before its runtime limit"),
        ("closed", [_lease("insufficient_funds", closed="105")], "Failed", "out of funds"),
        ("closed", [_lease("closed", closed="300")], "Succeeded", "runtime limit"),
        ("active", [_lease("paused")], "Failed", "unknown state"),
        ("weird", [_lease("active")], "Failed", "unknown state"),
    ],
)
async def test_deployment_and_lease_states_map_to_operator_states(
    standins: Standins, deployment: str, leases: list[dict[str, Any]], expected: str, words: str
) -> None:
    adapter = adapter_for(standins, "akash")
    assert isinstance(adapter, AkashAdapter)
    adapter._limit_blocks["1"] = 100  # a 600 s runtime limit

    async def found(dseq: str) -> dict[str, Any]:
        del dseq
        return {
            "deployment": {"id": {"owner": "o", "dseq": "1"}, "state": deployment},
            "leases": leases,
        }

    async def height() -> int:
        return 150

    adapter._deployment = found  # type: ignore[method-assign]
    adapter._latest_height = height  # type: ignore[method-assign]
    try:
        remote = await adapter.inspect(RemoteRef("akash-test", "1", "k"))
    finally:
        await adapter.aclose()
    assert remote is not None and remote.state == expected, remote
    assert words in remote.message
    if leases:
        assert remote.price_per_hour == Decimal("0.39")  # 650 uact/block x 600 / 10^6
