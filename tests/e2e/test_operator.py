"""The operator end to end on the real local control plane and the stand-in networks."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hybridgpu.inventory.pools import expected_end
from tests.cluster import kubectl
from tests.e2e import harness
from tests.e2e.harness import condition, control, get, wait_for

pytestmark = pytest.mark.e2e
PREFIX = "e2e-"
RTX4090 = {"count": 1, "products": ["NVIDIA-GeForce-RTX-4090"]}
"""The cluster has none of these, so such jobs must go external."""
CONTAINER_MARKETS = [f"{PREFIX}nosana", f"{PREFIX}vastai", f"{PREFIX}akash"]


@pytest.fixture(scope="module")
def stack(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Process]:
    config = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    with harness.running_stack(config, PREFIX) as operator:
        yield operator


def _policy(namespace: str, **spec: Any) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": spec,
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def _job(namespace: str, name: str, **spec: Any) -> None:
    _jobs(namespace, [name], **spec)


def _phase(namespace: str, name: str) -> str:
    return str((get("ij", name, namespace).get("status") or {}).get("phase") or "")


def _settled_status(namespace: str, name: str) -> dict[str, Any]:
    """The status a moment after the first decision, so any dispatch would have happened."""
    wait_for(
        f"a decision on {name}",
        lambda: (get("ij", name, namespace).get("status") or {}).get("decision"),
        timeout=60,
    )
    time.sleep(2)
    return dict(get("ij", name, namespace)["status"])


def _final(namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    wait_for(
        f"{name} to finish",
        lambda: _phase(namespace, name) in ("Succeeded", "Failed"),
        timeout=timeout,
    )
    return get("ij", name, namespace)


EXTERNAL_ONLY = {
    "weights": {"price": 100, "latency": 0, "reliability": 0, "carbon": 0},
    "inCluster": {"enabled": False},
    "external": {"enabled": True, "providers": CONTAINER_MARKETS},
    "failover": {"maxAttempts": 3, "backoff": "1s"},
}


def test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node(stack: Any, namespace: str) -> None:
    _policy(
        namespace,
        inCluster={
            "enabled": True,
            "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}],
        },
        external={"enabled": False},
    )
    _job(namespace, "t4-batch", gpu={"count": 1, "products": ["Tesla-T4"]})
    job = _final(namespace, "t4-batch")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"][0]["backend"] == "InCluster"
    assert status["placement"]["gpuProduct"] == "Tesla-T4"
    batch = json.loads(
        kubectl(
            "get",
            "jobs",
            "-n",
            namespace,
            "-l",
            "hybridgpu.dev/inferencejob=t4-batch",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert len(batch) == 1
    template = batch[0]["spec"]["template"]["spec"]
    assert template["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    terms = template["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["Tesla-T4"]
    pods = json.loads(
        kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            "hybridgpu.dev/inferencejob=t4-batch",
            "-o",
            "json",
        ).stdout
    )["items"]
    node = get("node", pods[0]["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"
    # The pod says how long it should take, so the inventory knows when its GPU comes back.
    assert pods[0]["metadata"]["annotations"]["hybridgpu.dev/estimated-duration"] == "10m"
    assert expected_end(pods[0]["metadata"], pods[0]["status"], bound=True) is not None
    assert batch[0]["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


def test_overflow_goes_to_the_cheapest_feasible_network(stack: Any, namespace: str) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    _job(namespace, "overflow", gpu=RTX4090)
    job = _final(namespace, "overflow")
    # The stand-ins' 4090 offers: nosana 0.29, vastai 0.34, akash 0.39 USD/GPU-hour.
    assert job["status"]["attempts"][0]["provider"] == f"{PREFIX}nosana"
    assert job["status"]["phase"] == "Succeeded", job["status"]
    events = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=overflow,reason=Routed",
        "-o",
        "json",
    ).stdout
    assert json.loads(events)["items"], "no Routed event"


def test_only_jobs_with_work_out_hold_a_finalizer_so_namespaces_stay_deletable(
    stack: Any, namespace: str
) -> None:
    # With a budget: a policy without one keeps no ledger of past spend.
    budget = {"limit": "100.00", "period": "720h", "whenExceeded": "Reject"}
    _policy(namespace, **EXTERNAL_ONLY, budget=budget)
    _job(namespace, "released", gpu=RTX4090)
    _job(namespace, "never-fits", gpu={"count": 1, "products": ["NVIDIA-B300"]})
    job = _final(namespace, "released")
    assert job["status"]["phase"] == "Succeeded"
    uid = job["metadata"]["uid"]
    # Ended: its spend is in the policy's ledger first, then the finalizer goes.
    wait_for(
        "the finalizer released",
        lambda: not get("ij", "released", namespace)["metadata"].get("finalizers"),
        timeout=30,
    )
    policy = get("rp", "default", namespace)
    assert uid in (policy.get("status") or {}).get("retired", {}), policy.get("status")
    assert not policy["metadata"].get("finalizers")  # no finalizer on policies at all
    waiting = _settled_status(namespace, "never-fits")
    assert waiting["phase"] == "Pending"
    assert not get("ij", "never-fits", namespace)["metadata"].get("finalizers")
    # Neither needs the operator to be deleted (this is what `helm uninstall` leaves behind).
    stack.kill(signal.SIGKILL)
    try:
        kubectl("delete", "ij", "released", "never-fits", "-n", namespace, "--timeout=20s")
        kubectl("delete", "rp", "default", "-n", namespace, "--timeout=20s")
    finally:
        stack.start()


def test_regions_are_never_broken(stack: Any, namespace: str) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    _job(
        namespace,
        "east-only",
        regions=["us-east"],
        gpu=RTX4090,
    )
    job = _final(namespace, "east-only")
    assert job["status"]["attempts"][0]["provider"] == f"{PREFIX}vastai"
    for candidate in job["status"]["decision"]["candidates"]:
        if candidate["provider"] in (f"{PREFIX}nosana", f"{PREFIX}akash"):
            assert not candidate["feasible"], candidate


def test_in_cluster_only_never_leaves_the_cluster(stack: Any, namespace: str) -> None:
    _policy(namespace, **{**EXTERNAL_ONLY, "inCluster": {"enabled": True}})
    before = {n: control(n, "/_stats")["created"] for n in ("nosana", "vastai", "akash")}
    _job(
        namespace,
        "stay-home",
        placement="InCluster",
        gpu=RTX4090,
    )
    status = _settled_status(namespace, "stay-home")
    assert all(a["backend"] == "InCluster" for a in status.get("attempts", []))
    assert all(
        not c["feasible"] for c in status["decision"]["candidates"] if c["backend"] == "External"
    )
    after = {n: control(n, "/_stats")["created"] for n in ("nosana", "vastai", "akash")}
    assert after == before


def test_a_network_failing_mid_job_fails_over_and_the_job_succeeds(
    stack: Any, namespace: str
) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    control("nosana", "/_faults", {"vanishRunning": True})
    try:
        _job(namespace, "survivor", gpu=RTX4090)
        job = _final(namespace, "survivor", timeout=180)
    finally:
        control("nosana", "/_faults", {})
    attempts = job["status"]["attempts"]
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert len(attempts) == 2, attempts
    assert attempts[0]["provider"] == f"{PREFIX}nosana"
    assert attempts[0]["outcome"] == "Failed" and attempts[0]["reason"] == "JobLost"
    assert attempts[1]["provider"] != f"{PREFIX}nosana"
    assert attempts[1]["outcome"] == "Succeeded"


def test_sigkill_during_dispatch_neither_duplicates_nor_loses_the_job(
    stack: harness.Process, namespace: str
) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    created_before = set(control("nosana", "/_stats")["created"])
    _job(
        namespace,
        "crashy",
        gpu=RTX4090,
        estimatedDuration="30m",
    )
    wait_for(
        "the intent",
        lambda: (get("ij", "crashy", namespace).get("status") or {}).get("externalRef"),
        timeout=60,
        every=0.05,
    )
    stack.kill(signal.SIGKILL)
    stack.start()
    job = _final(namespace, "crashy", timeout=180)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    key = f"{job['metadata']['uid']}-1"
    stats = control("nosana", "/_stats")
    assert stats["submissions"].get(key, 0) >= 1, stats  # it was sent, maybe resent by key
    created = {k: n for k, n in stats["created"].items() if k not in created_before}
    assert created == {job["status"]["attempts"][0]["externalId"]: 1}, created
    assert len(job["status"]["attempts"]) == 1


def test_deleting_a_running_job_cancels_its_remote_work(stack: Any, namespace: str) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    _job(
        namespace,
        "doomed",
        gpu=RTX4090,
        estimatedDuration="5h",
    )
    wait_for("running", lambda: _phase(namespace, "doomed") == "Running", timeout=90)
    remote = get("ij", "doomed", namespace)["status"]["externalRef"]["id"]
    kubectl("delete", "ij", "doomed", "-n", namespace, "--timeout=60s")
    phase = control("nosana", "/_stats")["jobs"].get(remote)
    assert phase not in (None, "running", "RUNNING", "Running"), phase


def test_a_budget_limit_stops_external_spend(stack: Any, namespace: str) -> None:
    # 10 minutes on the cheapest 4090 (0.29/h) is estimated at about 0.05 USD, an hour at 0.29.
    _policy(
        namespace,
        **{
            **EXTERNAL_ONLY,
            "budget": {"limit": "0.10", "period": "720h", "whenExceeded": "InClusterOnly"},
        },
    )
    _job(namespace, "small", gpu=RTX4090)
    small = _final(namespace, "small", timeout=120)
    assert small["status"]["phase"] == "Succeeded", small["status"]
    assert small["status"]["attempts"][0]["backend"] == "External"
    wait_for(
        "spend in the policy status",
        lambda: (
            (get("rp", "default", namespace).get("status") or {}).get("spent")
            == small["status"]["cost"]["accrued"]
        ),
        timeout=30,
    )
    _job(
        namespace,
        "large",
        gpu=RTX4090,
        estimatedDuration="1h",
    )
    status = _settled_status(namespace, "large")
    assert not status.get("attempts"), status
    routed = condition({"status": status}, "Routed") or {}
    assert "Budget" in routed.get("reason", "") + routed.get("message", ""), routed


def test_deleting_a_provider_fails_its_active_jobs_over_first(stack: Any, namespace: str) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    _job(namespace, "evicted", gpu=RTX4090, estimatedDuration="5h")
    wait_for("running", lambda: _phase(namespace, "evicted") == "Running", timeout=90)
    remote = get("ij", "evicted", namespace)["status"]["externalRef"]["id"]
    assert get("ij", "evicted", namespace)["status"]["attempts"][0]["provider"] == f"{PREFIX}nosana"
    try:
        kubectl("delete", "cp", f"{PREFIX}nosana", "--wait=false")
        wait_for("the provider to be gone", lambda: not get("cp", f"{PREFIX}nosana"), timeout=60)
        attempts = get("ij", "evicted", namespace)["status"]["attempts"]
        assert (attempts[0]["outcome"], attempts[0]["reason"]) == ("Failed", "ProviderGone")
        assert control("nosana", "/_stats")["jobs"].get(remote) not in (None, "running")
        wait_for(
            "the next attempt",
            lambda: len(get("ij", "evicted", namespace)["status"].get("attempts", [])) == 2,
            timeout=60,
        )
        assert get("ij", "evicted", namespace)["status"]["attempts"][1]["provider"] in (
            f"{PREFIX}vastai",
            f"{PREFIX}akash",
        )
    finally:
        harness.install_providers(PREFIX)


def test_the_operator_answers_its_liveness_probe(stack: Any) -> None:
    url = f"http://127.0.0.1:{harness.LIVENESS_PORT}/healthz"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200


def test_the_operator_serves_its_metrics(stack: Any) -> None:
    url = f"http://127.0.0.1:{harness.METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    routed = re.search(
        r'hybridgpu_decisions_total\{outcome="Routed",reason="\w+",target="[^"]+"\} ([0-9.]+)',
        text,
    )
    assert routed is not None and float(routed.group(1)) >= 1, text[:2000]
    for name in (
        "hybridgpu_decision_duration_seconds_count",
        'hybridgpu_jobs{phase="Succeeded"}',
        "hybridgpu_time_to_routed_seconds_count",
        "hybridgpu_time_to_running_seconds_count",
        "hybridgpu_external_spend_usd_total",
        'hybridgpu_provider_circuit_open{provider="e2e-vastai"} 0.0',
        "hybridgpu_failovers_total",
    ):
        assert name in text, name


def test_suspend_cancels_running_work_and_resume_runs_it_again(stack: Any, namespace: str) -> None:
    _policy(namespace, **EXTERNAL_ONLY)
    _job(namespace, "napper", gpu=RTX4090, estimatedDuration="5h")
    wait_for("running", lambda: _phase(namespace, "napper") == "Running", timeout=90)
    remote = get("ij", "napper", namespace)["status"]["externalRef"]["id"]
    kubectl(
        "patch", "ij", "napper", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_for("suspended", lambda: _phase(namespace, "napper") == "Suspended", timeout=60)
    assert control("nosana", "/_stats")["jobs"].get(remote) not in (None, "running")
    attempts = get("ij", "napper", namespace)["status"]["attempts"]
    assert (attempts[0]["outcome"], attempts[0]["reason"]) == ("Cancelled", "Suspended")
    kubectl(
        "patch", "ij", "napper", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_for("running again", lambda: _phase(namespace, "napper") == "Running", timeout=90)
    attempts = get("ij", "napper", namespace)["status"]["attempts"]
    assert len(attempts) == 2 and attempts[1]["provider"] == f"{PREFIX}nosana"


def _jobs(namespace: str, names: list[str], **spec: Any) -> None:
    """Create several InferenceJobs in one request, as a burst arrives."""
    base: dict[str, Any] = {
        "task": "container",
        "image": "ghcr.io/example/batch:1",
        "input": {"requests": 10},
        "gpu": {"count": 1},
        "estimatedDuration": "10m",
    }
    base.update(spec)
    items = [
        {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": "InferenceJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": base,
        }
        for name in names
    ]
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def _decided(namespace: str, names: list[str]) -> dict[str, dict[str, Any]]:
    def all_decided() -> dict[str, dict[str, Any]] | None:
        items = json.loads(kubectl("get", "ij", "-n", namespace, "-o", "json").stdout)["items"]
        statuses = {i["metadata"]["name"]: i.get("status") or {} for i in items}
        done = all(
            s.get("attempts") or condition({"status": s}, "Failed") for s in statuses.values()
        )
        return statuses if len(statuses) == len(names) and done else None

    found: dict[str, dict[str, Any]] = wait_for("every job decided", all_decided, timeout=120)
    return found


def test_a_burst_against_a_budget_dispatches_exactly_what_fits(stack: Any, namespace: str) -> None:
    limit = Decimal("1.00")
    _policy(
        namespace,
        **{
            **EXTERNAL_ONLY,
            "budget": {"limit": str(limit), "period": "720h", "whenExceeded": "Reject"},
        },
    )
    names = [f"burst-{i:02d}" for i in range(12)]
    _jobs(namespace, names, gpu=RTX4090, estimatedDuration="1h")
    statuses = _decided(namespace, names)
    dispatched = [s["attempts"][0] for s in statuses.values() if s.get("attempts")]
    rejected = [s for s in statuses.values() if not s.get("attempts")]
    committed = sum((Decimal(a["estimatedCost"]) for a in dispatched), Decimal(0))
    assert dispatched and rejected, statuses
    assert committed <= limit
    for status in rejected:
        failed = condition({"status": status}, "Failed") or {}
        assert failed.get("reason") == "BudgetExceeded", status
        # Nothing that would have fitted was refused.
        over = [c for c in status["decision"]["candidates"] if c["reason"] == "BudgetExceeded"]
        assert over, status["decision"]
        cheapest = min(Decimal(c["estimatedCost"]) for c in over)
        assert cheapest > limit - committed
    # The ledger in the policy's status, and kubectl's columns for it.
    wait_for(
        "the committed spend in the policy status",
        lambda: (
            Decimal((get("rp", "default", namespace).get("status") or {}).get("committed") or "0")
            == committed
        ),
        timeout=30,
    )
    status = get("rp", "default", namespace)["status"]
    assert Decimal(status["remaining"]) == limit - committed
    header = kubectl("get", "rp", "default", "-n", namespace).stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "LIMIT", "COMMITTED", "SPENT", "REMAINING"]
    # Deleting the jobs gives no budget back: once they have cost something, delete them.
    wait_for(
        "spend accrued by the running jobs",
        lambda: (
            Decimal((get("rp", "default", namespace).get("status") or {}).get("spent") or 0) > 0
        ),
        timeout=90,
    )
    status = get("rp", "default", namespace)["status"]
    spent_before = Decimal(status["spent"])
    running = [n for n, s in statuses.items() if s.get("attempts")]
    kubectl("delete", "ij", *running, "-n", namespace, "--timeout=60s")
    wait_for(
        "the deleted jobs' spend in the ledger",
        lambda: (
            (get("rp", "default", namespace).get("status") or {}).get("retired")
            or Decimal(
                (get("rp", "default", namespace).get("status") or {}).get("retiredSpent") or 0
            )
        ),
        timeout=30,
    )
    time.sleep(12)  # a ledger tick after the deletions
    after = get("rp", "default", namespace)["status"]
    assert Decimal(after["spent"]) >= spent_before


def test_a_burst_on_free_gpus_is_all_routed_and_none_waits(stack: Any, namespace: str) -> None:
    _policy(
        namespace,
        inCluster={"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]},
        external={"enabled": False},
    )
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    products: dict[str, int] = {}
    for node in nodes:
        product = node["metadata"]["labels"].get("nvidia.com/gpu.product")
        if product:
            products[product] = products.get(product, 0) + int(
                node["status"]["allocatable"].get("nvidia.com/gpu", 0)
            )
    product, gpus = max(products.items(), key=lambda kv: kv[1])
    count = min(gpus // 2, 40)
    names = [f"gpu-{i:02d}" for i in range(count)]
    _jobs(
        namespace,
        names,
        gpu={"count": 1, "products": [product]},
        placement="InCluster",
        estimatedDuration="2h",
    )
    statuses = _decided(namespace, names)
    waited = [n for n, s in statuses.items() if not s.get("attempts")]
    assert not waited, {n: statuses[n].get("decision", {}).get("message") for n in waited}


def test_a_provider_deleted_while_the_operator_was_down_is_drained_at_start(
    stack: Any, namespace: str
) -> None:
    """Kopf starts no daemon for an object already in deletion, so nothing else would build
    the adapter that stops the work still billing there. Last in the module: it restarts
    the operator, whose metrics the tests above read."""
    _policy(namespace, **EXTERNAL_ONLY)
    _job(namespace, "orphaned", gpu=RTX4090, estimatedDuration="5h")
    wait_for("running", lambda: _phase(namespace, "orphaned") == "Running", timeout=90)
    status = get("ij", "orphaned", namespace)["status"]
    remote = status["externalRef"]["id"]
    assert status["attempts"][0]["provider"] == f"{PREFIX}nosana"
    try:
        stack.kill(signal.SIGKILL)
        kubectl("delete", "cp", f"{PREFIX}nosana", "--wait=false")
        assert get("cp", f"{PREFIX}nosana")["metadata"]["deletionTimestamp"]  # held, not gone
        assert control("nosana", "/_stats")["jobs"].get(remote) == "running"
        stack.start()
        wait_for("the provider to be gone", lambda: not get("cp", f"{PREFIX}nosana"), timeout=90)
        attempts = get("ij", "orphaned", namespace)["status"]["attempts"]
        assert (attempts[0]["outcome"], attempts[0]["reason"]) == ("Failed", "ProviderGone")
        assert control("nosana", "/_stats")["jobs"].get(remote) not in (None, "running")
        wait_for(
            "the next attempt",
            lambda: len(get("ij", "orphaned", namespace)["status"].get("attempts", [])) == 2,
            timeout=60,
        )
    finally:
        if not stack.alive():
            stack.start()
        harness.install_providers(PREFIX)
