"""In-cluster Jobs run for real: the command the operator puts in the Job writes the output.

A node agent (tests/incluster/agent.py) plays the kubelet of one GPU node that KWOK leaves
alone and runs the Pods' containers as local processes: the vLLM ``run-batch`` stand-in, the
ai-runner stand-in with ``hybridgpu runner livepeer`` beside it, or a shell for container
tasks. Every Job runs in a namespace that enforces Pod Security ``restricted`` on the real
API server, so a Pod that exists was admitted.

Here the Jobs are made from the manifest directly, with the URLs of :func:`result_urls` (a
local GET/PUT object server that insists on a query string), so each runtime's command line and
failure modes are checked in isolation. tests/e2e/test_incluster_results.py runs the same
runtimes through the operator with SeaweedFS and the operator's presigned URLs, a SIGKILL of
the operator mid-batch included.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends.incluster import LABEL_UID, job_manifest
from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, get, wait_for
from tests.incluster.agent import Image, NodeAgent, standin_images
from tests.incluster.objects import ObjectServer, object_server

pytestmark = pytest.mark.e2e
AGENT_NODE = "hybridgpu-process-agent-0"
AGENT_PRODUCT = "NVIDIA-L4"
"""No KWOK node has this product, so every Job pinned to it lands on the agent's node."""
PY = sys.executable
IMAGES = {
    **standin_images(PY),
    "ghcr.io/example/batch": Image(),
}


@pytest.fixture(scope="module")
def agent(cluster: Path) -> Iterator[NodeAgent]:
    node = NodeAgent(AGENT_NODE, AGENT_PRODUCT, IMAGES)
    node.start()
    wait_for(
        "the agent's node to be Ready",
        lambda: condition(get("node", AGENT_NODE), "Ready"),
        timeout=30,
    )
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def store() -> Iterator[ObjectServer]:
    with object_server() as server:
        yield server


@pytest.fixture
def restricted(namespace: str) -> str:
    """The test's namespace, enforcing Pod Security restricted."""
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "--overwrite",
    )
    return namespace


def result_urls(store: ObjectServer, namespace: str, name: str, uid: str) -> tuple[str, str]:
    """(GET URL of the input, PUT URL of the output) of one job."""
    prefix = f"results/{namespace}/{name}/{uid}"
    return store.url(f"{prefix}/input.jsonl"), store.url(f"{prefix}/output.jsonl")


def _owner(namespace: str, name: str, spec: dict[str, Any]) -> str:
    """An InferenceJob to own the Job (no operator runs in these tests); returns its UID."""
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    return str(get("ij", name, namespace)["metadata"]["uid"])


def _run(
    store: ObjectServer, namespace: str, name: str, spec: dict[str, Any], lines: list[bytes]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Create the operator's Job for ``spec`` with ``lines`` as input; wait for it to end.

    Returns (the Job, its Pod, the output object's key)."""
    uid = _owner(namespace, name, spec)
    input_url, output_url = result_urls(store, namespace, name, uid)
    store.objects[input_url.split("/", 3)[3].split("?")[0]] = b"".join(lines)
    manifest = job_manifest(
        name=name,
        namespace=namespace,
        uid=uid,
        spec=InferenceJobSpec.model_validate(spec),
        attempt=1,
        gpu_product=AGENT_PRODUCT,
        input_url=input_url,
        output_url=output_url,
    )
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    job_name = manifest["metadata"]["name"]

    def ended() -> dict[str, Any] | None:
        job = get("job", job_name, namespace)
        done = condition(job, "Complete") or condition(job, "Failed")
        return job if done and done.get("status") == "True" else None

    job = wait_for(f"Job {job_name} to end", ended, timeout=120)
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", f"{LABEL_UID}={uid}", "-o", "json").stdout
    )["items"]
    assert len(pods) == 1, pods
    return job, pods[0], output_url.split("/", 3)[3].split("?")[0]


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _assert_restricted(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert pod["spec"]["nodeName"] == AGENT_NODE
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    # Exact toleration of the agent node's taint, nothing blanket.
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
            "effect": "NoSchedule"} in spec["tolerations"]  # fmt: skip
    assert all(t.get("key") for t in spec["tolerations"])


def test_an_llm_job_runs_vllm_run_batch_and_writes_one_line_per_custom_id(
    agent: NodeAgent, store: ObjectServer, restricted: str
) -> None:
    requests = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "Qwen/Qwen2.5-0.5B-Instruct",
                "messages": [{"role": "user", "content": f"question {i}"}],
            },
        }
        for i in range(5)
    ]
    spec = {
        "task": "llm",
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "input": {"requests": 5},
        "gpu": {"count": 1, "products": [AGENT_PRODUCT]},
        "estimatedDuration": "10m",
    }
    lines = [json.dumps(r).encode() + b"\n" for r in requests]
    job, pod, output_key = _run(store, restricted, "chat", spec, lines)
    assert condition(job, "Complete"), job["status"]
    _assert_restricted(pod)
    container = pod["spec"]["containers"][0]
    # The command is vLLM's documented CLI; the URLs come from the env, expanded by the kubelet.
    assert container["command"] == [
        "vllm", "run-batch", "-i", "$(HYBRIDGPU_INPUT_URL)", "-o", "$(HYBRIDGPU_OUTPUT_URL)",
        "--output-tmp-dir", "/scratch", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
    ]  # fmt: skip
    ran = agent.argv[pod["metadata"]["name"]]["inference"]
    assert ran[ran.index("-o") + 1] == store.url(output_key)
    assert (pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]) == 0
    out = _lines(store.objects[output_key])
    assert [o["custom_id"] for o in out] == [r["custom_id"] for r in requests]
    for i, line in enumerate(out):
        assert line["error"] is None
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == (
            f"[Qwen/Qwen2.5-0.5B-Instruct] question {i}"
        )


def test_a_text_to_image_job_runs_the_ai_runner_fed_by_the_hybridgpu_runner(
    agent: NodeAgent, store: ObjectServer, restricted: str
) -> None:
    prompts = ["a red fox", "a blue lake", "a green hill"]
    lines = [
        json.dumps({"custom_id": f"img-{i}", "body": {"prompt": p}}).encode() + b"\n"
        for i, p in enumerate(prompts)
    ]
    lines.append(json.dumps({"prompt": "no envelope", "seed": 42}).encode() + b"\n")
    spec = {
        "task": "text-to-image",
        "model": "SG161222/RealVisXL_V4.0_Lightning",
        "input": {"requests": 4},
        "gpu": {"count": 1, "products": [AGENT_PRODUCT]},
        "estimatedDuration": "10m",
    }
    job, pod, output_key = _run(store, restricted, "pictures", spec, lines)
    assert condition(job, "Complete"), job["status"]
    _assert_restricted(pod)
    sidecar = pod["spec"]["initContainers"][0]
    assert (sidecar["name"], sidecar["restartPolicy"]) == ("ai-runner", "Always")
    assert {"name": "PIPELINE", "value": "text-to-image"} in sidecar["env"]
    assert sidecar["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    runner = pod["spec"]["containers"][0]
    assert runner["command"] == ["hybridgpu", "runner", "livepeer"]
    assert "$(HYBRIDGPU_OUTPUT_URL)" in runner["args"]
    out = _lines(store.objects[output_key])
    assert [o["index"] for o in out] == [0, 1, 2, 3]
    assert [o["custom_id"] for o in out] == ["img-0", "img-1", "img-2", None]
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        url = line["response"]["body"]["images"][0]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert out[3]["response"]["body"]["images"][0]["seed"] == 42


def test_an_unreadable_input_line_fails_the_job_and_writes_no_output(
    agent: NodeAgent, store: ObjectServer, restricted: str
) -> None:
    lines = [b'{"prompt": "fine"}\n', b"not json\n"]
    spec = {
        "task": "text-to-image",
        "model": "SG161222/RealVisXL_V4.0_Lightning",
        "input": {"requests": 2},
        "gpu": {"count": 1, "products": [AGENT_PRODUCT]},
        "estimatedDuration": "10m",
    }
    job, pod, output_key = _run(store, restricted, "broken", spec, lines)
    assert condition(job, "Failed"), job["status"]
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 2
    assert output_key not in store.objects
    log = (harness.LOGS / f"agent-{pod['metadata']['name']}-runner.log").read_text()
    assert "input line 2: not JSON" in log


# -- through the operator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(agent: NodeAgent) -> Iterator[harness.Process]:
    process = harness.operator_process()
    process.start()
    try:
        wait_for("the operator's liveness", _live, timeout=60)
        yield process
    finally:
        process.kill()


def _live() -> bool:
    try:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{harness.LIVENESS_PORT}/healthz", timeout=2
        ) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _in_cluster_policy(namespace: str) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {
            "inCluster": {
                "enabled": True,
                "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}],
            },
            "external": {"enabled": False},
            "failover": {"maxAttempts": 1, "backoff": "1s"},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _container_job(namespace: str, name: str, script: str, **extra: Any) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "container",
            "image": "ghcr.io/example/batch:1",
            "command": ["sh", "-c", script],
            "input": {"requests": 1},
            "gpu": {"count": 1, "products": [AGENT_PRODUCT]},
            "estimatedDuration": "10m",
            **extra,
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _final(namespace: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = get("ij", name, namespace)
        phase = (job.get("status") or {}).get("phase")
        return job if phase in ("Succeeded", "Failed") else None

    return dict(wait_for(f"{name} to finish", done, timeout=120))


def test_the_operator_runs_a_container_job_whose_exit_code_decides_its_outcome(
    operator: harness.Process, agent: NodeAgent, restricted: str
) -> None:
    _in_cluster_policy(restricted)
    _container_job(restricted, "works", 'test -n "$HYBRIDGPU_TASK" && exit 0')
    _container_job(restricted, "breaks", "exit 3")
    works, breaks = _final(restricted, "works"), _final(restricted, "breaks")
    assert works["status"]["phase"] == "Succeeded", works["status"]
    assert works["status"]["attempts"][0]["gpuProduct"] == AGENT_PRODUCT
    assert breaks["status"]["phase"] == "Failed", breaks["status"]
    assert breaks["status"]["attempts"][0]["reason"] == "JobFailed"
    assert "container inference exited 3" in breaks["status"]["attempts"][0]["message"]
    uid = breaks["metadata"]["uid"]
    pods = json.loads(
        kubectl("get", "pods", "-n", restricted, "-l", f"{LABEL_UID}={uid}", "-o", "json").stdout
    )["items"]
    assert pods[0]["spec"]["nodeName"] == AGENT_NODE
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    _assert_restricted(pods[0])


def test_the_operator_refuses_env_that_picks_gpus_and_creates_no_job(
    operator: harness.Process, restricted: str
) -> None:
    _in_cluster_policy(restricted)
    _container_job(
        restricted, "greedy", "exit 0", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    )
    job = _final(restricted, "greedy")
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "InvalidInput", job["status"]
    assert failed["message"].startswith("spec.env[0].name: NVIDIA_VISIBLE_DEVICES")
    jobs = json.loads(kubectl("get", "jobs", "-n", restricted, "-o", "json").stdout)["items"]
    assert jobs == []


def test_a_model_task_without_an_input_object_fails_clearly_in_cluster(
    operator: harness.Process, restricted: str
) -> None:
    _in_cluster_policy(restricted)
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": "serverless", "namespace": restricted},
        "spec": {
            "task": "llm",
            "model": "Qwen/Qwen2.5-0.5B-Instruct",
            "input": {"requests": 3},
            "gpu": {"count": 1, "products": [AGENT_PRODUCT]},
            "estimatedDuration": "10m",
            # Placed anywhere, it would fail over to a network (tests/unit/
            # test_reconcile_incluster.py); pinned in-cluster, nothing else can take it.
            "placement": "InCluster",
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    job = _final(restricted, "serverless")
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "NoInputObject", job["status"]
    assert "spec.input" in failed["message"]


def test_the_namespace_really_enforces_restricted(cluster: Path, restricted: str) -> None:
    """The API server refuses the Pod a Job without our securityContext would make, so the
    Pods above ran because they comply, not because nothing was checked."""
    spec = InferenceJobSpec.model_validate(
        {
            "task": "container",
            "image": "ghcr.io/example/batch:1",
            "input": {"requests": 1},
            "estimatedDuration": "1m",
        }
    )
    template = job_manifest(
        name="lax", namespace=restricted, uid="lax", spec=spec, attempt=1, gpu_product="x"
    )["spec"]["template"]
    pod_spec = template["spec"]
    del pod_spec["securityContext"]
    for container in pod_spec["containers"]:
        del container["securityContext"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lax"}, "spec": pod_spec}
    result = kubectl("create", "-n", restricted, "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr


SLOW_TO_STOP = """
import pathlib, signal, sys, time

def stop(*_):
    time.sleep(3)  # a drain and a checkpoint take their time
    pathlib.Path(sys.argv[1]).write_text("stopped")
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
time.sleep(600)
"""


def test_the_agent_removes_a_deleted_pod_only_once_its_processes_have_stopped(
    agent: NodeAgent, namespace: str, tmp_path: Path
) -> None:
    """As the kubelet does: the Pod object goes only after its containers have stopped, also
    when other events come for it meanwhile (the Job controller removes its tracking finalizer
    at once). Else GPUs read as free while the old processes still run, and a new Pod's
    sidecar finds their port taken (the preemption test lost its ai-runner so in CI)."""
    marker = tmp_path / "stopped"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "slow-to-stop", "finalizers": ["example.com/hold"]},
        "spec": {
            "nodeName": AGENT_NODE,
            "terminationGracePeriodSeconds": 20,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [
                {
                    "name": "main",
                    "image": "ghcr.io/example/batch",
                    "command": [PY, "-c", SLOW_TO_STOP, str(marker)],
                }
            ],
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_for(
        "the pod to run",
        lambda: (
            (get("pod", "slow-to-stop", namespace).get("status") or {}).get("phase") == "Running"
        ),
    )
    kubectl("delete", "pod", "slow-to-stop", "-n", namespace, "--wait=false")
    wait_for(
        "the deletion to be seen",
        lambda: get("pod", "slow-to-stop", namespace)["metadata"].get("deletionTimestamp"),
    )
    kubectl(
        "patch",
        "pod",
        "slow-to-stop",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": null}}',
    )

    wait_for(
        "the pod to go", lambda: not get("pod", "slow-to-stop", namespace), timeout=30, every=0.1
    )
    assert marker.exists(), "the Pod was removed while its process was still stopping"
