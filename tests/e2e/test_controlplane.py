"""End-to-end checks of the local control plane (hack/cluster-up.sh) itself.

Real kube-apiserver + etcd + kube-controller-manager + kube-scheduler, with fake GPU nodes
simulated by kwok. Starts (and if needed builds) the cluster on first use; leaves it running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
try:
    from tests import cluster
except ImportError:  # pytest run without the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))
    from tests import cluster

sys.path.insert(0, str(REPO_ROOT / "operator"))
from hybridgpu.gpu_products import TRACE_GPU_PRODUCTS  # noqa: E402

# A cold build of the binaries can take a quarter of an hour on 2 cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

GPU_PRODUCTS = {product for product, _ in TRACE_GPU_PRODUCTS.values()}
MIN_NODES = 8


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def kwok_nodes() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    return items


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    path = cluster.ensure_cluster(REPO_ROOT)
    if len(kwok_nodes()) < MIN_NODES:
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "hack" / "load-gpu-nodes.py"),
             "--limit", str(MIN_NODES), "--kubeconfig", str(path)],
            check=True,
        )  # fmt: skip
    return path


@pytest.fixture
def namespace(kubeconfig: Path) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # The namespace's default ServiceAccount must exist before Pods can be created in it.
    wait_until(
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        30,
        f"ServiceAccount {name}/default",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_apiserver_readyz(kubeconfig: Path) -> None:
    out = cluster.kubectl("get", "--raw", "/readyz").stdout
    assert out.strip() == "ok"


def test_fake_gpu_nodes(kubeconfig: Path) -> None:
    nodes = kwok_nodes()
    assert len(nodes) >= MIN_NODES
    for node in nodes:
        labels = node["metadata"]["labels"]
        alloc = node["status"]["allocatable"]
        name = node["metadata"]["name"]
        assert int(alloc["nvidia.com/gpu"]) > 0, name
        assert labels["nvidia.com/gpu.product"] in GPU_PRODUCTS, name
        assert int(labels["nvidia.com/gpu.memory"]) > 0, name
        assert labels["nvidia.com/gpu.count"] == alloc["nvidia.com/gpu"], name
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready, f"{name} has no Ready condition"
        assert ready[0]["status"] == "True", f"{name} not Ready: {ready}"
    # spread selection: several distinct products among the first nodes
    assert len({n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes}) >= 3


def test_gpu_job_runs_on_fake_node_and_is_garbage_collected(namespace: str) -> None:
    product = "Tesla-T4"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gpu-job", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    # kwok: how long the fake container "runs" before it Succeeds
                    "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "2s"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"nvidia.com/gpu.product": product},
                    "containers": [
                        {
                            "name": "cuda",
                            # never pulled: kwok only simulates the container
                            "image": "registry.invalid/hybridgpu/noop:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job))

    def succeeded() -> bool:
        status = cluster.kubectl_json("-n", namespace, "get", "job", "gpu-job").get("status", {})
        assert not status.get("failed"), status
        return bool(status.get("succeeded") == 1)

    wait_until(succeeded, 90, "Job to succeed")

    pods = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", "job-name=gpu-job")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Succeeded"
    node_name = pod["spec"]["nodeName"]
    node = cluster.kubectl_json("get", "node", node_name)
    assert node["metadata"]["labels"]["type"] == "kwok"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == product
    # bound by kube-scheduler (not by nodeName in the spec we sent)
    scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled
    assert scheduled[0]["status"] == "True"
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events",
        "--field-selector", f"involvedObject.name={pod['metadata']['name']},reason=Scheduled",
    )["items"]  # fmt: skip
    assert any(
        e.get("reportingComponent") == "default-scheduler"
        or e.get("source", {}).get("component") == "default-scheduler"
        for e in events
    ), events

    # garbage collection: background propagation deletes the Job's Pods
    cluster.kubectl("-n", namespace, "delete", "job", "gpu-job", "--cascade=background")

    def pods_gone() -> bool:
        pods = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", "job-name=gpu-job")
        return not pods["items"]

    wait_until(
        pods_gone,
        60,
        "the Job's Pods to be garbage collected",
    )


def test_serviceaccount_token_authenticates(kubeconfig: Path) -> None:
    token = cluster.kubectl("-n", "default", "create", "token", "default").stdout.strip()
    assert token.count(".") == 2  # a JWT
    cfg = cluster.kubectl_json("config", "view", "--raw", "--minify")
    server = cfg["clusters"][0]["cluster"]["server"]
    ca_data = cfg["clusters"][0]["cluster"]["certificate-authority-data"]
    # A kubeconfig with ONLY the token: the admin client cert must not authenticate instead.
    token_cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "certificate-authority-data": ca_data}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as f:
        json.dump(token_cfg, f)
        f.flush()
        kubectl_bin = str(cluster.kubectl_path())
        who = subprocess.run(
            [kubectl_bin, "--kubeconfig", f.name, "auth", "whoami", "-o", "json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        user = json.loads(who.stdout)["status"]["userInfo"]
        assert user["username"] == "system:serviceaccount:default:default"
        version = subprocess.run(
            [kubectl_bin, "--kubeconfig", f.name, "get", "--raw", "/version"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(version.stdout)["gitVersion"].startswith("v1.")
        # RBAC is real: the default ServiceAccount may not list Secrets.
        denied = subprocess.run(
            [kubectl_bin, "--kubeconfig", f.name, "-n", "default", "get", "secrets"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert denied.returncode != 0
        assert "forbidden" in denied.stderr.lower()
