"""Hostile inputs end to end: the operator on the local control plane and the stand-ins, with
hostile jobs (tests/hostile/corpus.py) and odd network answers beside an ordinary job of
another namespace. The operator stays up, the ordinary job succeeds, the hostile job ends
with a reason that names the field, the network's odd offers are dropped with a reason."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, control, get, wait_for
from tests.hostile.corpus import FAILED_BY_OPERATOR

pytestmark = pytest.mark.e2e
PREFIX = "hostile-"
MARKETS = [f"{PREFIX}nosana", f"{PREFIX}vastai", f"{PREFIX}akash"]
POLICY = {
    "weights": {"price": 100, "latency": 0, "reliability": 0, "carbon": 0},
    "inCluster": {"enabled": False},
    "external": {"enabled": True, "providers": MARKETS},
    "failover": {"maxAttempts": 3, "backoff": "1s"},
}


@pytest.fixture(scope="module")
def stack(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Process]:
    config = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    with harness.running_stack(config, PREFIX) as operator:
        yield operator


@pytest.fixture
def other(namespace: str) -> Iterator[str]:
    """A second namespace, for the ordinary job beside the hostile ones."""
    name = f"{namespace[:55]}-other"
    kubectl("create", "namespace", name, check=False)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(doc: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _policy(namespace: str) -> None:
    _apply(
        {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": POLICY,
        }
    )


def _job(namespace: str, name: str, **spec: Any) -> None:
    base: dict[str, Any] = {
        "task": "container",
        "image": "ghcr.io/example/batch:1",
        "input": {"requests": 10},
        "gpu": {"count": 1, "products": ["NVIDIA-GeForce-RTX-4090"]},
        "estimatedDuration": "10m",
    }
    base.update(spec)
    _apply(
        {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": "InferenceJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": base,
        }
    )


def _final(namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    def phase() -> str:
        return str((get("ij", name, namespace).get("status") or {}).get("phase") or "")

    wait_for(f"{name} to finish", lambda: phase() in ("Succeeded", "Failed"), timeout=timeout)
    return get("ij", name, namespace)


def _alive() -> bool:
    url = f"http://127.0.0.1:{harness.LIVENESS_PORT}/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def test_hostile_jobs_fail_naming_the_field_beside_an_ordinary_job(
    stack: Any, namespace: str, other: str
) -> None:
    for ns in (namespace, other):
        _policy(ns)
    for hostile in FAILED_BY_OPERATOR:
        _job(namespace, hostile.name, **hostile.spec)
    _job(other, "ordinary")
    assert _final(other, "ordinary")["status"]["phase"] == "Succeeded"
    for hostile in FAILED_BY_OPERATOR:
        job = _final(namespace, hostile.name)
        failed = condition(job, "Failed") or {}
        assert job["status"]["phase"] == "Failed", job["status"]
        assert failed.get("reason") == "InvalidSpec", failed
        assert hostile.field in failed["message"] and hostile.words in failed["message"], failed
        assert not job["status"].get("attempts"), "a hostile job was dispatched"
    assert stack.proc is not None and stack.proc.poll() is None
    assert _alive()


def test_odd_prices_and_garbage_answers_stop_no_routing(stack: Any, namespace: str) -> None:
    _policy(namespace)
    odd = {"replaceFields": {"dph_total": {"$raw": "1E+999999"}}}
    control("vastai", "/_faults", odd)
    control("akash", "/_faults", {"malformedNext": 1_000_000})
    try:
        vast = wait_for(
            "vastai offers dropped",
            lambda: (get("cp", f"{PREFIX}vastai").get("status") or {}).get("droppedOffers"),
            timeout=30,
        )
        assert "price per GPU-hour" in vast[0]["reason"]
        # Akash answers HTML: after three refresh intervals its offers are forgotten.
        wait_for(
            "akash offers expired",
            lambda: (
                "expired"
                in (condition(get("cp", f"{PREFIX}akash"), "Ready") or {}).get("message", "")
            ),
            timeout=30,
        )
        _job(namespace, "ordinary")
        job = _final(namespace, "ordinary")
        assert job["status"]["phase"] == "Succeeded", job["status"]
        assert job["status"]["attempts"][0]["provider"] == f"{PREFIX}nosana"
        for candidate in job["status"]["decision"]["candidates"]:
            assert not candidate.get("name", "").startswith(f"{PREFIX}akash/")
        assert _alive()
    finally:
        control("vastai", "/_faults", {})
        control("akash", "/_faults", {})


def test_a_job_deleted_while_its_network_fails_keeps_its_cancel_owed_until_it_lands(
    stack: Any, namespace: str, other: str
) -> None:
    """The network answers 503 to everything, so the circuit opens and the delete's cancel
    fails: the cancel is owed in status and the finalizer holds the job until the network
    confirms it, while an ordinary job elsewhere still runs. Nothing is left billing."""
    for ns in (namespace, other):
        _policy(ns)
    _job(namespace, "doomed", estimatedDuration="5h")
    wait_for(
        "doomed to run",
        lambda: (get("ij", "doomed", namespace).get("status") or {}).get("phase") == "Running",
        timeout=90,
    )
    status = get("ij", "doomed", namespace)["status"]
    provider = status["attempts"][0]["provider"].removeprefix(PREFIX)
    remote = status["externalRef"]["id"]
    control(provider, "/_faults", {"errorRate": 1.0, "errorStatus": 503})
    try:
        kubectl("delete", "ij", "doomed", "-n", namespace, "--wait=false")
        owed = wait_for(
            "the cancel to be owed",
            lambda: (get("ij", "doomed", namespace).get("status") or {}).get("pendingCancels"),
            timeout=90,
        )
        assert owed[0]["provider"] == f"{PREFIX}{provider}" and owed[0]["id"] == remote
        assert "hybridgpu.dev/work" in get("ij", "doomed", namespace)["metadata"]["finalizers"]
        assert control(provider, "/_stats")["jobs"].get(remote) == "running"
        _job(other, "ordinary")
        assert _final(other, "ordinary")["status"]["phase"] == "Succeeded"
        assert _alive()
    finally:
        control(provider, "/_faults", {})
    wait_for("the job to be gone", lambda: not get("ij", "doomed", namespace), timeout=120)
    assert control(provider, "/_stats")["jobs"].get(remote) not in (None, "running")
