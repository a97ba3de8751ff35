"""DCGM stand-in -> real Prometheus (Debian package, hack/prometheus.sh) -> inventory.telemetry.

Needs /usr/bin/prometheus, or root so that hack/prometheus.sh can install it with apt-get
(CI: ``apt-get update && apt-get install -y --no-install-recommends prometheus``). Does not need
the Kubernetes control plane: the stand-in reads a static nodes/pods JSON file. Everything runs
on 127.0.0.1 on free ports with state in a temporary directory, and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from hybridgpu.inventory.pools import gpu_nodes_index, gpu_pods_index, pools_from
from hybridgpu.inventory.telemetry import (
    GpuTelemetry,
    TelemetryUnavailable,
    fetch_gpu_telemetry,
    usable_telemetry,
)
from hybridgpu.routing.decision import RoutingDecision
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import PerGPUHour, Snapshot
from hybridgpu.routing.telemetry import CHANGED, telemetry_condition
from hybridgpu.telemetry.dcgm_exporter import fake_gpus, framebuffer_mib, gpu_utilization
from tests.unit.inventory_objects import A100, T4, node, pod
from tests.unit.routing_fixtures import job, offer, policy

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_SH = REPO_ROOT / "hack" / "prometheus.sh"
PROMETHEUS_BIN = Path(os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

if not PROMETHEUS_BIN.exists() and os.geteuid() != 0:
    pytest.skip(
        f"{PROMETHEUS_BIN} is missing and we are not root to install it; run as root: "
        "apt-get update && apt-get install -y --no-install-recommends prometheus",
        allow_module_level=True,
    )

CLUSTER = {
    "nodes": [
        node("a1", 8),
        node("a2", 8),
        node("t1", 4, T4, 15360),
        node("c1", 2, T4, 15360, cordoned=True),
        node("cpu", None, None, None),
    ],
    "pods": [
        pod("train", 2, "a1", namespace="ml"),
        pod("serve", 1, "a1"),
        pod("batch", 4, "t1"),
        pod("old", 1, "c1"),
        pod("waiting", 2, None, "Pending"),
        pod("finished", 8, "a2", "Succeeded"),
    ],
}
NODE_RECORDS = [r for n in CLUSTER["nodes"] for r in gpu_nodes_index(n).values()]
POD_RECORDS = [r for p in CLUSTER["pods"] for r in gpu_pods_index(p).values()]
PROMETHEUS_ENV: dict[str, str] = {}
"""The environment hack/prometheus.sh runs with (filled by the fixture)."""
FAULTS: list[Path] = []
"""The stand-in's faults file (filled by the fixture; absent means no faults)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus-e2e")
    cluster_json = work / "cluster.json"
    cluster_json.write_text(json.dumps(CLUSTER))
    faults = work / "faults.json"
    FAULTS[:] = [faults]
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [
            sys.executable, "-m", "hybridgpu.cli", "dcgm-exporter", "serve",
            "--from-json", str(cluster_json), "--port", str(exporter_port),
            "--interval", "1", "--noise", "0", "--faults", str(faults),
        ],
        stdout=(work / "exporter.log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = PROMETHEUS_ENV
    env.update(
        {
            **os.environ,
            "HYBRIDGPU_LOCAL_DIR": str(work / "local"),
            "HYBRIDGPU_PROMETHEUS_PORT": str(prometheus_port),
            "HYBRIDGPU_DCGM_EXPORTER_PORT": str(exporter_port),
            "HYBRIDGPU_PROMETHEUS_SCRAPE_INTERVAL": "1s",
        }
    )
    try:
        wait_http(f"http://127.0.0.1:{exporter_port}/health", 30)
        started = subprocess.run(
            [str(PROMETHEUS_SH), "start"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url == f"http://127.0.0.1:{prometheus_port}"
        yield url
    finally:
        subprocess.run(
            [str(PROMETHEUS_SH), "stop"], check=False, env=env, capture_output=True, timeout=30
        )
        exporter.terminate()
        try:
            exporter.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()


def scraped(url: str, timeout: float = 60) -> GpuTelemetry:
    """Telemetry once Prometheus has scraped every GPU node at least once."""
    deadline = time.monotonic() + timeout
    expected = {n.name for n in NODE_RECORDS}
    while True:
        try:
            telemetry = fetch_gpu_telemetry(url, timeout_seconds=3)
            if set(telemetry.nodes) == expected:
                return telemetry
        except TelemetryUnavailable:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus at {url} never had series for all of {sorted(expected)}")
        time.sleep(0.5)


def test_per_node_utilisation_through_real_prometheus(prometheus_url: str) -> None:
    telemetry = scraped(prometheus_url)
    gpus = fake_gpus(NODE_RECORDS, POD_RECORDS)
    for name, stats in telemetry.nodes.items():
        mine = [g for g in gpus if g.node == name]
        expected = sum(gpu_utilization(g, 0, noise=0) for g in mine) / len(mine)
        assert stats.gpus == len(mine)
        assert stats.utilization_percent == pytest.approx(expected), name
        assert stats.busy_gpus == sum(1 for g in mine if g.holder is not None)
        assert stats.fb_used_mib == sum(framebuffer_mib(g)[0] for g in mine)
        assert stats.fb_free_mib == sum(framebuffer_mib(g)[1] for g in mine)
    assert telemetry.nodes["a2"].utilization_percent == 0.0  # only a Succeeded pod was there
    assert telemetry.nodes["t1"].busy_gpus == 4
    assert 70 <= telemetry.nodes["t1"].utilization_percent <= 95
    assert telemetry.nodes["a1"].busy_gpus == 3


def test_pools_carry_product_utilisation_from_prometheus(prometheus_url: str) -> None:
    telemetry = scraped(prometheus_url)
    utilization = telemetry.utilization_by_product(NODE_RECORDS)
    pools = {p.gpu_product: p for p in pools_from(NODE_RECORDS, POD_RECORDS, utilization)}
    a1, a2 = telemetry.nodes["a1"], telemetry.nodes["a2"]
    assert pools[A100].utilization_percent == pytest.approx(
        (a1.utilization_percent * 8 + a2.utilization_percent * 8) / 16
    )
    # The cordoned T4 node is out of the pool's capacity but its GPUs still report telemetry.
    assert pools[T4].allocatable == 4
    assert pools[T4].utilization_percent is not None
    assert pools[T4].utilization_percent > 0


def test_prometheus_sh_status_finds_the_running_server(prometheus_url: str) -> None:
    status = subprocess.run(
        [str(PROMETHEUS_SH), "status"],
        check=False,
        env=PROMETHEUS_ENV,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert f"url={prometheus_url}" in status.stdout
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/targets", timeout=5) as response:
        targets = json.load(response)["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("dcgm-exporter", "up")]


def faults_seen(url: str, want: dict[str, str], timeout: float = 60) -> GpuTelemetry:
    """Telemetry once Prometheus reports exactly the faults ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        telemetry = scraped(url)
        if telemetry.faults() == want:
            return telemetry
        if time.monotonic() > deadline:
            pytest.fail(f"faults never became {want}; last: {telemetry.faults()}")
        time.sleep(0.5)


def test_a_job_avoids_nodes_with_xid_errors(prometheus_url: str) -> None:
    # T4 is full; both A100 nodes report XID 79 (GPU fallen off the bus) on one GPU. The job
    # goes to the external offer, and the A100 pool is shown as UnhealthyGPUs; once the faults
    # clear, it comes back to the cluster's A100s.
    faults = FAULTS[0]
    faults.write_text(
        json.dumps({"a1/0": {"DCGM_FI_DEV_XID_ERRORS": 79}, "a2/3": {"DCGM_FI_DEV_XID_ERRORS": 79}})
    )
    spec = job(task="container", image="x", gpu={"count": 1})
    pol = policy(inCluster={"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.90"}]})
    external = offer("akash", pricing=PerGPUHour(Decimal("1.50")))

    def decide_now(telemetry: GpuTelemetry) -> tuple[Snapshot, RoutingDecision]:
        fresh, problem = usable_telemetry(telemetry, time.time(), 60.0)
        assert fresh is not None, problem  # scraped a second ago, so not stale
        pools = pools_from(
            NODE_RECORDS,
            POD_RECORDS,
            faults=fresh.faults(),
            busy_by_node=fresh.busy_gpus_by_node(),
        )
        snapshot = Snapshot(
            now=datetime.now(UTC), pools=pools, offers=(external,), telemetry_available=True
        )
        return snapshot, decide(spec, pol, snapshot)

    try:
        telemetry = faults_seen(prometheus_url, {"a1": "GPU 0: XID 79", "a2": "GPU 3: XID 79"})
        snapshot, decision = decide_now(telemetry)
        assert decision.target is not None
        assert decision.target.name == external.provider + "/" + external.gpu_product
        reasons = {c.name: c.reason for c in decision.candidates}
        assert reasons[f"in-cluster/{A100}"] == "UnhealthyGPUs"
        status, reason, message = telemetry_condition(spec, pol, snapshot, decision, "")
        assert (status, reason) == (True, CHANGED)
        assert "left out 16 NVIDIA-A100-SXM4-80GB GPUs (node a1: GPU 0: XID 79)" in message
    finally:
        faults.unlink()
    telemetry = faults_seen(prometheus_url, {})
    _, decision = decide_now(telemetry)
    assert decision.target is not None
    assert decision.target.name == f"in-cluster/{A100}"
