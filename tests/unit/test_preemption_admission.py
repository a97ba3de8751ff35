"""Preemption in the admission loop: a latency-sensitive job that the cluster cannot start in
time evicts the newest preemptible best-effort attempt, once, and takes its GPUs; the victim
queues again behind it, its eviction counted and billed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hybridgpu.backends.cluster_backend import AttemptJob, AttemptPod
from hybridgpu.backends.incluster import JobState
from hybridgpu.controller.reconcile import JobStep
from hybridgpu.inventory.pools import pod_record

from .inventory_objects import pod
from .test_admission import Cluster, in_cluster_job, routed_reason

PRICES = {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}]}
PREEMPTING_POLICY = {
    "inCluster": PRICES,
    "preemption": {"evict": "LowerRank", "checkpointInterval": "15m"},
}


def run(cluster: Cluster, name: str, minutes_ago: int) -> None:
    """Mark job ``name``'s attempt 1 Running for ``minutes_ago`` with its Pod bound on n1."""
    body = cluster.api.jobs[name]
    attempt = body["status"]["attempts"][-1]
    since = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(microsecond=0)
    attempt["outcome"] = "Running"
    attempt["runningSince"] = since.isoformat().replace("+00:00", "Z")
    attempt["externalId"] = f"job-{name}"
    cluster.version_bump(body)
    uid = body["metadata"]["uid"]
    labels = {
        "hybridgpu.dev/inferencejob": name,
        "hybridgpu.dev/inferencejob-uid": uid,
        "hybridgpu.dev/attempt": "1",
    }
    pod_body = pod(f"pod-{name}", 1, "n1", "Running", namespace="ns", labels=labels)
    cluster.pods.append(pod_record(pod_body))
    cluster.attempt_pods.add(f"{uid}/1")
    cluster.pod_records[f"{uid}/1"] = [AttemptPod(f"pod-{name}", "Running", since, (), "n1")]
    cluster.runtime.observe(copy.deepcopy(body))


def gone(cluster: Cluster, name: str) -> None:
    """The evicted attempt's Pod has terminated and left the indexes."""
    cluster.pods = [p for p in cluster.pods if p.name != f"pod-{name}"]
    uid = cluster.api.jobs[name]["metadata"]["uid"]
    cluster.pod_records.pop(f"{uid}/1", None)


async def arrive(cluster: Cluster, name: str, spec: dict[str, Any]) -> str:
    # Created now, not at the module's NOW: the suite may have run for many minutes since.
    body = cluster.api.add(name, spec, datetime.now(UTC))
    cluster.runtime.observe(body)
    await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    return str(body["metadata"]["uid"])


async def two_running(policy: dict[str, Any], **victim: Any) -> Cluster:
    cluster = Cluster(policy_spec=policy, gpus=2)
    await cluster.burst(2, in_cluster_job(estimatedDuration="4h", **victim))
    run(cluster, "j0000", minutes_ago=120)
    run(cluster, "j0001", minutes_ago=20)
    return cluster


def queued_event_reasons(cluster: Cluster) -> set[str]:
    queue = cluster.runtime.events._queue
    return {body["reason"] for _, body in list(queue._queue)}  # type: ignore[attr-defined]


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.api.jobs[name].get("status") or {}


async def test_a_late_latency_sensitive_job_evicts_the_newest_preemptible_attempt() -> None:
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))

    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    (routed,) = [c for c in status(cluster, "urgent")["conditions"] if c["type"] == "Routed"]
    assert "evicting preemptible ns/j0001 on node n1" in routed["message"]
    victim = status(cluster, "j0001")
    last = victim["attempts"][-1]
    assert (last["outcome"], last["reason"]) == ("Preempted", "Preempted")
    assert victim["preemptions"] == 1
    assert routed_reason(victim) == ("Waiting", "Preempted")
    # 20 minutes (and the test's own seconds) on one GPU at $1.00/GPU-h, billed to now.
    assert Decimal("0.3333") <= Decimal(last["cost"]) < Decimal("0.34")
    assert "delete job-j0001" in cluster.api.log
    assert not victim.get("pendingCancels")  # the Job's delete went through
    assert status(cluster, "j0000")["attempts"][-1]["outcome"] == "Running"  # the older one
    assert {"Preempted", "Preempting"} <= queued_event_reasons(cluster)

    # Decided again while the Pod terminates: its GPU is coming back, nothing more is evicted.
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert status(cluster, "j0000")["attempts"][-1]["outcome"] == "Running"
    assert cluster.api.log.count("delete job-j0001") == 1

    # The Pod is gone: the evicting job goes first and takes the GPU; the victim waits.
    gone(cluster, "j0001")
    for name in ("urgent", "j0001"):
        cluster.runtime.observe(copy.deepcopy(cluster.api.jobs[name]))
    victim_uid = cluster.api.jobs["j0001"]["metadata"]["uid"]
    # Past the victim's failover backoff, so that both are decided in this cycle.
    cluster.api.jobs["j0001"]["status"]["attempts"][-1]["endTime"] = (
        (datetime.now(UTC) - timedelta(minutes=1))
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )
    cluster.version_bump(cluster.api.jobs["j0001"])
    cluster.runtime.observe(copy.deepcopy(cluster.api.jobs["j0001"]))
    await cluster.runtime.admission.cycle([victim_uid, ls])
    urgent = status(cluster, "urgent")
    assert routed_reason(urgent)[0] == "Routed"
    assert urgent["attempts"][-1]["backend"] == "InCluster"
    victim = status(cluster, "j0001")
    assert len(victim["attempts"]) == 1  # not back on the GPU it lost
    assert routed_reason(victim)[0] == "Waiting"


async def test_work_that_is_not_preemptible_is_never_evicted() -> None:
    cluster = await two_running(PREEMPTING_POLICY)
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert routed_reason(status(cluster, "urgent"))[1] != "Preempting"
    assert all(
        status(cluster, n)["attempts"][-1]["outcome"] == "Running" for n in ("j0000", "j0001")
    )
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_a_policy_without_preemption_never_evicts() -> None:
    cluster = await two_running({"inCluster": PRICES}, preemptible=True)
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert routed_reason(status(cluster, "urgent"))[1] != "Preempting"
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_work_of_equal_rank_is_never_evicted() -> None:
    # The running work has a startWithin too: same rank as the newcomer.
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True, startWithin="24h")
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert routed_reason(status(cluster, "urgent"))[1] != "Preempting"
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_best_effort_work_never_evicts() -> None:
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    await arrive(cluster, "later", in_cluster_job(estimatedDuration="1h"))
    assert routed_reason(status(cluster, "later"))[1] != "Preempting"
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_a_job_already_past_its_start_within_evicts_nothing() -> None:
    # Created 10 minutes ago with a 5m startWithin (an operator that was down, a job that
    # waited): no eviction can start it in time any more, so it waits like any other.
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    spec = in_cluster_job(estimatedDuration="1h", startWithin="5m")
    body = cluster.api.add("late", spec, datetime.now(UTC) - timedelta(minutes=10))
    cluster.runtime.observe(body)
    await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    assert routed_reason(status(cluster, "late")) != ("Waiting", "Preempting")
    assert all(
        status(cluster, n)["attempts"][-1]["outcome"] == "Running" for n in ("j0000", "j0001")
    )
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_a_victim_that_moved_on_is_not_evicted_and_the_evictor_decides_again() -> None:
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    # The cache still shows j0001 running, but the API server has a newer version of it.
    cluster.version_bump(cluster.api.jobs["j0001"])
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert "409 j0001" in cluster.api.log
    assert status(cluster, "j0001")["attempts"][-1]["outcome"] == "Running"
    assert "delete job-j0001" not in cluster.api.log


async def test_a_victim_whose_job_just_completed_is_not_evicted() -> None:
    """Its Job succeeded after the view was read (the Pod still listed running): evicting it
    would delete finished work and run it again. The evictor decides again instead."""
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    uid = cluster.api.jobs["j0001"]["metadata"]["uid"]
    done = datetime.now(UTC)
    cluster.job_records[f"{uid}/1"] = [
        AttemptJob("job-j0001", "job-uid", JobState.SUCCEEDED, done, "")
    ]
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert status(cluster, "j0001")["attempts"][-1]["outcome"] == "Running"
    assert not status(cluster, "j0001").get("preemptions")
    assert "delete job-j0001" not in cluster.api.log
    assert status(cluster, "j0000")["attempts"][-1]["outcome"] == "Running"


async def test_a_job_delete_that_failed_is_owed_and_done_after_a_restart() -> None:
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    real_delete = cluster.api.delete_batch_job

    async def down(ns: str, name: str) -> None:
        raise RuntimeError("the API server went away")

    cluster.api.delete_batch_job = down  # type: ignore[method-assign]
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    victim = status(cluster, "j0001")
    assert victim["attempts"][-1]["outcome"] == "Preempted"  # the intent was written first
    (owed,) = victim["pendingCancels"]
    assert (owed["provider"], owed["id"], owed["attempt"]) == ("in-cluster", "job-j0001", 1)
    # Owed and counted as a try, as a network's failed cancel is: not the job's own failure.
    assert owed["tries"] == 1
    assert owed["lastError"] == "deleting the attempt's Job failed: RuntimeError"

    cluster.api.delete_batch_job = real_delete  # type: ignore[method-assign]
    runtime = cluster.restart()
    await runtime.work(cluster.api.jobs["j0001"]["metadata"]["uid"])
    assert "delete job-j0001" in cluster.api.log
    assert not status(cluster, "j0001").get("pendingCancels")


async def test_the_evicted_job_does_not_take_back_the_gpus_held_for_its_evictor() -> None:
    cluster = await two_running(PREEMPTING_POLICY, preemptible=True)
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    gone(cluster, "j0001")
    victim = cluster.api.jobs["j0001"]
    victim["status"]["attempts"][-1]["endTime"] = (
        (datetime.now(UTC) - timedelta(minutes=1))
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )
    cluster.version_bump(victim)
    cluster.runtime.observe(copy.deepcopy(victim))
    # The victim is decided alone, before the evictor hears that the Pod is gone.
    await cluster.runtime.admission.cycle([victim["metadata"]["uid"]])
    assert len(status(cluster, "j0001")["attempts"]) == 1
    assert routed_reason(status(cluster, "j0001"))[0] == "Waiting"
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent"))[0] == "Routed"
    assert ls not in cluster.runtime.admission.nominated


async def test_work_about_to_end_by_itself_is_spared() -> None:
    cluster = Cluster(policy_spec=PREEMPTING_POLICY, gpus=2)
    for name, duration in (("long", "4h"), ("short", "22m")):
        body = cluster.api.add(name, in_cluster_job(estimatedDuration=duration, preemptible=True))
        cluster.runtime.observe(body)
        await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    run(cluster, "long", minutes_ago=120)
    run(cluster, "short", minutes_ago=20)  # ends in about 2 minutes, within the 5m deadline
    await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert status(cluster, "long")["attempts"][-1]["outcome"] == "Preempted"
    assert status(cluster, "short")["attempts"][-1]["outcome"] == "Running"


async def test_an_evicted_job_never_queues_a_pod_for_the_gpus_it_gave_up() -> None:
    # A queue long enough that the engine would send it to the pool to wait for a GPU: its Pod
    # would then race the evictor's in kube-scheduler's queue.
    policy = {**PREEMPTING_POLICY, "inCluster": {**PRICES, "maxQueueTime": "8h"}}
    cluster = await two_running(policy, preemptible=True)
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    gone(cluster, "j0001")
    victim = cluster.api.jobs["j0001"]
    victim["status"]["attempts"][-1]["endTime"] = (
        (datetime.now(UTC) - timedelta(minutes=1))
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )
    cluster.version_bump(victim)
    cluster.runtime.observe(copy.deepcopy(victim))
    await cluster.runtime.admission.cycle([ls, victim["metadata"]["uid"]])
    assert status(cluster, "urgent")["attempts"][-1]["backend"] == "InCluster"
    after = status(cluster, "j0001")
    assert len(after["attempts"]) == 1  # no second attempt queued behind the evictor
    (routed,) = [c for c in after["conditions"] if c["type"] == "Routed"]
    assert (routed["status"], routed["reason"]) == ("False", "Preempted")
    assert "waits for a free" in routed["message"]
    # A job never evicted, under the same policy, does queue for the busy pool.
    await arrive(cluster, "fresh", in_cluster_job(estimatedDuration="1h", preemptible=True))
    assert status(cluster, "fresh")["attempts"][-1]["outcome"] == "Dispatching"


async def test_a_waiting_job_is_decided_again_when_preemptible_work_starts_running() -> None:
    # Both GPUs promised to preemptible best-effort work whose Pods are not bound yet: nothing
    # is free and nothing evictable, so the latency-sensitive job is told to wait.
    cluster = Cluster(policy_spec=PREEMPTING_POLICY, gpus=2)
    await cluster.burst(2, in_cluster_job(estimatedDuration="4h", preemptible=True))
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert routed_reason(status(cluster, "urgent"))[0] == "Waiting"
    assert routed_reason(status(cluster, "urgent"))[1] != "Preempting"
    assert ls in cluster.runtime.admission.waiting
    assert ls not in cluster.runtime.admission.queue.requested

    # j0001's Pod starts: tracking marks its attempt running. That must decide the waiting
    # job again, not leave it to its retry (which is hours away for a queue this long).
    body = cluster.api.jobs["j0001"]
    step = JobStep(
        copy.deepcopy(body), cluster.runtime.deps(), cluster.runtime.events.emit_for(body)
    )
    step.mark_running(datetime.now(UTC))
    assert ls in cluster.runtime.admission.queue.requested

    # Decided again with the Pods bound: it evicts the newer of them.
    run(cluster, "j0000", minutes_ago=30)
    run(cluster, "j0001", minutes_ago=1)
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert status(cluster, "j0001")["attempts"][-1]["outcome"] == "Preempted"


async def test_a_job_that_is_not_preemptible_starting_wakes_nobody() -> None:
    cluster = Cluster(policy_spec=PREEMPTING_POLICY, gpus=2)
    await cluster.burst(2, in_cluster_job(estimatedDuration="4h"))
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    assert ls in cluster.runtime.admission.waiting
    body = cluster.api.jobs["j0001"]
    step = JobStep(
        copy.deepcopy(body), cluster.runtime.deps(), cluster.runtime.events.emit_for(body)
    )
    generation = cluster.registry.wakeup.generation
    step.mark_running(datetime.now(UTC))
    # Nothing it could use appeared: no GPU came free and nothing it may evict started.
    assert cluster.registry.wakeup.generation == generation
    assert ls not in cluster.runtime.admission.queue.requested


async def test_a_preemptible_start_wakes_only_jobs_that_may_still_evict() -> None:
    """As in the replay: a job past its startWithin would evict nothing (the rule), and a
    deferred job gains nothing from work that took GPUs; only the one still in time is
    decided again."""
    cluster = Cluster(policy_spec=PREEMPTING_POLICY, gpus=2)
    await cluster.burst(2, in_cluster_job(estimatedDuration="4h", preemptible=True))
    ls = await arrive(cluster, "urgent", in_cluster_job(estimatedDuration="1h", startWithin="5m"))
    late_body = cluster.api.add(
        "late",
        in_cluster_job(estimatedDuration="1h", startWithin="5m"),
        datetime.now(UTC) - timedelta(minutes=30),
    )
    cluster.runtime.observe(late_body)
    late = str(late_body["metadata"]["uid"])
    await cluster.runtime.admission.cycle([late])
    assert {ls, late} <= cluster.runtime.admission.waiting
    generation = cluster.registry.wakeup.generation

    body = cluster.api.jobs["j0001"]
    step = JobStep(
        copy.deepcopy(body), cluster.runtime.deps(), cluster.runtime.events.emit_for(body)
    )
    step.mark_running(datetime.now(UTC))
    assert ls in cluster.runtime.admission.queue.requested
    assert late not in cluster.runtime.admission.queue.requested
    # Not a release: jobs deferred for price, woken by the generation, sleep on.
    assert cluster.registry.wakeup.generation == generation
