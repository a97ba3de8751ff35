"""Preemption on a network end to end: a latency-sensitive job whose only place is a full Akash
offer evicts the preemptible best-effort deployment there, the operator closes it on the
network, and the job takes the GPU once the next offer refresh shows it.

The Akash stand-in offers one RTX 4090 (its deployments run until they are closed, as on
Akash); the operator, the API server and the stand-in are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.harness import get, wait_for
from tests.e2e.test_operator import _job, _phase, _policy

pytestmark = pytest.mark.e2e
PREFIX = "e2e-netevict-"
AKASH = f"{PREFIX}akash"
RTX = "NVIDIA-GeForce-RTX-4090"
ON_RTX = {"count": 1, "products": [RTX]}


@pytest.fixture(scope="module")
def stack(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Process]:
    path = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    config = yaml.safe_load(path.read_text())
    for offer in config["offers"]:
        if offer["network"] == "akash" and offer["gpuProduct"] == RTX:
            offer["available"] = 1
    path.write_text(yaml.safe_dump(config))
    with harness.running_stack(path, PREFIX) as operator:
        yield operator


def _free(provider: str, product: str) -> int | None:
    offers = (get("cp", provider).get("status") or {}).get("offers") or []
    return next((int(o["available"]) for o in offers if o["gpuProduct"] == product), None)


def test_a_latency_sensitive_job_evicts_best_effort_work_on_a_full_akash_offer(
    stack: Any, namespace: str
) -> None:
    _policy(
        namespace,
        weights={"price": 100, "latency": 0, "reliability": 0, "carbon": 0},
        inCluster={"enabled": False},
        external={"enabled": True, "providers": [AKASH]},
        failover={"maxAttempts": 3, "backoff": "1s"},
        preemption={"evict": "LowerRank", "checkpointInterval": "15m"},
    )
    _job(namespace, "best-effort", gpu=ON_RTX, estimatedDuration="24h", preemptible=True)
    wait_for("best-effort running", lambda: _phase(namespace, "best-effort") == "Running", 90)
    # Akash leases the GPU some time after the deployment is admitted; an offer refreshed in
    # between still lists it free (a race of the capacity rule, not of preemption), so wait
    # for the refresh that shows the offer full.
    wait_for("the Akash offer to read full", lambda: _free(AKASH, RTX) == 0, 60)

    _job(namespace, "urgent", gpu=ON_RTX, estimatedDuration="10m", startWithin="5m")
    try:
        wait_for("urgent running", lambda: _phase(namespace, "urgent") == "Running", 120)
    except AssertionError as exc:
        statuses = {n: get("ij", n, namespace).get("status") for n in ("urgent", "best-effort")}
        raise AssertionError(f"{exc}; statuses: {json.dumps(statuses, indent=1)}") from None

    victim = get("ij", "best-effort", namespace)["status"]
    first = victim["attempts"][0]
    assert (first["outcome"], first["provider"], first["preemptedBy"]) == (
        "Preempted",
        AKASH,
        f"{namespace}/urgent",
    )
    assert victim["preemptions"] == 1
    assert not victim.get("pendingCancels")  # the network confirmed the close
    # Running on Akash's one GPU: the stand-in leases it only once the victim's lease closed.
    urgent = get("ij", "urgent", namespace)["status"]
    assert [(a["provider"], a["gpuProduct"]) for a in urgent["attempts"]] == [(AKASH, RTX)]
    assert "Preempted" in harness.event_reasons(namespace, "best-effort")
    assert "Preempting" in harness.event_reasons(namespace, "urgent")
    # The victim waits (Akash has one GPU, now the urgent job's); it was not sent back there.
    assert len(victim["attempts"]) == 1
