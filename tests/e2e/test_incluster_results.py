"""In-cluster jobs through the operator, with the real result store: the operator presigns
SeaweedFS URLs, the Job's own command (vLLM's batch runner; the ai-runner fed by
``hybridgpu runner livepeer``) reads the input and writes the output through them, and the
output holds exactly one line per input ``custom_id``, also when the operator is SIGKILLed
while the batch runs.

The Pods run on a node agent (tests/incluster/agent.py). The operator counts only agent nodes
(``HYBRIDGPU_GPU_NODE_SELECTOR``): the jobs name no GPU product, and the KWOK nodes, cheaper
or not, are not the operator's, so every Pod that ran was placed by the selector.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hybridgpu.backends.incluster import LABEL_UID
from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, finished, get, wait_for
from tests.e2e.test_results import _output, _write_input
from tests.incluster.agent import NodeAgent, standin_images
from tests.objectstore import SeaweedFS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
AGENT_NODE = "hybridgpu-process-agent-results"
AGENT_PRODUCT = "NVIDIA-L40S"
PY = sys.executable
IMAGES = standin_images(PY)
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
LONG_NAME = "a-batch-whose-name-is-longer-than-any-label-value-can-be-" + "x" * 20
"""Its Job and Pods carry only its UID: the operator must find them by it."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


@pytest.fixture(scope="module")
def agent(cluster: Path) -> Iterator[NodeAgent]:
    node = NodeAgent(AGENT_NODE, AGENT_PRODUCT, IMAGES, gpus=2, memory_mib=46068)
    node.start()
    wait_for("the agent's node to be Ready", lambda: condition(get("node", AGENT_NODE), "Ready"))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def operator(agent: NodeAgent, s3: SeaweedFS) -> Iterator[harness.Process]:
    store = s3.config()
    process = harness.Process(
        "e2e-incluster-results-operator",
        harness.operator_process().argv,
        env={
            **harness.result_store_env(store),
            "HYBRIDGPU_GPU_NODE_SELECTOR": json.dumps({"type": "process-agent"}),
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


def _policy(namespace: str, **extra: Any) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {
            "inCluster": {
                "enabled": True,
                "gpuPrices": [
                    # The KWOK trace nodes would win on price if the operator counted them.
                    {"gpuProduct": "NVIDIA-A10", "pricePerGPUHour": "0.01"},
                    {"gpuProduct": "default", "pricePerGPUHour": "0.90"},
                ],
            },
            "external": {"enabled": False},
            "failover": {"maxAttempts": 2, "backoff": "1s"},
            **extra,
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _job(namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"estimatedDuration": "10m", "gpu": {"count": 1}, **spec},
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _pods(namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    uid = job["metadata"]["uid"]
    listed = kubectl("get", "pods", "-n", namespace, "-l", f"{LABEL_UID}={uid}", "-o", "json")
    return list(json.loads(listed.stdout)["items"])


def _presigned(url: str, s3: SeaweedFS, key_suffix: str) -> None:
    """``url`` is a SigV4 presigned URL of the result store, for an object ending so."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3.config().endpoint
    assert parts.path.endswith(key_suffix), parts.path
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
    assert s3.config().secret_access_key not in url


def _chat(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"q-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}]},
    }


def test_an_llm_job_reads_and_writes_the_store_through_presigned_urls(
    operator: harness.Process, agent: NodeAgent, s3: SeaweedFS, namespace: str
) -> None:
    _policy(namespace)
    items = [_chat(i) for i in range(7)]
    source = _write_input(s3, namespace, "chat", items)
    _job(
        namespace,
        "chat",
        {"task": "llm", "model": MODEL, "input": {"source": source, "requests": len(items)}},
    )
    job = finished(namespace, "chat")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    (attempt,) = status["attempts"]
    assert (attempt["backend"], attempt["gpuProduct"]) == ("InCluster", AGENT_PRODUCT)
    assert status["output"]["records"] == 7 and status["output"]["summary"] == "7/7"
    lines = _output(s3, job)
    assert [line["custom_id"] for line in lines] == [i["custom_id"] for i in items]
    for i, line in enumerate(lines):
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        assert content == f"[{MODEL}] question {i}"
    (pod,) = _pods(namespace, job)
    assert pod["spec"]["nodeName"] == AGENT_NODE
    ran = agent.argv[pod["metadata"]["name"]]["inference"]
    assert ran[ran.index("--model") + 1] == MODEL
    _presigned(ran[ran.index("-i") + 1], s3, "/inputs/chat.jsonl")
    _presigned(ran[ran.index("-o") + 1], s3, "/output.jsonl")
    assert status["output"]["uri"].endswith(urlsplit(ran[ran.index("-o") + 1]).path)


def test_a_text_to_image_job_runs_the_ai_runner_and_the_hybridgpu_runner(
    operator: harness.Process, agent: NodeAgent, s3: SeaweedFS, namespace: str
) -> None:
    _policy(namespace)
    prompts = ["a red fox", "a blue lake", "a green hill"]
    items = [{"custom_id": f"img-{i}", "body": {"prompt": p}} for i, p in enumerate(prompts)]
    source = _write_input(s3, namespace, "pictures", items)
    spec = {
        "task": "text-to-image",
        "model": "SG161222/RealVisXL_V4.0_Lightning",
        "input": {"source": source, "requests": len(items)},
    }
    _job(namespace, "pictures", spec)
    job = finished(namespace, "pictures")
    assert job["status"]["phase"] == "Succeeded", job["status"]
    lines = _output(s3, job)
    assert [line["custom_id"] for line in lines] == ["img-0", "img-1", "img-2"]
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        url = line["response"]["body"]["images"][0]["url"]
        assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    (pod,) = _pods(namespace, job)
    runner = agent.argv[pod["metadata"]["name"]]
    assert set(runner) == {"ai-runner", "runner"}
    assert runner["runner"][2:5] == ["hybridgpu.cli", "runner", "livepeer"]


def test_a_batch_survives_the_operator_sigkilled_while_it_runs(
    operator: harness.Process, agent: NodeAgent, s3: SeaweedFS, namespace: str
) -> None:
    _policy(namespace)
    total = 40
    items = [_chat(i) for i in range(total)]
    source = _write_input(s3, namespace, "long", items)
    spec = {
        "task": "llm",
        "model": MODEL,
        "input": {"source": source, "requests": len(items)},
        # The stand-in takes 0.15 s a request: about 6 s in all, time to kill the operator.
        "env": [{"name": "STANDIN_SECONDS_PER_REQUEST", "value": "0.15"}],
    }
    _job(namespace, LONG_NAME, spec)

    def running_pod() -> str | None:
        with agent._lock:
            names = [r.pod["metadata"]["name"] for r in agent.running.values()]
        return next((n for n in names if n.startswith("hybridgpu-")), None)

    pod_name = wait_for("the batch to run on the agent", running_pod, timeout=120, every=0.2)
    operator.kill(signal.SIGKILL)
    # The batch ends while no operator runs; the output is written all the same.
    agent.wait_finished(pod_name, timeout=120)
    operator.start()
    job = finished(namespace, LONG_NAME)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert len(status["attempts"]) == 1, status["attempts"]  # not dispatched twice
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(jobs) <= 1  # the Job may already be cleaned up; never a second one
    assert status["output"]["records"] == total
    assert [line["custom_id"] for line in _output(s3, job)] == [f"q-{i}" for i in range(total)]


def test_an_evicted_batch_resumes_from_its_checkpoint_with_each_request_once(
    operator: harness.Process, agent: NodeAgent, s3: SeaweedFS, namespace: str, tmp_path: Path
) -> None:
    """Preemption with resume: a latency-sensitive job evicts a preemptible text-to-image
    batch holding both of the agent's GPUs. The agent stops the Pod as the kubelet does
    (SIGTERM to the runner, its grace period, then the ai-runner); the runner saves its
    checkpoint through the presigned URL; the batch's next attempt sends only the rest."""
    _policy(namespace, preemption={"evict": "LowerRank"})
    total = 24
    items = [{"custom_id": f"img-{i}", "body": {"prompt": f"picture {i}"}} for i in range(total)]
    served = tmp_path / "served.jsonl"
    spec = {
        "task": "text-to-image",
        "model": "SG161222/RealVisXL_V4.0_Lightning",
        "input": {"source": _write_input(s3, namespace, "batch", items), "requests": total},
        "gpu": {"count": 2},
        "estimatedDuration": "1h",
        "preemptible": True,
        "env": [
            {"name": "STANDIN_SECONDS_PER_REQUEST", "value": "0.5"},
            {"name": "STANDIN_REQUEST_LOG", "value": str(served)},
        ],
    }
    _job(namespace, "batch", spec)
    wait_for(
        "a third of the batch to be answered",
        lambda: served.exists() and len(served.read_text().splitlines()) >= total // 3,
        timeout=120,
        every=0.2,
    )
    urgent = {
        "task": "text-to-image",
        "model": "SG161222/RealVisXL_V4.0_Lightning",
        "input": {
            "source": _write_input(s3, namespace, "urgent", items[:2]),
            "requests": 2,
        },
        "startWithin": "2m",
    }
    _job(namespace, "urgent", urgent)

    done = finished(namespace, "urgent")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    created = datetime.fromisoformat(done["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    started = datetime.fromisoformat(done["status"]["startTime"].replace("Z", "+00:00"))
    assert (started - created).total_seconds() < 120, "it did not start within its startWithin"
    # Answered by its own ai-runner: the batch's, still stopping, must not be the one it found.
    assert [line["error"] for line in _output(s3, done)] == [None, None]
    job = finished(namespace, "batch")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["preemptions"] == 1
    first, second = status["attempts"]
    assert (first["outcome"], first["preemptedBy"]) == ("Preempted", f"{namespace}/urgent")
    assert second["outcome"] == "Succeeded"
    lines = _output(s3, job)
    assert [line["custom_id"] for line in lines] == [f"img-{i}" for i in range(total)]
    assert all(line["error"] is None for line in lines)
    # Resumed, not redone: the model saw each request once, bar the one in flight when the
    # SIGTERM came (abandoned after the runner's drain time, then sent again).
    prompts = [json.loads(p) for p in served.read_text().splitlines()]
    batch_prompts = [p for p in prompts if p in {f"picture {i}" for i in range(total)}]
    assert set(batch_prompts) == {f"picture {i}" for i in range(total)}
    assert len(batch_prompts) <= total + 1, len(batch_prompts)
