"""Results end to end: the operator on the real API server with a real result store
(SeaweedFS), OpenAI-compatible and Livepeer batches whose output holds exactly one line per
input custom_id, also when the operator is SIGKILLed mid-batch, and bad input refused
before anything is sent."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridgpu.results.store import ResultStore
from hybridgpu.results.urls import ObjectURL
from hybridgpu.standins import media
from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, control, get, wait_for
from tests.objectstore import DEFAULT_BUCKET, SeaweedFS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
PREFIX = "e2e-res-"
MODEL = "meta-llama/Llama-3.3-70B-Instruct"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    cluster: Path, s3: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    path = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    config = yaml.safe_load(path.read_text())
    config["tokenPrices"] = [
        {"model": MODEL, "inputPerMillion": "0.13", "outputPerMillion": "0.38"}
    ]
    config["requestLatencySeconds"] = 0.05  # slow enough to kill the operator mid-batch
    path.write_text(yaml.safe_dump(config))
    store = s3.config()
    base = harness.operator_process()
    operator = harness.Process(
        "e2e-results-operator",
        base.argv,
        env=harness.result_store_env(store),
    )
    with harness.running_stack(path, PREFIX, operator=operator) as running:
        kubectl(
            "patch",
            "cp",
            f"{PREFIX}livepeer",
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "spec": {
                        "staticPrices": [
                            {"gpuProduct": "NVIDIA-GeForce-RTX-4090", "pricePerGPUHour": "0.45"}
                        ]
                    }
                }
            ),
        )
        yield running


def _policy(namespace: str, provider: str) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {
            "inCluster": {"enabled": False},
            "external": {"enabled": True, "providers": [f"{PREFIX}{provider}"]},
            "failover": {"maxAttempts": 3, "backoff": "1s"},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _job(namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"estimatedDuration": "10m", **spec},
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _write_input(s3: SeaweedFS, namespace: str, name: str, items: list[dict[str, Any]]) -> str:
    url = ObjectURL(DEFAULT_BUCKET, f"results/{namespace}/inputs/{name}.jsonl")
    data = b"".join(json.dumps(i).encode() + b"\n" for i in items)
    ResultStore(s3.config()).put_sync(url, data)
    return str(url)


def _output(s3: SeaweedFS, job: dict[str, Any]) -> list[dict[str, Any]]:
    uri = job["status"]["output"]["uri"]
    data = ResultStore(s3.config()).get_bytes_sync(ObjectURL.parse(uri, "uri"), 10**8)
    return [json.loads(line) for line in data.splitlines()]


_finish = harness.finished


@pytest.mark.parametrize("network", ["openai", "livepeer"])
def test_a_batch_killed_mid_way_still_writes_one_line_per_custom_id(
    stack: harness.Process, s3: SeaweedFS, namespace: str, network: str
) -> None:
    total = 120
    if network == "openai":
        items = [
            {
                "custom_id": f"id-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": 8,
                },
            }
            for i in range(total)
        ]
        spec: dict[str, Any] = {"task": "llm", "model": MODEL}
    else:
        items = [{"custom_id": f"id-{i}", "prompt": f"a fox number {i}"} for i in range(total)]
        spec = {
            "task": "text-to-image",
            "model": "SG161222/RealVisXL_V4.0_Lightning",
            "gpu": {"count": 1, "products": ["NVIDIA-GeForce-RTX-4090"]},
        }
    _policy(namespace, network)
    source = _write_input(s3, namespace, "batch", items)
    _job(namespace, "batch", {**spec, "input": {"requests": total, "source": source}})
    wait_for(
        "some requests done",
        lambda: (
            ((get("ij", "batch", namespace).get("status") or {}).get("progress") or {}).get(
                "completed", 0
            )
            >= 40
        ),
        timeout=180,
        every=0.2,
    )
    stack.kill(signal.SIGKILL)
    stack.start()
    job = _finish(namespace, "batch")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert len(status["attempts"]) == 1, status["attempts"]
    assert (
        status["output"]["records"] == total and status["output"]["summary"] == f"{total}/{total}"
    )
    lines = _output(s3, job)
    assert [line["custom_id"] for line in lines] == [f"id-{i}" for i in range(total)]
    key = status["attempts"][0]["externalId"].removeprefix("batch-")
    sent = control(network, "/_stats")["submissions"]
    assert {k for k in sent if k.startswith(key + "/")} == {f"{key}/{i}" for i in range(total)}
    # Resent at most the requests of the chunk in flight at the kill (chunks of 16).
    assert sum(n for k, n in sent.items() if k.startswith(key + "/")) - total <= 16
    store = ResultStore(s3.config())
    for i, line in enumerate(lines):
        body = line["response"]["body"]
        if network == "openai":
            assert f"question {i}" in body["choices"][0]["message"]["content"]
        else:
            url = ObjectURL.parse(body["images"][0]["url"], "url")
            png = store.get_bytes_sync(url, 10**6)
            assert png == media.png(f"{media.digest(f'a fox number {i}')}-0")


def test_bad_input_fails_the_job_and_nothing_is_sent(
    stack: harness.Process, s3: SeaweedFS, namespace: str
) -> None:
    _policy(namespace, "openai")
    before = dict(control("openai", "/_stats")["submissions"])
    items = [{"custom_id": "same", "body": {"messages": []}}] * 2
    source = _write_input(s3, namespace, "dup", items)
    _job(
        namespace,
        "dup",
        {"task": "llm", "model": MODEL, "input": {"requests": 2, "source": source}},
    )
    _job(
        namespace,
        "elsewhere",
        {
            "task": "llm",
            "model": MODEL,
            "input": {"requests": 1, "source": f"s3://{DEFAULT_BUCKET}/results/other/x.jsonl"},
        },
    )
    for name, reason in (("dup", "DuplicateCustomId"), ("elsewhere", "InputForbidden")):
        job = _finish(namespace, name, timeout=90)
        failed = condition(job, "Failed")
        assert failed is not None and failed["reason"] == reason, job["status"]
        assert not job["status"].get("attempts")
    assert control("openai", "/_stats")["submissions"] == before


def test_the_results_command_prints_a_finished_jobs_output(
    stack: harness.Process, s3: SeaweedFS, namespace: str
) -> None:
    import subprocess

    _policy(namespace, "openai")
    items = [
        {"custom_id": f"t-{i}", "body": {"messages": [{"role": "user", "content": f"hi {i}"}]}}
        for i in range(5)
    ]
    _job(
        namespace,
        "small",
        {"task": "llm", "model": MODEL, "input": {"requests": 5, "inline": items}},
    )
    job = _finish(namespace, "small", timeout=120)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    store = s3.config()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridgpu.cli",
            "results",
            "small",
            "-n",
            namespace,
            "--kubeconfig",
            str(harness.kubeconfig_path()),
        ],
        capture_output=True,
        check=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "AWS_ACCESS_KEY_ID": store.access_key_id,
            "AWS_SECRET_ACCESS_KEY": store.secret_access_key,
            "AWS_ENDPOINT_URL": store.endpoint,
        },
    )
    got = [json.loads(line)["custom_id"] for line in out.stdout.splitlines()]
    assert got == [f"t-{i}" for i in range(5)]
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert store.secret_access_key not in events and store.secret_access_key not in json.dumps(job)
