"""A job deferred for price takes the cheap network as soon as it frees, end to end.

The stand-in Nosana offers a single RTX 4090 here (its others stay as in harness.standin_config:
Vast.ai 0.34, Akash 0.39 USD/GPU-hour against Nosana's 0.29). While one job holds it, a second
job under a policy allowing a 10% premium must wait rather than pay 17% more on Vast.ai; when
the first job ends, capacity frees on Nosana and the second is dispatched there within seconds,
not after the deferral's 6 h re-check.

The same holds in the cluster: with both GPUs of the NVIDIA-A10 pool (two one-GPU nodes among the
16 loaded ones) held by pods expected to run an hour, a job allowed a 10% premium waits rather
than take a 50x dearer free pool, and starts on an A10 as soon as one of those pods ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends.incluster import LABEL_JOB, job_manifest
from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, get, wait_for
from tests.e2e.test_operator import EXTERNAL_ONLY, PREFIX, RTX4090, _job, _phase, _policy

pytestmark = pytest.mark.e2e
NOSANA = f"{PREFIX}nosana"


@pytest.fixture(scope="module")
def one_gpu_on_nosana(
    cluster: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    config = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    doc = yaml.safe_load(config.read_text())
    for offer in doc["offers"]:
        if offer["network"] == "nosana":
            offer["available"] = 1
    config.write_text(yaml.safe_dump(doc))
    with harness.running_stack(config, PREFIX) as operator:
        yield operator


def _nosana_free() -> int:
    offers = (get("cp", NOSANA).get("status") or {}).get("offers") or []
    return sum(int(o.get("available") or 0) for o in offers)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_deferred_job_takes_the_cheap_network_once_it_frees(
    one_gpu_on_nosana: Any, namespace: str
) -> None:
    _policy(namespace, **EXTERNAL_ONLY, deferral={"maxPremiumPercent": 10})
    # About 15 s of real time at the stand-ins' time scale of 240.
    _job(namespace, "holder", gpu=RTX4090, estimatedDuration="1h")
    wait_for("holder running", lambda: _phase(namespace, "holder") == "Running", timeout=90)
    holder = get("ij", "holder", namespace)
    assert holder["status"]["attempts"][0]["provider"] == NOSANA
    wait_for("Nosana's offer to show no GPU free", lambda: _nosana_free() == 0, timeout=30)

    _job(namespace, "patient", gpu=RTX4090)
    wait_for(
        "a decision on patient",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("decision"),
        timeout=60,
    )
    status = get("ij", "patient", namespace)["status"]
    assert status["decision"]["outcome"] == "Wait", status["decision"]
    routed = condition(get("ij", "patient", namespace), "Routed")
    assert routed is not None and routed["reason"] == "DeferredForPrice", routed
    assert not status.get("attempts"), status["attempts"]

    wait_for("holder to finish", lambda: _phase(namespace, "holder") == "Succeeded", timeout=120)
    finished = _time(get("ij", "holder", namespace)["status"]["completionTime"])
    attempts = wait_for(
        "patient to be dispatched",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("attempts"),
        timeout=60,
    )
    assert [a["provider"] for a in attempts] == [NOSANA], attempts
    waited = (_time(attempts[0]["startTime"]) - finished).total_seconds()
    assert waited < 30, f"dispatched {waited:.0f}s after the GPU freed"


A10 = "NVIDIA-A10"
"""The smallest pool of the loaded nodes: two nodes of one GPU each."""
KWOK_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
"""How long kwok lets a Job's pod run before it Succeeds (hack/kwok-stages/pod-complete.yaml)."""


def _holder(namespace: str, name: str, runs_for: str) -> None:
    """A Job shaped as the operator's own in-cluster attempts (job_manifest), pinned to one A10.

    Its pods carry estimatedDuration 1h, so the operator's inventory expects their GPUs back only
    in an hour, but kwok ends them after ``runs_for``. (Pods of the operator's own Jobs all run
    the cluster-wide HYBRIDGPU_JOB_DURATION_MS, 3 s: too short to watch a job wait for them.)
    """
    spec = InferenceJobSpec.model_validate(
        {
            "task": "container",
            "image": "ghcr.io/example/batch:1",
            "input": {"requests": 1},
            "gpu": {"count": 1},
            "estimatedDuration": "1h",
        }
    )
    job = job_manifest(
        # The Job's name comes from the uid: one per holder.
        name=name,
        namespace=namespace,
        uid=f"holder-{name}",
        spec=spec,
        attempt=1,
        gpu_product=A10,
    )
    del job["metadata"]["ownerReferences"]  # no InferenceJob owns it
    job["spec"]["template"]["metadata"]["annotations"][KWOK_DELAY] = runs_for
    kubectl("apply", "-f", "-", input=json.dumps(job))


def _pods(namespace: str, name: str) -> list[dict[str, Any]]:
    """Pods of the Jobs labelled as the attempts of InferenceJob ``name`` (holders included)."""
    selector = f"{LABEL_JOB}={name}"
    out = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def _running(namespace: str, name: str) -> bool:
    pods = _pods(namespace, name)
    return bool(pods) and pods[0]["status"].get("phase") == "Running"


def _finished_at(namespace: str, name: str) -> str | None:
    """When the pod ended (kwok's terminated.finishedAt), None while it runs."""
    pods = _pods(namespace, name)
    if not pods or pods[0]["status"].get("phase") != "Succeeded":
        return None
    state = pods[0]["status"]["containerStatuses"][0]["state"]
    return str(state["terminated"]["finishedAt"])


def test_a_deferred_job_waits_for_the_busy_cheap_pool_and_starts_when_a_pod_there_ends(
    one_gpu_on_nosana: Any, namespace: str
) -> None:
    # The module's operator; this policy uses no external network.
    _policy(
        namespace,
        weights={"price": 100, "latency": 0, "reliability": 0, "carbon": 0},
        inCluster={
            "enabled": True,
            "maxQueueTime": "1m",
            "gpuPrices": [
                {"gpuProduct": A10, "pricePerGPUHour": "0.10"},
                {"gpuProduct": "default", "pricePerGPUHour": "5.00"},
            ],
        },
        external={"enabled": False},
        deferral={"maxPremiumPercent": 10},
    )
    # One A10 frees after about 30 s, the other stays busy past the test.
    _holder(namespace, "holder", runs_for="30s")
    _holder(namespace, "sitter", runs_for="1h")
    wait_for(
        "both A10s busy",
        lambda: _running(namespace, "holder") and _running(namespace, "sitter"),
        timeout=60,
    )
    nodes = {_pods(namespace, j)[0]["spec"]["nodeName"] for j in ("holder", "sitter")}
    products = {get("node", n)["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes}
    assert (len(nodes), products) == (2, {A10}), nodes

    _job(namespace, "patient")
    wait_for(
        "a decision on patient",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("decision"),
        timeout=60,
    )
    patient = get("ij", "patient", namespace)
    status = patient["status"]
    assert _finished_at(namespace, "holder") is None, "holder ended before patient was decided"
    assert status["phase"] == "Pending", status
    assert status["decision"]["outcome"] == "Wait", status["decision"]
    assert f"in-cluster/{A10}" in status["decision"]["awaiting"], status["decision"]
    routed = condition(patient, "Routed")
    assert routed is not None, status
    assert (routed["status"], routed["reason"]) == ("False", "DeferredForPrice"), routed
    assert not status.get("attempts"), status["attempts"]
    selector = f"{LABEL_JOB}=patient"
    batch = kubectl("get", "jobs", "-n", namespace, "-l", selector, "-o", "json").stdout
    assert json.loads(batch)["items"] == []

    finished = _time(
        wait_for("holder's pod to end", lambda: _finished_at(namespace, "holder"), timeout=90)
    )
    attempts = wait_for(
        "patient to be dispatched",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("attempts"),
        timeout=60,
    )
    assert [(a["backend"], a["gpuProduct"]) for a in attempts] == [("InCluster", A10)], attempts
    waited = (_time(attempts[0]["startTime"]) - finished).total_seconds()
    # Both times are whole seconds: started no earlier than the second the GPU freed.
    assert 0 <= waited < 30, f"dispatched {waited:.0f}s after the GPU freed"
    wait_for("patient to succeed", lambda: _phase(namespace, "patient") == "Succeeded", timeout=60)
