"""``hybridgpu quote`` against the stand-ins."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from hybridgpu.api.computeprovider import ComputeProvider
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.cli import main
from hybridgpu.commands.quote import quote_all, to_json
from hybridgpu.standins import Standins, start_standins
from hybridgpu.standins.config import NETWORKS
from tests.contract.networks_helpers import KEY, control, standin_config, standins

__all__ = ["standins"]
JOB = {
    "apiVersion": "hybridgpu.dev/v1alpha1",
    "kind": "InferenceJob",
    "metadata": {"name": "q"},
    "spec": {
        "task": "container",
        "image": "img:1",
        "input": {"requests": 10},
        "gpu": {"count": 1, "minMemory": "24Gi"},
        "estimatedDuration": "30m",
        "maxPricePerGPUHour": "2.00",
    },
}


def providers_for(running: Standins) -> list[dict[str, object]]:
    docs = []
    for network in NETWORKS:
        spec: dict[str, object] = {
            "type": network,
            "endpoint": running.endpoint(network),
            "credentialsSecretRef": {"namespace": "ns", "name": network},
        }
        if network in ("akash", "livepeer"):
            spec["staticPrices"] = [
                {"gpuProduct": "NVIDIA-GeForce-RTX-4090", "pricePerGPUHour": "0.39"}
            ]
        docs.append(
            {
                "apiVersion": "hybridgpu.dev/v1alpha1",
                "kind": "ComputeProvider",
                "metadata": {"name": f"{network}-local"},
                "spec": spec,
            }
        )
    return docs


async def test_quote_prices_the_job_everywhere_and_explains_refusals(standins: Standins) -> None:
    await control(standins, "vastai", "/_faults", {"errorRate": 1.0})
    providers = [ComputeProvider.model_validate(d) for d in providers_for(standins)]
    job = InferenceJobSpec.model_validate(JOB["spec"])
    quotes = await quote_all(job, providers, {p.metadata.name or "": KEY for p in providers})
    doc = {q["provider"]: q for q in to_json(quotes)}
    assert doc["vastai-local"]["canTakeJob"] is False
    assert "circuit open" in doc["vastai-local"]["reason"]
    assert doc["livepeer-local"]["canTakeJob"] is False
    assert "does not run task container" in doc["livepeer-local"]["offers"][0]["reason"]
    nosana = doc["nosana-local"]
    assert nosana["canTakeJob"] is True
    # Cheapest 4090 market 0.2182 USD/GPU-hour for 30 minutes.
    assert nosana["bestOffer"] == {
        "gpuProduct": "NVIDIA-GeForce-RTX-4090",
        "estimatedCost": "0.1091",
    }
    akash = doc["akash-local"]["bestOffer"]
    assert Decimal(akash["estimatedCost"]) == Decimal("0.195")
    for q in doc.values():
        for offer in q["offers"]:
            assert isinstance(offer["estimatedCost"], str)


@pytest.fixture
def threaded_standins() -> Iterator[Standins]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(start_standins(standin_config()), loop).result(10)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_quote_command_reads_files_and_environment(
    threaded_standins: Standins,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(JOB))
    providers_file = tmp_path / "providers.yaml"
    providers_file.write_text(yaml.safe_dump_all(providers_for(threaded_standins)))
    credentials = tmp_path / "creds.yaml"
    credentials.write_text(yaml.safe_dump({f"{n}-local": "wrong" for n in NETWORKS}))
    for network in NETWORKS:
        monkeypatch.setenv(f"HYBRIDGPU_CREDENTIAL_{network.upper()}_LOCAL", KEY)
    monkeypatch.setenv("HYBRIDGPU_CREDENTIAL_VASTAI_LOCAL", "")  # falls back to the file
    code = main(
        [
            "quote",
            "-f",
            str(job_file),
            "--providers",
            str(providers_file),
            "--credentials",
            str(credentials),
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    by_name = {q["provider"]: q for q in out}
    assert by_name["nosana-local"]["canTakeJob"] is True
    assert "credential refused" in by_name["vastai-local"]["reason"]
    assert KEY not in json.dumps(out) and "wrong" not in json.dumps(out)

    code = main(
        [
            "quote",
            "-f",
            str(job_file),
            "--providers",
            str(providers_file),
            "--credentials",
            str(credentials),
        ]
    )
    table = capsys.readouterr().out
    assert "nosana-local (nosana): best NVIDIA-GeForce-RTX-4090 at $0.1091" in table
