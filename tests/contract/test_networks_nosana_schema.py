"""The Nosana adapter's traffic and the stand-in's answers, checked against schemas derived
from the @nosana/api package's types (tests/contract/specs/nosana-*.json, see README)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import OfferConfig
from tests.contract import openapi
from tests.contract.networks_helpers import (
    KEY,
    PRODUCT,
    adapter_for,
    control,
    job_spec,
    standin_config,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
SPECS = Path(__file__).parent / "specs"
GENERATED = json.loads((SPECS / "nosana-api.generated.json").read_text())
TRANSCRIBED = json.loads((SPECS / "nosana-deployments.transcribed.json").read_text())
SCHEMAS: dict[str, Any] = {**GENERATED["schemas"], **TRANSCRIBED["schemas"]}
# (method, path pattern) -> (request schema, 2xx response schema)
OPERATIONS: list[tuple[str, str, str | None, str]] = [
    ("GET", r"/api/markets/", None, "MarketList"),
    ("GET", r"/api/deployments", None, "DeploymentList"),
    ("POST", r"/api/deployments/create", "DeploymentCreateBody", "Deployment"),
    ("GET", r"/api/deployments/[^/]+", None, "Deployment"),
    ("POST", r"/api/deployments/[^/]+/start", None, "DeploymentStart"),
    ("POST", r"/api/deployments/[^/]+/stop", None, "DeploymentStop"),
    ("GET", r"/api/deployments/[^/]+/jobs", None, "DeploymentJobs"),
    ("GET", r"/api/jobs/[^/]+", None, "JobByAddress"),
    ("POST", r"/api/jobs/[^/]+/stop", None, "JobStopResponse"),
    ("GET", r"/api/credits/balance", None, "CreditsBalance"),
]
HEADERS = {"Authorization": f"Bearer {KEY}"}


def operation(method: str, path: str) -> tuple[str, str | None, str]:
    for verb, pattern, request, response in OPERATIONS:
        if verb == method and re.fullmatch(pattern, path):
            return pattern, request, response
    raise AssertionError(f"{method} {path} is not a Nosana API call")


def validate(method: str, path: str, body: Any, status: int, answer: Any) -> str:
    pattern, request, response = operation(method, path)
    if request is not None:
        jsonschema.validate(body, SCHEMAS[request])
    else:
        assert body is None, f"{method} {path} takes no body"
    if status < 300:
        jsonschema.validate(answer, SCHEMAS[response])
    else:
        jsonschema.validate(answer, SCHEMAS["Unauthorized" if status == 401 else "Error"])
    return f"{method} {pattern}"


def check(exchanges: list[openapi.Exchange]) -> set[str]:
    return {validate(e.method, e.path, e.body, e.status, e.answer) for e in exchanges}


def test_the_schemas_are_the_packages() -> None:
    assert GENERATED["source"].startswith("@nosana/api@2.1.8")
    job = SCHEMAS["JobByAddress"]
    assert job["properties"]["state"] == {"type": "number"}
    assert "usdRewardPerHour" in job["required"] and "usd_reward_per_hour" not in job["properties"]
    market = SCHEMAS["MarketList"]["items"]
    assert "available_nodes" not in market["properties"] and "nodes" in market["properties"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ipfsHash": "Qm"}, SCHEMAS["JobsListRequest"])  # market required


async def test_a_job_life_validates_against_the_nosana_schemas(standins: Standins) -> None:
    adapter = adapter_for(standins, "nosana")
    exchanges = openapi.record(adapter)
    job = job_spec("nosana")
    try:
        offers = await adapter.list_offers()
        ref = await submit(adapter, "nosana", "schema-life", cap=Decimal("1"), job=job)
        again = await submit(adapter, "nosana", "schema-life", cap=Decimal("1"), job=job)
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
        result = await adapter.result(ref)
        await adapter.cancel(ref)
    finally:
        await adapter.aclose()
    assert offers and all(o.available > 0 for o in offers)
    assert again == ref and final.state == "Succeeded", final.message
    assert final.message == "completed, exit code 0" and result and result.startswith("ipfs://")
    assert {
        "GET /api/markets/",
        "GET /api/deployments",
        "POST /api/deployments/create",
        "POST /api/deployments/[^/]+/start",
        "GET /api/deployments/[^/]+",
        "GET /api/deployments/[^/]+/jobs",
        "GET /api/jobs/[^/]+",
        "POST /api/deployments/[^/]+/stop",
    } <= check(exchanges)
    created = [e for e in exchanges if e.path == "/api/deployments/create"]
    assert len(created) == 1 and created[0].body["strategy"] == "SIMPLE"
    # The stand-in's statistics speak of the id the operator stores: the deployment's.
    stats = await control(standins, "nosana", "/_stats")
    assert stats["created"] == {ref.id: 1} and stats["jobs"][ref.id] in ("done", "stopped")


async def test_a_running_job_has_a_numeric_state_and_time_end_zero(standins: Standins) -> None:
    adapter = adapter_for(standins, "nosana")
    exchanges = openapi.record(adapter)
    try:
        ref = await submit(
            adapter, "nosana", "running", job=job_spec("nosana", estimatedDuration="10h")
        )
        status = await wait_for(adapter, ref, {"Running"}, timeout=10)
        await adapter.cancel(ref)
        after = await adapter.status(ref)
    finally:
        await adapter.aclose()
    check(exchanges)
    running = [
        e.answer for e in exchanges if e.path.startswith("/api/jobs/") and e.answer["state"] == 1
    ]
    assert running and all(j["timeEnd"] == 0 and j["timeStart"] > 0 for j in running)
    assert status.accrued_usd >= 0 and after.state == "Failed"
    assert after.message == "stopped by hybridgpu"


async def test_a_non_zero_exit_code_is_a_failure(standins: Standins) -> None:
    await control(standins, "nosana", "/_faults", {"failExitCode": 3})
    adapter = adapter_for(standins, "nosana")
    try:
        ref = await submit(adapter, "nosana", "exit-3")
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
    finally:
        await adapter.aclose()
    assert final.state == "Failed"
    assert final.message == "completed with exit codes [3]"


async def test_a_restarted_adapter_finds_its_deployment_by_name(standins: Standins) -> None:
    job = job_spec("nosana", estimatedDuration="10h")
    first = adapter_for(standins, "nosana")
    try:
        ref = await submit(first, "nosana", "restart", job=job)
    finally:
        await first.aclose()
    second = adapter_for(standins, "nosana")
    exchanges = openapi.record(second)
    try:
        again = await submit(second, "nosana", "restart", job=job)
        await wait_for(second, again, {"Running"}, timeout=10)
        await second.cancel(again)
    finally:
        await second.aclose()
    check(exchanges)
    assert again == ref
    assert not any(e.path == "/api/deployments/create" for e in exchanges)
    stats = await control(standins, "nosana", "/_stats")
    assert len(stats["created"]) == 1


async def test_a_deployment_left_in_draft_is_started_on_resubmit(standins: Standins) -> None:
    from hybridgpu.networks.nosana import deployment_name, job_definition, timeout_minutes

    job = job_spec("nosana")
    async with httpx.AsyncClient(base_url=standins.base_url("nosana"), headers=HEADERS) as c:
        market = (await c.get("/api/markets/")).json()[0]["address"]
        body = {
            "name": deployment_name("draft"),
            "market": market,
            "replicas": 1,
            "timeout": timeout_minutes(job),
            "strategy": "SIMPLE",
            "job_definition": job_definition(job, "draft"),
        }
        draft = (await c.post("/api/deployments/create", json=body)).json()
    assert draft["status"] == "DRAFT"
    adapter = adapter_for(standins, "nosana")
    try:
        ref = await submit(adapter, "nosana", "draft", job=job)
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
    finally:
        await adapter.aclose()
    assert ref.id == draft["id"] and final.state == "Succeeded"


async def _one_market(idle: int) -> AsyncIterator[Standins]:
    """Stand-ins whose only Nosana market has ``idle`` idle nodes."""
    config = standin_config()
    offers = [
        OfferConfig(
            network="nosana",
            gpu_product=PRODUCT,
            memory_gi_b=24,
            usd_per_gpu_hour=Decimal("0.29"),
            available=idle,
        )
    ]
    running = await start_standins(config.model_copy(update={"offers": offers}))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def no_idle_nodes() -> AsyncIterator[Standins]:
    async for running in _one_market(0):
        yield running


async def test_a_market_listing_no_idle_node_is_offered_with_unknown_capacity(
    no_idle_nodes: Standins,
) -> None:
    adapter = adapter_for(no_idle_nodes, "nosana")
    exchanges = openapi.record(adapter)
    try:
        offers = await adapter.list_offers()
    finally:
        await adapter.aclose()
    check(exchanges)
    assert exchanges[0].answer[0]["nodes"] == []
    assert [o.available for o in offers] == [1]
    assert offers[0].labels["nosana.io/capacity"] == "unknown"
    assert offers[0].start_latency_seconds >= 600


async def test_stand_in_errors_have_the_typed_shapes(standins: Standins) -> None:
    async with httpx.AsyncClient(base_url=standins.base_url("nosana")) as c:
        unauthorized = await c.get("/api/deployments")
        missing = await c.get("/api/deployments/nope", headers=HEADERS)
        bad = await c.post("/api/deployments/create", json={"name": "x"}, headers=HEADERS)
    assert unauthorized.status_code == 401 and unauthorized.json() == "Unauthorized"
    assert missing.status_code == 404
    jsonschema.validate(missing.json(), SCHEMAS["Error"])
    assert bad.status_code == 400
    jsonschema.validate(bad.json(), SCHEMAS["Error"])


NOSANA_API_DIR = os.environ.get("HYBRIDGPU_NOSANA_API_DIR")


@pytest.mark.skipif(
    not NOSANA_API_DIR or not shutil.which("node"),
    reason="set HYBRIDGPU_NOSANA_API_DIR to a folder with `npm install @nosana/api@2.1.8` done",
)
async def test_the_official_nosana_client_uses_the_stand_in(
    standins: Standins, tmp_path: Path
) -> None:
    from hybridgpu.networks.nosana import job_definition

    script = Path(__file__).parents[2] / "hack" / "upstream" / "nosana-client-check.mjs"
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(job_definition(job_spec("nosana"), "client-check")))
    local = Path(str(NOSANA_API_DIR)) / script.name
    local.write_text(script.read_text())  # node resolves @nosana/api next to the script
    process = await asyncio.create_subprocess_exec(
        "node",
        str(local),
        standins.base_url("nosana"),
        KEY,
        str(definition),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    seen = json.loads(out)
    assert seen["markets"] and seen["created"]["status"] == "DRAFT"
    assert seen["found"] == [seen["created"]["id"]]
    assert seen["jobs"][0]["deployment"] == seen["created"]["id"]
    jsonschema.validate(seen["job"], SCHEMAS["JobByAddress"])
    jsonschema.validate(seen["balance"], SCHEMAS["CreditsBalance"])
    assert seen["stopped"] == "STOPPED"


@pytest.fixture
async def one_idle_node() -> AsyncIterator[Standins]:
    async for running in _one_market(1):
        yield running


async def test_an_empty_node_list_is_trusted_once_the_market_has_listed_nodes(
    one_idle_node: Standins,
) -> None:
    adapter = adapter_for(one_idle_node, "nosana")
    try:
        before = await adapter.list_offers()
        job = job_spec("nosana", estimatedDuration="10h")
        ref = await submit(adapter, "nosana", "holder", job=job)
        await wait_for(adapter, ref, {"Running"}, timeout=10)
        after = await adapter.list_offers()
        await adapter.cancel(ref)
    finally:
        await adapter.aclose()
    assert [o.available for o in before] == [1]
    assert [o.available for o in after] == [0]  # the market's one idle node is taken
    assert "nosana.io/capacity" not in after[0].labels
