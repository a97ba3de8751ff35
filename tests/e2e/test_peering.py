"""Two operators in one Kopf peering: only the higher priority acts, its own loops included.

Kopf pauses its watches on the lower-priority peer; the operator's work queue, admission loop
and client-driven batches are not Kopf's, and follow the same verdict (controller/peering.py).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import REPO_ROOT, kubectl
from tests.e2e import harness
from tests.e2e.harness import get, wait_for

pytestmark = pytest.mark.e2e
PREFIX = "e2e-peer-"
PEERING = "e2e-peering"
PEERING_CRDS = REPO_ROOT / "charts" / "hybridgpu" / "files" / "kopf" / "peering-crds.yaml"


@pytest.fixture(scope="module")
def peering(cluster: Path) -> Iterator[str]:
    kubectl("apply", "-f", str(PEERING_CRDS))
    wait_for(
        "the peering CRD served",
        lambda: kubectl("get", "clusterkopfpeerings", check=False).returncode == 0,
        timeout=30,
    )
    doc = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    yield PEERING
    kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found", check=False)


def _jobs(namespace: str, names: list[str]) -> None:
    policy = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"inCluster": {"enabled": False}, "failover": {"backoff": "1s"}},
    }
    items: list[dict[str, Any]] = [policy]
    for name in names:
        items.append(
            {
                "apiVersion": "hybridgpu.dev/v1alpha1",
                "kind": "InferenceJob",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "task": "container",
                    "image": "ghcr.io/example/batch:1",
                    "input": {"requests": 10},
                    "gpu": {"count": 1, "products": ["NVIDIA-GeForce-RTX-4090"]},
                    "estimatedDuration": "10m",
                },
            }
        )
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def _phases(namespace: str, names: list[str]) -> dict[str, str]:
    return {n: str((get("ij", n, namespace).get("status") or {}).get("phase") or "") for n in names}


def _network_calls(log: Path, start: int) -> list[str]:
    text = log.read_bytes()[start:].decode(errors="replace")
    return [
        line for line in text.splitlines() if "HTTP Request:" in line and "127.0.0.1:28" in line
    ]


def test_the_lower_priority_peer_acts_only_after_the_higher_one_leaves(
    peering: str, namespace: str, tmp_path: Path
) -> None:
    config = harness.standin_config(tmp_path / "standins.yaml")
    high = harness.operator_process(None, "--peering", peering, "--priority", "10")
    low = harness.operator_process(
        None,
        "--peering",
        peering,
        "--priority",
        "1",
        name="e2e-operator-low",
        metrics_port=harness.METRICS_PORT + 10,
        liveness_port=harness.LIVENESS_PORT + 10,
    )
    with harness.running_stack(config, PREFIX, operator=high):
        offset = low.log.stat().st_size if low.log.exists() else 0
        low.start()
        try:
            wait_for(
                "both peers in the peering object",
                lambda: len(get("clusterkopfpeering", peering).get("status") or {}) >= 2,
                timeout=60,
            )
            wait_for(
                "the low peer's own loops paused",
                lambda: (
                    "outrank or equal this operator" in low.log.read_text(errors="replace")[offset:]
                ),
                timeout=30,
            )
            paused_at = low.log.stat().st_size
            first = ["peer-a", "peer-b", "peer-c"]
            _jobs(namespace, first)
            wait_for(
                "jobs done by the high peer",
                lambda: set(_phases(namespace, first).values()) == {"Succeeded"},
                timeout=120,
            )
            # The paused peer called no network: no refresh, no submission, no poll.
            calls = _network_calls(low.log, paused_at)
            assert calls == [], calls[:5]

            # A rolling update: the high peer stops cleanly, the low one takes over.
            high.kill(signal.SIGTERM)
            wait_for(
                "the low peer resumed",
                lambda: "resuming: no live peer" in low.log.read_text(errors="replace")[offset:],
                timeout=90,
            )
            second = ["peer-d", "peer-e"]
            _jobs(namespace, second)
            wait_for(
                "jobs done by the low peer",
                lambda: set(_phases(namespace, second).values()) == {"Succeeded"},
                timeout=120,
            )
            assert any("POST" in line for line in _network_calls(low.log, paused_at))
            for name in first + second:
                attempts = get("ij", name, namespace)["status"]["attempts"]
                assert len(attempts) == 1, (name, attempts)  # never dispatched twice
            kubectl("delete", "ij", "--all", "-n", namespace, "--timeout=60s", check=False)
        finally:
            low.kill()
