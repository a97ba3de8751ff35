"""The job reconcile step against in-memory fakes of the API server and a network.

These pin the promises that make restarts and failover safe: the intent is written before any
submission, the same idempotency key is reused, failed candidates are never retried, and each
attempt is recorded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hybridgpu.api.computeprovider import ComputeProviderSpec, ProviderType, TrustTier
from hybridgpu.api.inferencejob import Attempt, InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.backends.cluster_backend import (
    AttemptJob,
    AttemptPod,
    InClusterBackend,
    attempt_job,
    attempt_pod,
    job_keys,
)
from hybridgpu.controller.claims import job_hold
from hybridgpu.controller.reconcile import Deps, JobStep
from hybridgpu.controller.registry import ProviderEntry, Registry
from hybridgpu.kube import Conflict
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import BadRequest, NetworkError, Unavailable
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, PerGPUHour, Snapshot

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RTX = "NVIDIA-GeForce-RTX-4090"


class Crash(Exception):
    """Stands for the operator process dying in the middle of a call."""


@dataclass
class FakeKube:
    obj: dict[str, Any]
    log: list[str] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)

    async def patch_job_status(
        self, ns: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        meta = self.obj["metadata"]
        if resource_version is not None and resource_version != meta["resourceVersion"]:
            self.log.append("conflict")
            raise Conflict(f"{name} changed")
        status = self.obj.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.log.append("patch")
        return copy.deepcopy(self.obj)

    async def set_job_finalizers(
        self, ns: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        meta = self.obj["metadata"]
        if resource_version != meta["resourceVersion"]:
            self.log.append("conflict")
            raise Conflict(f"{name} changed")
        meta["finalizers"] = list(finalizers)
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.log.append("finalizer")
        return copy.deepcopy(self.obj)

    async def create_batch_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        self.log.append(f"create {name}")
        if name not in self.jobs:
            self.jobs[name] = copy.deepcopy(manifest)
            self.jobs[name]["metadata"]["uid"] = f"job-uid-{name}"
        return self.jobs[name]

    async def get_batch_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    async def delete_batch_job(self, ns: str, name: str) -> None:
        self.log.append(f"delete {name}")
        self.jobs.pop(name, None)

    def indexed_jobs(self, key: str) -> list[AttemptJob]:
        """As the operator's Job index (handlers/indexes.py) would hold ``self.jobs``."""
        return [attempt_job(job) for job in self.jobs.values() if key in job_keys(job)]

    def indexed_pods(self, key: str) -> list[AttemptPod]:
        """``self.pods`` are the Pods of the one Job a test has (the index's job: key)."""
        return [attempt_pod(pod) for pod in self.pods] if key.startswith("job:") else []


@dataclass
class FakeNetwork:
    """An idempotent network: one remote job per key, whatever the number of submissions."""

    name: str
    log: list[str]
    state: str = "Running"
    price: Decimal | None = None
    crash_on_submit: bool = False
    fail_after_create: NetworkError | None = None
    """Raised by ``submit`` once the remote job exists (an answer lost after creation)."""
    cancel_failures: int = 0
    """How many of the next cancels fail."""
    crash_on_cancel: bool = False
    accrued: Decimal = Decimal("0.05")
    submissions: list[tuple[str, Checkpoint | None]] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    circuit_state: str = "Closed"
    unattended: bool = False
    """As a container marketplace's adapter: the work runs without this process."""
    error_rate: float = 0.0
    start_latency: tuple[float | None, float | None] = (None, None)

    async def submit(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
        checkpoint: Checkpoint | None = None,
        requests: list[dict[str, Any]] | None = None,
    ) -> RemoteRef:
        self.log.append(f"submit {self.name} {idempotency_key}")
        self.submissions.append((idempotency_key, checkpoint))
        if self.crash_on_submit:
            raise Crash
        remote = self.created.setdefault(idempotency_key, f"{self.name}-{len(self.created) + 1}")
        if self.fail_after_create is not None:
            raise self.fail_after_create
        return RemoteRef(self.name, remote, idempotency_key)

    async def find(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
    ) -> RemoteRef | None:
        self.log.append(f"find {self.name} {idempotency_key}")
        remote = self.created.get(idempotency_key)
        return None if remote is None else RemoteRef(self.name, remote, idempotency_key)

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        self.log.append(f"status {ref.id}")
        return RemoteStatus(
            self.state,
            completed=3,
            total=10,
            accrued_usd=self.accrued,
            price_per_gpu_hour=self.price,
            checkpoint=Checkpoint.from_done([0, 1, 2]),
        )

    async def cancel(self, ref: RemoteRef) -> None:
        if self.crash_on_cancel:
            raise Crash
        if self.cancel_failures > 0:
            self.cancel_failures -= 1
            raise Unavailable(self.name, "502 from the network")
        self.cancelled.append(ref.id)

    async def list_offers(self) -> list[ExternalOffer]:
        return []

    async def result(self, ref: RemoteRef) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def offer(provider: str, usd: str) -> ExternalOffer:
    return ExternalOffer(
        provider=provider,
        provider_type=ProviderType.VASTAI,
        gpu_product=RTX,
        memory_bytes=24 * 2**30,
        pricing=PerGPUHour(Decimal(usd)),
        available=4,
        region="us",
        trust_tier=TrustTier.VERIFIED,
        start_latency_seconds=10.0,
    )


class World:
    """One InferenceJob, two networks (cheap and dear) and, optionally, in-cluster T4s."""

    def __init__(
        self,
        *,
        spec: dict[str, Any] | None = None,
        pools: tuple[InClusterPool, ...] = (),
        policy: dict[str, Any] | None = None,
    ) -> None:
        self.log: list[str] = []
        body_spec = {
            "task": "container",
            "image": "busybox",
            "input": {"requests": 10},
            "gpu": {"count": 1, "products": [RTX]},
            "estimatedDuration": "30m",
        }
        body_spec.update(spec or {})
        self.kube = FakeKube(
            {
                "metadata": {
                    "name": "j",
                    "namespace": "ns",
                    "uid": "uid-7",
                    "generation": 1,
                    "resourceVersion": "1",
                    "creationTimestamp": (NOW - timedelta(seconds=5)).isoformat(),
                },
                "spec": body_spec,
            },
            self.log,
        )
        self.registry = Registry()
        self.networks = {name: FakeNetwork(name, self.log) for name in ("cheap", "dear")}
        for name, net in self.networks.items():
            self.registry.providers[name] = ProviderEntry(
                name=name,
                spec=ComputeProviderSpec(type="vastai", endpoint="https://x.test"),
                adapter=net,
                ready=True,
                refreshed=NOW,
            )
        self.offers = (offer("cheap", "0.30"), offer("dear", "0.60"))
        self.pools = pools
        self.policy = RoutingPolicySpec.model_validate(
            policy or {"inCluster": {"enabled": bool(pools)}, "failover": {"backoff": "0s"}}
        )
        self.now = NOW
        self.in_cluster = InClusterBackend(
            self.kube,  # type: ignore[arg-type]
            self.kube.indexed_jobs,
            self.kube.indexed_pods,
        )

    def deps(self) -> Deps:
        async def no_requests(ns: str, spec: InferenceJobSpec) -> None:
            return None

        return Deps(
            kube=self.kube,  # type: ignore[arg-type]
            registry=self.registry,
            snapshot=lambda ns, name, p: Snapshot(
                now=self.now, pools=self.pools, offers=self.offers
            ),
            policy=lambda ns, name: self.policy,
            provider_exists=lambda name: name in self.registry.providers,
            load_requests=no_requests,
            telemetry_problem=lambda: "no Prometheus URL is configured",
            now=lambda: self.now,
            in_cluster=self.in_cluster,
        )

    async def step(self) -> float | None:
        return await JobStep(copy.deepcopy(self.kube.obj), self.deps(), lambda *_: None).run()

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.kube.obj.get("status") or {})


async def test_the_intent_is_written_before_the_submission_and_survives_a_crash() -> None:
    world = World()
    world.networks["cheap"].crash_on_submit = True
    with pytest.raises(Crash):
        await world.step()
    assert world.log[:3] == ["finalizer", "patch", "submit cheap uid-7-1"]
    assert world.status["externalRef"]["idempotencyKey"] == "uid-7-1"
    assert world.status["attempts"][0]["outcome"] == "Dispatching"

    world.networks["cheap"].crash_on_submit = False
    await world.step()  # the restarted loop resumes the same attempt
    keys = [k for k, _ in world.networks["cheap"].submissions]
    assert keys == ["uid-7-1", "uid-7-1"]
    assert list(world.networks["cheap"].created) == ["uid-7-1"]
    assert len(world.status["attempts"]) == 1
    assert world.status["externalRef"]["id"] == "cheap-1"


async def test_after_a_restart_the_batch_is_resubmitted_once_with_its_checkpoint() -> None:
    world = World()
    await world.step()  # routed and submitted
    await world.step()  # polled: checkpoint persisted
    assert world.status["externalRef"]["checkpoint"] == Checkpoint.from_done([0, 1, 2]).to_str()
    world.registry.submitted.clear()  # a new operator process remembers nothing
    await world.step()
    await world.step()
    submissions = world.networks["cheap"].submissions
    assert [k for k, _ in submissions] == ["uid-7-1", "uid-7-1"]
    assert submissions[1][1] == Checkpoint.from_done([0, 1, 2])
    assert world.log.count("status cheap-1") == 2


async def test_after_a_restart_work_that_runs_by_itself_is_polled_not_submitted_again() -> None:
    world = World()
    world.networks["cheap"].unattended = True
    await world.step()  # routed and submitted
    world.registry.submitted.clear()  # a new operator process remembers nothing
    await world.step()
    await world.step()
    assert [k for k, _ in world.networks["cheap"].submissions] == ["uid-7-1"]
    assert world.log.count("status cheap-1") == 2
    assert world.status["attempts"][0]["outcome"] == "Running"


async def test_a_lost_job_fails_over_to_the_next_candidate_and_never_back() -> None:
    world = World()
    await world.step()
    world.networks["cheap"].state = "Lost"
    await world.step()
    first = world.status["attempts"][0]
    assert (first["outcome"], first["reason"]) == ("Failed", "JobLost")
    assert world.networks["cheap"].cancelled == ["cheap-1"]  # orphaned remote work stopped
    await world.step()
    second = world.status["attempts"][1]
    assert second["provider"] == "dear"
    assert world.status["externalRef"]["idempotencyKey"] == "uid-7-2"
    names = {c["name"]: c for c in world.status["decision"]["candidates"]}
    assert not names[f"cheap/{RTX}"]["feasible"]


async def test_max_attempts_ends_in_failed() -> None:
    world = World(
        policy={"inCluster": {"enabled": False}, "failover": {"maxAttempts": 2, "backoff": "0s"}}
    )
    for net in world.networks.values():
        net.state = "Failed"
    for _ in range(6):
        if await world.step() is None:
            break
    conditions = {c["type"]: c for c in world.status["conditions"]}
    assert conditions["Failed"]["status"] == "True"
    assert conditions["Failed"]["reason"] == "MaxAttemptsReached"
    assert world.status["phase"] == "Failed"
    assert len(world.status["attempts"]) == 2


async def test_a_price_above_the_cap_while_running_fails_over() -> None:
    world = World(spec={"maxPricePerGPUHour": "1.00"})
    await world.step()
    world.networks["cheap"].price = Decimal("1.50")
    await world.step()
    attempt = world.status["attempts"][0]
    assert attempt["reason"] == "PriceAboveCap"
    assert world.networks["cheap"].cancelled == ["cheap-1"]


async def test_suspend_cancels_running_work_and_resume_routes_again() -> None:
    world = World()
    await world.step()
    world.kube.obj["spec"]["suspend"] = True
    await world.step()
    assert world.networks["cheap"].cancelled == ["cheap-1"]
    assert world.status["phase"] == "Suspended"
    assert world.status["attempts"][0]["outcome"] == "Cancelled"
    world.kube.obj["spec"]["suspend"] = False
    await world.step()
    assert world.status["phase"] == "Routed"
    assert world.status["attempts"][1]["provider"] == "cheap"  # a cancellation excludes nothing


async def test_an_in_cluster_job_not_running_after_max_queue_time_is_rerouted() -> None:
    pools = (
        InClusterPool(gpu_product="Tesla-T4", memory_bytes=16 * 2**30, allocatable=4, in_use=0),
    )
    world = World(
        spec={"gpu": {"count": 1, "products": ["Tesla-T4", RTX]}},
        pools=pools,
        policy={
            "inCluster": {
                "maxQueueTime": "1m",
                "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.1"}],
            },
            "failover": {"backoff": "0s"},
        },
    )
    await world.step()
    assert list(world.kube.jobs) == ["hybridgpu-uid-7-a1"]
    job = world.kube.jobs["hybridgpu-uid-7-a1"]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "1"
    }
    # The inventory reads when the pod's GPUs come back from this (inventory/pools.py).
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "hybridgpu.dev/estimated-duration": "30m"
    }
    # No Pod yet: the attempt's status holds its GPU (derived, see controller/claims.py).
    hold = job_hold(world.kube.obj, pod_owners=())
    assert hold is not None and (hold.gpu_product, hold.gpus, hold.reserve_gpus) == (
        "Tesla-T4",
        1,
        True,
    )
    assert job_hold(world.kube.obj, pod_owners={"ns/j/1"}).reserve_gpus is False  # type: ignore[union-attr]
    world.now = NOW + timedelta(minutes=2)
    await world.step()
    attempt = world.status["attempts"][0]
    assert (attempt["outcome"], attempt["reason"]) == ("Requeued", "QueueTimeout")
    assert "delete hybridgpu-uid-7-a1" in world.log
    assert job_hold(world.kube.obj, pod_owners=()) is None
    await world.step()
    assert world.status["attempts"][1]["gpuProduct"] == RTX  # the T4 pool is excluded now


async def test_an_invalid_spec_fails_naming_the_field() -> None:
    world = World(spec={"gpu": {"count": 12}})
    assert await world.step() is None
    failed = {c["type"]: c for c in world.status["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith("spec.gpu.count")


async def test_in_cluster_success_accrues_cost_from_pod_start() -> None:
    pools = (
        InClusterPool(gpu_product="Tesla-T4", memory_bytes=16 * 2**30, allocatable=4, in_use=0),
    )
    world = World(
        spec={"gpu": {"count": 2, "products": ["Tesla-T4"]}},
        pools=pools,
        policy={
            "inCluster": {"gpuPrices": [{"gpuProduct": "Tesla-T4", "pricePerGPUHour": "0.30"}]}
        },
    )
    await world.step()
    started = NOW + timedelta(seconds=10)
    world.kube.pods = [{"status": {"phase": "Succeeded", "startTime": started.isoformat()}}]
    world.kube.jobs["hybridgpu-uid-7-a1"]["status"] = {
        "succeeded": 1,
        "completionTime": (started + timedelta(minutes=30)).isoformat(),
    }
    assert await world.step() is None
    assert world.status["phase"] == "Succeeded"
    # 2 GPUs x 0.5 h x 0.30 USD
    assert Decimal(world.status["attempts"][0]["cost"]) == Decimal("0.3")
    assert Decimal(world.status["cost"]["accrued"]) == Decimal("0.3")
    assert world.status["progress"] == {"completed": 10, "total": 10}


async def test_a_decision_without_telemetry_says_it_used_requests_alone() -> None:
    world = World()
    await world.step()
    telemetry = {c["type"]: c for c in world.status["conditions"]}["TelemetryAvailable"]
    assert telemetry["status"] == "False"
    assert telemetry["reason"] == "RequestsOnly"
    assert "no Prometheus URL is configured" in telemetry["message"]


# The raw assignment is the point: pydantic warns while serialising it, then validation fails.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_a_status_the_api_does_not_document_is_never_written() -> None:
    from pydantic import ValidationError

    world = World()
    step = JobStep(copy.deepcopy(world.kube.obj), world.deps(), lambda *_: None)
    # Typed, the step cannot write this by mistake; a raw assignment still fails before the
    # write, not in the API server's pruning.
    step.attempts.append(Attempt.model_construct(attempt=1, outcome="Finished"))
    with pytest.raises(ValidationError):
        await step.save()
    assert "patch" not in world.log


async def test_work_created_by_a_failed_submission_is_found_by_its_key_and_cancelled() -> None:
    world = World()
    world.networks["cheap"].fail_after_create = BadRequest("cheap", "422 after the create")
    await world.step()
    first = world.status["attempts"][0]
    assert (first["outcome"], first.get("externalId")) == ("Failed", "")
    # The id was never recorded, but the remote job exists: found by the key, then stopped.
    assert "find cheap uid-7-1" in world.log
    assert world.networks["cheap"].cancelled == ["cheap-1"]
    assert "pendingCancels" not in world.status


async def test_a_cancel_that_fails_is_owed_until_it_succeeds_even_after_the_job_ended() -> None:
    world = World()
    await world.step()  # routed and submitted to cheap
    network = world.networks["cheap"]
    network.state = "Succeeded"
    network.cancel_failures = 2
    delay = await world.step()  # done: the release of the instance fails
    assert world.status["phase"] == "Succeeded"
    owed = world.status["pendingCancels"]
    assert [(o["provider"], o["id"], o["idempotencyKey"]) for o in owed] == [
        ("cheap", "cheap-1", "uid-7-1")
    ]
    assert "502" in owed[0]["lastError"] and owed[0]["tries"] == 1
    assert delay is not None  # a finished job with owed cancels is still worked on
    delay = await world.step()  # the second failure: still owed, tries counted
    assert world.status["pendingCancels"][0]["tries"] == 2
    assert delay is not None
    assert await world.step() is None  # the third try works: nothing owed, nothing more
    assert network.cancelled == ["cheap-1"]
    assert "pendingCancels" not in world.status
    assert world.status["phase"] == "Succeeded"


async def test_an_owed_cancel_on_a_deleted_provider_is_dropped_with_a_warning() -> None:
    world = World()
    await world.step()
    world.networks["cheap"].state = "Succeeded"
    world.networks["cheap"].cancel_failures = 1
    await world.step()
    assert world.status["pendingCancels"]
    del world.registry.providers["cheap"]  # the ComputeProvider was deleted meanwhile
    events: list[tuple[str, str, str]] = []
    step = JobStep(copy.deepcopy(world.kube.obj), world.deps(), lambda *e: events.append(e))
    assert await step.run() is None
    assert "pendingCancels" not in world.status
    assert [e[1] for e in events] == ["CancelImpossible"]


async def test_the_outcome_is_saved_before_the_remote_work_is_destroyed() -> None:
    """A crash while destroying finished work: the restart knows it succeeded, runs it once."""
    world = World()
    await world.step()
    network = world.networks["cheap"]
    network.state = "Succeeded"
    network.crash_on_cancel = True
    with pytest.raises(Crash):
        await world.step()
    assert world.status["phase"] == "Succeeded"
    assert [o["id"] for o in world.status["pendingCancels"]] == ["cheap-1"]
    network.crash_on_cancel = False
    network.state = "Lost"  # Vast.ai forgets destroyed instances: never asked again
    world.registry.submitted.clear()  # a new process
    assert await world.step() is None
    assert network.cancelled == ["cheap-1"]
    assert [k for k, _ in network.submissions] == ["uid-7-1"]
    assert world.status["phase"] == "Succeeded" and "pendingCancels" not in world.status


async def test_routine_polls_write_progress_by_steps_not_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(spec={"input": {"requests": 1000}})
    await world.step()  # routed and submitted
    network = world.networks["cheap"]
    done = [3]

    async def status(ref: RemoteRef) -> RemoteStatus:
        done[0] += 1  # a request per poll: 0.1 % of the batch
        return RemoteStatus("Running", completed=done[0], total=1000, accrued_usd=Decimal("0.05"))

    monkeypatch.setattr(network, "status", status)
    clock = [1000.0]
    monkeypatch.setattr("hybridgpu.controller.reconcile.time.monotonic", lambda: clock[0])
    writes_before = world.log.count("patch")
    await world.step()  # first poll: Running, an outcome change: written
    after_first = world.log.count("patch")
    assert after_first == writes_before + 1
    for _ in range(5):
        clock[0] += 2
        await world.step()
    assert world.log.count("patch") == after_first  # 0.5 % in 10 s: nothing written
    clock[0] += 30
    await world.step()
    assert world.log.count("patch") == after_first + 1  # 30 s since the last write
    assert world.status["progress"]["completed"] == done[0]
    network.state = "Failed"
    monkeypatch.setattr(network, "status", FakeNetwork.status.__get__(network))
    clock[0] += 1
    await world.step()  # an outcome: written at once
    assert world.status["attempts"][0]["outcome"] == "Failed"
