"""The Vast.ai adapter against what the official ``vastai`` client (1.9.1) sends and reads:
its create payload, storage-priced searches, statuses as Vast.ai documents them, a taken
offer (410), and success only when the container says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hybridgpu.networks import RemoteRef
from hybridgpu.networks.gpu_names import vast_names
from hybridgpu.networks.vastai import DISK_GB, VastAdapter, completion_label, label_for
from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import OfferConfig
from tests.contract import openapi
from tests.contract.networks_helpers import (
    KEY,
    adapter_for,
    control,
    job_spec,
    standin_config,
    standins,
    submit,
    wait_for,
)

__all__ = ["standins"]
vastai = pytest.importorskip("vastai")
from vastai.api.instances import build_create_instance_payload  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEY}"}


async def test_the_adapter_sends_what_the_official_client_sends(standins: Standins) -> None:
    adapter = adapter_for(standins, "vastai")
    exchanges = openapi.record(adapter)
    try:
        offers = await adapter.list_offers()
        ref = await submit(adapter, "vastai", "payload", cap=Decimal("5"))
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
    finally:
        await adapter.aclose()
    assert final.state == "Succeeded", final.message
    official = set(build_create_instance_payload(image="i", disk=DISK_GB, label="l"))
    created = [e for e in exchanges if e.method == "PUT" and e.path.startswith("/api/v0/asks/")]
    assert len(created) == 1
    assert set(created[0].body) <= official | {"runtype", "args"}
    assert created[0].body["disk"] == DISK_GB
    assert created[0].body["env"]["HYBRIDGPU_COMPLETION_LABEL"] == completion_label("payload")
    searches = [e for e in exchanges if e.path == "/api/v0/bundles/"]
    # Storage is priced into dph_total: every search asks for the disk the instance gets.
    assert searches and all(e.body["allocated_storage"] == DISK_GB for e in searches)
    # One search per GPU name: data-centre cards reach the router beside the cheap ones.
    names = {e.body["gpu_name"]["eq"] for e in searches if "num_gpus" not in e.body}
    assert names == set(vast_names())
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"} <= {o.gpu_product for o in offers}
    listed = [e for e in exchanges if e.path == "/api/v1/instances/"]
    assert listed and all("instances" in e.answer and "next_token" in e.answer for e in listed)
    shown = [e for e in exchanges if e.path.startswith("/api/v0/instances/")]
    assert shown and all(e.query == {"owner": "me"} for e in shown if e.method == "GET")


async def test_an_exit_without_the_success_signal_is_a_failure(standins: Standins) -> None:
    await control(standins, "vastai", "/_faults", {"failExitCode": 1})
    adapter = adapter_for(standins, "vastai")
    try:
        ref = await submit(adapter, "vastai", "crash")
        final = await wait_for(adapter, ref, {"Succeeded", "Failed", "Lost"}, timeout=15)
    finally:
        await adapter.aclose()
    assert final.state == "Failed"
    assert "exited without signalling success" in final.message


@pytest.fixture
async def two_machines() -> AsyncIterator[Standins]:
    offers = [
        OfferConfig(
            network="vastai",
            gpu_product="NVIDIA-A100-SXM4-80GB",
            memory_gi_b=80,
            usd_per_gpu_hour=Decimal("1.7043"),
            available=16,
        )
    ]
    running = await start_standins(standin_config().model_copy(update={"offers": offers}))
    try:
        yield running
    finally:
        await running.close()


async def test_a_taken_offer_answers_410_and_the_next_is_rented(two_machines: Standins) -> None:
    adapter = adapter_for(two_machines, "vastai")
    try:
        query = {"gpu_name": {"eq": "A100 SXM4"}, "num_gpus": {"eq": 1}}
        stale = await adapter._search(query)  # type: ignore[attr-defined]
        first_machine = stale[0]["machine_id"]
        whole = await adapter._search(  # type: ignore[attr-defined]
            {"machine_id": {"eq": first_machine}, "num_gpus": {"eq": 8}}
        )
        async with httpx.AsyncClient(
            base_url=two_machines.base_url("vastai"), headers=HEADERS
        ) as c:
            taken = await c.put(f"/api/v0/asks/{whole[0]['id']}/", json={"image": "other:1"})
            gone = await c.put(f"/api/v0/asks/{stale[0]['id']}/", json={"image": "other:1"})
        assert taken.status_code == 200 and gone.status_code == 410

        async def stale_search(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            del extra
            return stale

        adapter._search = stale_search  # type: ignore[attr-defined]
        ref = await adapter.submit(
            job_spec("vastai"),
            idempotency_key="raced",
            gpu_product="NVIDIA-A100-SXM4-80GB",
            max_price_per_gpu_hour=None,
        )
        status = await adapter.status(ref)
    finally:
        await adapter.aclose()
    assert status.state in ("Pending", "Running")
    stats = await control(two_machines, "vastai", "/_stats")
    assert stats["submissions"][label_for("raced")] == 2  # the 410, then the next offer


@pytest.mark.parametrize(
    ("status", "label", "expected"),
    [
        (None, "x", "Pending"),
        ("loading", "x", "Pending"),
        ("running", "x", "Running"),
        ("exited", label_for("k"), "Failed"),
        ("exited", completion_label("k"), "Succeeded"),
        ("offline", "x", "Failed"),
        ("unknown", "x", "Failed"),
        ("stopped", "x", "Failed"),
        ("frozen", "x", "Failed"),  # not a documented status: never Running
    ],
)
async def test_statuses_mean_what_vast_ai_documents(
    standins: Standins, status: str | None, label: str, expected: str
) -> None:
    adapter = adapter_for(standins, "vastai")
    assert isinstance(adapter, VastAdapter)

    async def instance(ref: RemoteRef) -> tuple[dict[str, Any], float]:
        del ref
        return {"actual_status": status, "label": label, "dph_total": 1.0, "num_gpus": 1}, 0.0

    adapter._instance = instance  # type: ignore[method-assign]
    try:
        remote = await adapter.inspect(RemoteRef("vastai-test", "1", "k"))
    finally:
        await adapter.aclose()
    assert remote is not None and remote.state == expected
