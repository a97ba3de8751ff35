"""The admission loop: decisions made in the same moment never promise the same GPU, provider
slot or budget dollar, and what jobs hold is rebuilt from their statuses after a restart.

Driven through ``JobRuntime`` (cache, admission, work queue) on an in-memory API server that
checks resourceVersions the way the real one does.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller import jobloop
from hybridgpu.controller.claims import Holdings, Ledger, job_charges
from hybridgpu.controller.finalizers import WORK_FINALIZER
from hybridgpu.controller.jobloop import Inventory, JobRuntime
from hybridgpu.controller.ledger import account
from hybridgpu.controller.reconcile import JobStep
from hybridgpu.controller.registry import ProviderEntry, Registry
from hybridgpu.inventory.pools import node_record, pod_record
from hybridgpu.kube import Conflict
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

from .inventory_objects import A100, node, pod
from .routing_fixtures import job, offer, policy, pool, snapshot
from .test_reconcile import FakeNetwork

NOW = datetime.now(UTC)


@dataclass
class FakeApi:
    """InferenceJobs by name, with resourceVersion preconditions on status patches."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    batch: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version: int = 1

    def add(self, name: str, spec: dict[str, Any], created: datetime = NOW) -> dict[str, Any]:
        self.version += 1
        body = {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": "InferenceJob",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "generation": 1,
                "resourceVersion": str(self.version),
                "creationTimestamp": created.isoformat(),
            },
            "spec": spec,
        }
        self.jobs[name] = body
        return copy.deepcopy(body)

    async def patch_job_status(
        self, ns: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        obj = self.jobs[name]
        if resource_version is not None and resource_version != obj["metadata"]["resourceVersion"]:
            self.log.append(f"409 {name}")
            raise Conflict(name)
        status = obj.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(obj)

    async def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    async def get_policy(self, ns: str, name: str) -> dict[str, Any] | None:
        policy = self.policies.setdefault(
            (ns, name),
            {"metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "status": {}},
        )
        return copy.deepcopy(policy)

    async def patch_policy_status(
        self, ns: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        policy = self.policies[(ns, name)]
        if (
            resource_version is not None
            and resource_version != policy["metadata"]["resourceVersion"]
        ):
            raise Conflict(name)
        policy["status"].update(copy.deepcopy(patch))
        policy["metadata"]["resourceVersion"] = str(int(policy["metadata"]["resourceVersion"]) + 1)
        self.log.append(f"ledger {sorted(patch.get('retired') or {})}")
        return copy.deepcopy(policy)

    async def set_job_finalizers(
        self, ns: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        obj = self.jobs[name]
        if resource_version != obj["metadata"]["resourceVersion"]:
            self.log.append(f"409 {name}")
            raise Conflict(name)
        obj["metadata"]["finalizers"] = list(finalizers)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.log.append(f"finalizers {name} {finalizers}")
        return copy.deepcopy(obj)

    async def post_event(self, ns: str, body: dict[str, Any]) -> None:
        self.log.append(f"event {body['reason']}")

    async def create_batch_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.batch.setdefault(manifest["metadata"]["name"], manifest)
        return manifest

    async def delete_batch_job(self, ns: str, name: str) -> None:
        self.batch.pop(name, None)
        self.log.append(f"delete {name}")


def external_job(**kw: Any) -> dict[str, Any]:
    spec = {
        "task": "container",
        "image": "busybox",
        "input": {"requests": 1},
        "gpu": {"count": 1},
        "estimatedDuration": "1h",
        "placement": "External",
    }
    spec.update(kw)
    return spec


def in_cluster_job(**kw: Any) -> dict[str, Any]:
    return external_job(placement="InCluster", gpu={"count": 1, "products": [A100]}, **kw)


class Cluster:
    """An API server, GPU nodes, providers and one RoutingPolicy, wired to a JobRuntime."""

    def __init__(
        self,
        *,
        policy_spec: dict[str, Any] | None = None,
        gpus: int = 0,
        offers: tuple[ExternalOffer, ...] = (),
        max_concurrent: dict[str, int] | None = None,
        ledger: dict[str, Any] | None = None,
    ) -> None:
        self.api = FakeApi()
        self.policy_spec = policy_spec or {}
        self.ledger = ledger or {}
        self.nodes = [node_record(node("n1", gpus))] if gpus else []
        self.pods: list[Any] = []
        self.attempt_pods: set[str] = set()
        self.pod_records: dict[str, list[Any]] = {}
        self.job_records: dict[str, list[Any]] = {}
        """``<uid>/<attempt>`` -> the attempt's Pod records (backends.cluster_backend)."""
        self.registry = Registry()
        for provider in {o.provider for o in offers}:
            self.registry.providers[provider] = ProviderEntry(
                name=provider,
                spec=ComputeProviderSpec.model_validate(
                    {
                        "type": "akash",
                        "endpoint": "https://x.test",
                        "maxConcurrentJobs": (max_concurrent or {}).get(provider, 100),
                    }
                ),
                adapter=FakeNetwork(provider, self.api.log),
                offers=tuple(o for o in offers if o.provider == provider),
                ready=True,
                # Now, not the module's NOW: offers older than 3 refresh intervals are stale.
                refreshed=datetime.now(UTC) - timedelta(seconds=1),
            )
        self.runtime = self.restart()

    def restart(self) -> JobRuntime:
        """A fresh operator process: nothing in memory but what the API server says."""
        inventory = Inventory(
            nodes=lambda: self.nodes,
            pods=lambda: self.pods,
            policies=lambda ns, name: (
                (self.policy_spec, NOW.isoformat(), self.ledger)
                if (ns, name) == ("ns", "default")
                else None
            ),
            all_policies=lambda: [(("ns", "default"), self.ledger)],
            provider_exists=lambda name: name in self.registry.providers,
            attempt_pods=lambda: self.attempt_pods,
            telemetry=lambda: None,
            telemetry_problem=lambda: "",
            attempt_pod_records=lambda key: self.pod_records.get(key, ()),
            attempt_jobs=lambda key: self.job_records.get(key, ()),
        )
        self.runtime = JobRuntime(self.api, self.registry, inventory)  # type: ignore[arg-type]
        for body in self.api.jobs.values():
            self.runtime.observe(copy.deepcopy(body))
        return self.runtime

    async def burst(self, count: int, spec: dict[str, Any]) -> None:
        uids = []
        for i in range(count):
            body = self.api.add(f"j{i:04d}", spec, NOW + timedelta(milliseconds=i))
            self.runtime.observe(body)
            uids.append(body["metadata"]["uid"])
        await self.runtime.admission.cycle(uids)

    def version_bump(self, body: dict[str, Any]) -> None:
        self.api.version += 1
        body["metadata"]["resourceVersion"] = str(self.api.version)

    def statuses(self) -> list[dict[str, Any]]:
        return [j.get("status") or {} for j in self.api.jobs.values()]

    def dispatched(self) -> list[dict[str, Any]]:
        return [s["attempts"][-1] for s in self.statuses() if s.get("attempts")]


def log_order(log: list[str], first: str, then: str) -> bool:
    """Whether a line starting with ``first`` comes before the first one containing ``then``."""
    a = next(i for i, line in enumerate(log) if line.startswith(first))
    b = next(i for i, line in enumerate(log) if then in line)
    return a < b


def routed_reason(status: dict[str, Any]) -> tuple[str, str]:
    by_type = {c["type"]: c for c in status.get("conditions") or []}
    failed = by_type.get("Failed")
    if failed and failed["status"] == "True":
        return ("Failed", failed["reason"])
    return (
        "Routed" if by_type["Routed"]["status"] == "True" else "Waiting",
        by_type["Routed"]["reason"],
    )


async def test_a_burst_against_a_budget_dispatches_exactly_what_fits() -> None:
    # 30 one-hour jobs at $0.39/GPU-h under a $2.00 budget: 5 fit ($1.95), the 6th would not.
    cluster = Cluster(
        policy_spec={
            "inCluster": {"enabled": False},
            "budget": {"limit": "2.00", "whenExceeded": "Reject"},
        },
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    await cluster.burst(30, external_job())
    dispatched = cluster.dispatched()
    assert len(dispatched) == 5
    committed = sum(Decimal(a["estimatedCost"]) for a in dispatched)
    assert committed == Decimal("1.95")
    outcomes = Counter(routed_reason(s)[0] for s in cluster.statuses())
    assert outcomes == {"Routed": 5, "Failed": 25}
    rejected = cluster.api.jobs["j0029"]["status"]
    assert routed_reason(rejected) == ("Failed", "BudgetExceeded")
    assert {c["reason"] for c in rejected["decision"]["candidates"]} == {"BudgetExceeded"}
    # The oldest jobs got the budget.
    assert all(cluster.api.jobs[f"j{i:04d}"]["status"].get("attempts") for i in range(5))
    holdings = cluster.runtime.holdings()
    assert holdings.committed(("ns", "default"), NOW - timedelta(days=1)) == Decimal("1.95")


async def test_in_cluster_only_budget_overflow_waits_instead() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}, "budget": {"limit": "2.00"}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    await cluster.burst(8, external_job(placement="Any"))
    assert len(cluster.dispatched()) == 5
    waiting = [s for s in cluster.statuses() if not s.get("attempts")]
    assert len(waiting) == 3
    assert all(routed_reason(s)[0] in ("Waiting", "Failed") for s in waiting)
    assert all(
        {c["reason"] for c in s["decision"]["candidates"]} == {"BudgetExceeded"} for s in waiting
    )


async def test_a_burst_on_free_gpus_takes_them_all_and_never_more() -> None:
    policy_spec = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]}
    }
    cluster = Cluster(policy_spec=policy_spec, gpus=1000)
    await cluster.burst(1000, in_cluster_job(estimatedDuration="2h"))
    # Room for all: none is told to wait while GPUs are free.
    assert len(cluster.dispatched()) == 1000
    await cluster.burst(0, in_cluster_job())
    more = []
    for i in range(3):
        body = cluster.api.add(f"late{i}", in_cluster_job(estimatedDuration="2h"))
        cluster.runtime.observe(body)
        more.append(body["metadata"]["uid"])
    await cluster.runtime.admission.cycle(more)
    late = [cluster.api.jobs[f"late{i}"]["status"] for i in range(3)]
    assert all(not s.get("attempts") for s in late)  # the 1,000 reserved GPUs are not free
    assert {routed_reason(s) for s in late} == {("Waiting", "QueueTooLong")}


async def test_a_reservation_gives_way_to_its_pod_and_is_never_counted_twice() -> None:
    policy_spec = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]}
    }
    cluster = Cluster(policy_spec=policy_spec, gpus=4)
    await cluster.burst(2, in_cluster_job())
    world = cluster.runtime.world()
    (pool,) = world.pools
    assert (pool.allocatable, pool.in_use) == (4, 2)
    # The Pods of both attempts are bound now: the inventory counts them, the claims let go.
    # (Also once the Pods have ended: the attempt's status then says what it holds.)
    pods = [pod(f"p{i}", 1, "n1", "Running", namespace="ns") for i in range(2)]
    for i, body in enumerate(pods):
        body["metadata"]["labels"] = {
            "hybridgpu.dev/inferencejob": f"j{i:04d}",
            "hybridgpu.dev/attempt": "1",
        }
    cluster.pods = [pod_record(p) for p in pods]
    cluster.attempt_pods = {"ns/j0000/1", "ns/j0001/1"}
    (pool,) = cluster.runtime.world().pools
    assert (pool.allocatable, pool.in_use) == (4, 2)


async def test_provider_slots_and_offer_capacity_are_held_between_decisions() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(
            offer("akash", A100, PerGPUHour(Decimal("0.30")), available=4),
            offer("vast", A100, PerGPUHour(Decimal("0.50")), available=100),
        ),
        max_concurrent={"akash": 3},
    )
    await cluster.burst(10, external_job())
    providers = Counter(a["provider"] for a in cluster.dispatched())
    # The cheap network has 4 GPUs but 3 job slots; the rest goes to the dearer one.
    assert providers == {"akash": 3, "vast": 7}


async def test_a_restart_rebuilds_what_jobs_hold_from_their_statuses() -> None:
    cluster = Cluster(
        policy_spec={
            "inCluster": {"enabled": False},
            "budget": {"limit": "2.00", "whenExceeded": "Reject"},
        },
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    await cluster.burst(3, external_job())
    assert len(cluster.dispatched()) == 3
    cluster.restart()  # nothing in memory
    since = NOW - timedelta(days=1)
    assert cluster.runtime.holdings().committed(("ns", "default"), since) == Decimal("1.17")
    await cluster.burst(0, external_job())
    later = []
    for i in range(4):
        body = cluster.api.add(f"after{i}", external_job())
        cluster.runtime.observe(body)
        later.append(body["metadata"]["uid"])
    await cluster.runtime.admission.cycle(later)
    # $0.83 was left: two more fit, not four.
    assert len(cluster.dispatched()) == 5


async def test_a_decision_from_a_stale_status_gets_a_409_and_never_dispatches_twice() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    body = cluster.api.add("j", external_job())
    stale = copy.deepcopy(body)
    cluster.runtime.observe(body)
    await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    assert len(cluster.api.jobs["j"]["status"]["attempts"]) == 1
    # A second writer still holding the old version decides again: the API server refuses.
    step = JobStep(stale, cluster.runtime.deps(), lambda *_: None)
    with pytest.raises(Conflict):
        await step.run()
    assert "409 j" in cluster.api.log
    assert len(cluster.api.jobs["j"]["status"]["attempts"]) == 1
    # The admission loop, given the stale body, re-reads and leaves the job as it is.
    cluster.runtime.cache.forget(body["metadata"]["uid"])
    cluster.runtime.cache.observe(stale)
    await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    assert len(cluster.api.jobs["j"]["status"]["attempts"]) == 1
    assert cluster.runtime.cache.get(body["metadata"]["uid"])["status"]["attempts"]  # type: ignore[index]


def test_spend_stays_with_the_policy_an_attempt_was_admitted_under() -> None:
    body = {
        "metadata": {"namespace": "ns", "uid": "u"},
        "spec": {"policyRef": "other"},  # edited after the attempt ran
        "status": {
            "attempts": [
                {
                    "backend": "External",
                    "policyRef": "default",
                    "outcome": "Succeeded",
                    "cost": "1.50",
                    "endTime": NOW.isoformat(),
                },
                {
                    "backend": "External",
                    "policyRef": "default",
                    "outcome": "Running",
                    "cost": "0.10",
                    "estimatedCost": "0.40",
                },
            ]
        },
    }
    charges = job_charges(body)
    assert {c.policy for c in charges} == {("ns", "default")}
    held = Holdings.of([body], ())
    since = NOW - timedelta(hours=1)
    assert held.committed(("ns", "default"), since) == Decimal("1.90")
    assert held.spent(("ns", "default"), since) == Decimal("1.60")
    assert held.committed(("ns", "other"), since) == Decimal(0)


def test_a_deleted_jobs_spend_stays_in_the_ledger_and_is_folded_once_it_is_gone() -> None:
    start = NOW - timedelta(hours=1)
    status = {
        "periodStart": start.isoformat().replace("+00:00", "Z"),
        "retired": {"u": {"cost": "1.50", "at": NOW.isoformat(), "job": "j"}},
        "retiredSpent": "0.25",
    }
    pol = policy(budget={"limit": "2.00"})
    ledger = Ledger.from_status(status)
    held = Holdings.of([], (), ledgers={("ns", "default"): ledger})
    assert held.committed(("ns", "default"), start) == Decimal("1.75")
    # Still being deleted: not folded. Gone: folded into retiredSpent, the entry dropped.
    args = {
        "policy": pol,
        "key": ("ns", "default"),
        "start": start,
        "routed": Counter(),
        "generation": 1,
        "now": NOW,
    }
    patch = account(status=status, holdings=held, gone=set(), **args)  # type: ignore[arg-type]
    assert "retired" not in patch and Decimal(patch["committed"]) == Decimal("1.75")
    assert Decimal(patch["remaining"]) == Decimal("0.25")
    patch = account(status=status, holdings=held, gone={"u"}, **args)  # type: ignore[arg-type]
    assert patch["retired"] == {"u": None}
    assert Decimal(patch["retiredSpent"]) == Decimal("1.75")
    assert Decimal(patch["committed"]) == Decimal("1.75")
    # A new period starts afresh.
    later = account(
        status=status,
        holdings=held,
        gone={"u"},
        **{**args, "start": NOW + timedelta(hours=1)},  # type: ignore[arg-type]
    )
    assert Decimal(later["committed"]) == 0


async def _run_limits(
    spec: dict[str, Any], policy_spec: dict[str, Any], cost: str
) -> dict[str, Any]:
    """A running external job whose network reports ``cost`` accrued so far (with the spend
    check reading the jobs afresh each step, not its 2 s cache)."""
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}, **policy_spec},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    await cluster.burst(1, external_job(**spec))
    network = cluster.registry.providers["akash"].adapter
    network.accrued = Decimal(cost)  # type: ignore[union-attr]
    uid = "uid-j0000"
    for _ in range(2):  # submit, then track
        await cluster.runtime.work(uid)
    if spec.get("estimatedDuration") == "1s":
        await asyncio.sleep(1.2)
    await cluster.runtime.work(uid)
    return cluster.api.jobs["j0000"]["status"]


async def run_limits(
    spec: dict[str, Any], policy_spec: dict[str, Any], cost: str
) -> dict[str, Any]:
    """``_run_limits`` with the spend check reading the jobs afresh at each step."""
    cached, jobloop.SPENT_CACHE_SECONDS = jobloop.SPENT_CACHE_SECONDS, -1.0
    try:
        return await _run_limits(spec, policy_spec, cost)
    finally:
        jobloop.SPENT_CACHE_SECONDS = cached


async def test_running_work_past_max_cost_is_cancelled_and_the_job_fails_saying_so() -> None:
    status = await run_limits({"maxCost": "0.50"}, {}, "0.75")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "MaxCostExceeded")
    assert "spec.maxCost" in failed["message"]
    assert status["attempts"][0]["outcome"] == "Failed"


async def test_running_work_past_the_budget_is_cancelled_and_fails_over() -> None:
    status = await run_limits({}, {"budget": {"limit": "0.50"}}, "0.75")
    first = status["attempts"][0]
    assert (first["outcome"], first["reason"]) == ("Failed", "BudgetExceeded")
    assert "budget.limit" in first["message"]


async def test_running_work_past_its_deadline_is_cancelled_and_fails_over() -> None:
    status = await run_limits(
        {"estimatedDuration": "1s"}, {"failover": {"maxRunTimeFactor": 1.0, "backoff": "0s"}}, "0"
    )
    assert status["attempts"][0]["reason"] == "DeadlineExceeded"
    assert "estimatedDuration x 1" in status["attempts"][0]["message"]


async def test_a_permanent_input_error_fails_the_job_with_its_reason() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )

    async def not_a_list(ns: str, name: str, key: str) -> str:
        return "just: a mapping"

    cluster.api.read_config_map_key = not_a_list  # type: ignore[attr-defined]
    await cluster.burst(
        1, external_job(input={"requests": 1, "configMapRef": {"name": "in", "key": "k"}})
    )
    for _ in range(2):
        await cluster.runtime.work("uid-j0000")
    status = cluster.api.jobs["j0000"]["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidInput")
    assert "spec.input.configMapRef" in failed["message"]
    assert status["phase"] == "Failed"


async def test_a_step_that_keeps_failing_fails_its_job_not_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobloop, "MAX_FAILURES", 3)
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=100),),
    )
    await cluster.burst(1, external_job())
    network = cluster.registry.providers["akash"].adapter

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug in one adapter")

    network.submit = broken  # type: ignore[method-assign]
    delays = [await cluster.runtime.work("uid-j0000") for _ in range(3)]
    assert delays[:2] == [10.0, 20.0] and delays[2] == 0.0  # failed; next: let it go
    status = cluster.api.jobs["j0000"]["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ReconcileError"
    assert "a bug in one adapter" in failed["message"]
    assert WORK_FINALIZER in cluster.api.jobs["j0000"]["metadata"]["finalizers"]
    assert await cluster.runtime.work("uid-j0000") is None
    assert cluster.api.jobs["j0000"]["metadata"]["finalizers"] == []
    assert "uid-j0000" not in cluster.runtime.cache  # ended and released: forgotten


def test_a_policy_created_again_under_the_same_name_starts_with_nothing_spent() -> None:
    old = {
        "metadata": {"namespace": "ns", "uid": "u"},
        "spec": {},
        "status": {
            "attempts": [
                {
                    "backend": "External",
                    "policyRef": "default",
                    "outcome": "Running",
                    "startTime": (NOW - timedelta(minutes=5)).isoformat(),
                    "estimatedCost": "0.90",
                }
            ]
        },
    }
    since = NOW - timedelta(hours=1)
    key = ("ns", "default")
    assert Holdings.of([old], ()).committed(key, since) == Decimal("0.90")
    recreated = {key: Ledger(created=NOW - timedelta(minutes=1))}
    assert Holdings.of([old], (), ledgers=recreated).committed(key, since) == 0


def test_pods_created_a_moment_ago_are_a_queue_that_fits_not_a_reason_to_wait() -> None:
    # 1,000 free GPUs and 300 Pods of a burst not bound yet: a job still starts now, even
    # with every known release far beyond maxQueueTime.
    busy = pool("A", allocatable=1000, in_use=0, queued=300, release_seconds=(7200.0,))
    d = decide(job(placement="InCluster", estimatedDuration="2h"), policy(), snapshot((busy,)))
    assert d.target is not None and d.target.expected_start_seconds == 0.0
    full = pool("A", allocatable=1000, in_use=800, queued=300, release_seconds=(7200.0,) * 200)
    d = decide(job(placement="InCluster", estimatedDuration="2h"), policy(), snapshot((full,)))
    assert (d.outcome, d.reason) == ("Wait", "QueueTooLong")


def test_the_spend_check_of_running_jobs_sums_the_jobs_once_per_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(policy_spec={"budget": {"limit": "2.00"}})
    calls: list[int] = []
    real = cluster.runtime.holdings

    def counted() -> Holdings:
        calls.append(1)
        return real()

    monkeypatch.setattr(cluster.runtime, "holdings", counted)
    for _ in range(50):
        assert cluster.runtime.spent("ns", "default") == 0
    assert len(calls) == 1
    monkeypatch.setattr(jobloop, "SPENT_CACHE_SECONDS", -1.0)
    cluster.runtime.spent("ns", "default")
    assert len(calls) == 2


async def test_an_ended_job_retires_its_spend_then_lets_go_of_its_finalizer() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=10),),
    )
    waiting = cluster.api.add("waits", external_job(gpu={"count": 1, "products": ["none"]}))
    cluster.runtime.observe(waiting)
    await cluster.burst(1, external_job())
    await cluster.runtime.admission.cycle(["uid-waits"])
    job = cluster.api.jobs["j0000"]
    assert job["status"]["attempts"][0]["outcome"] == "Dispatching"
    assert not job["metadata"].get("finalizers")  # the intent alone: nothing is out yet
    await cluster.runtime.work("uid-j0000")  # the dispatch
    assert job["metadata"]["finalizers"] == [WORK_FINALIZER]  # held from its dispatch on
    assert log_order(cluster.api.log, "finalizers j0000", "submit")
    assert not cluster.api.jobs["waits"]["metadata"].get("finalizers")  # a waiting job: none
    network = cluster.registry.providers["akash"].adapter
    network.state = "Succeeded"  # type: ignore[attr-defined]
    for _ in range(6):
        if await cluster.runtime.work("uid-j0000") is None:
            break
    assert job["status"]["phase"] == "Succeeded"
    assert job["metadata"]["finalizers"] == []
    retired = cluster.api.policies[("ns", "default")]["status"]["retired"]
    assert Decimal(retired["uid-j0000"]["cost"]) == Decimal("0.05")
    log = cluster.api.log
    assert log.index("ledger ['uid-j0000']") < log.index("finalizers j0000 []")
    assert "uid-j0000" not in cluster.runtime.cache


async def test_a_deleted_running_job_is_cleaned_up_by_the_runtime_and_let_go() -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=10),),
    )
    await cluster.burst(1, external_job())
    assert await cluster.runtime.work("uid-j0000") is not None  # submitted
    assert await cluster.runtime.work("uid-j0000") is not None  # running, spending
    job = cluster.api.jobs["j0000"]
    network = cluster.registry.providers["akash"].adapter
    network.cancel_failures = 1  # type: ignore[attr-defined]
    job["metadata"]["deletionTimestamp"] = NOW.isoformat()  # kubectl delete
    cluster.version_bump(job)
    cluster.runtime.observe(copy.deepcopy(job))
    assert await cluster.runtime.work("uid-j0000") == 30.0  # the cancel failed: still held
    assert job["metadata"]["finalizers"] == [WORK_FINALIZER]
    assert job["status"]["pendingCancels"][0]["tries"] == 1
    assert await cluster.runtime.work("uid-j0000") is None
    assert network.cancelled == ["akash-1"]  # type: ignore[attr-defined]
    assert job["metadata"]["finalizers"] == []
    assert "uid-j0000" in cluster.api.policies[("ns", "default")]["status"]["retired"]


async def test_an_arrival_goes_straight_to_admission_and_a_dispatched_job_to_the_workers() -> None:
    policy_spec = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]}
    }
    cluster = Cluster(policy_spec=policy_spec, gpus=4)
    body = cluster.api.add("new", in_cluster_job())
    uid = body["metadata"]["uid"]
    cluster.runtime.observe(body)
    cluster.runtime.changed(uid)
    # Decided by the admission loop's next cycle, not queued behind dispatch and tracking.
    assert uid in cluster.runtime.admission.queue.requested
    assert len(cluster.runtime.queue) == 0
    await cluster.runtime.admission.cycle([uid])
    assert cluster.dispatched()
    cluster.runtime.admission.queue.requested.clear()
    cluster.runtime.queue.cancel(uid)  # the cycle queued its dispatch; start from nothing
    assert len(cluster.runtime.queue) == 0
    cluster.runtime.changed(uid)  # now it has an active attempt: tracking is the workers' job
    assert uid not in cluster.runtime.admission.queue.requested
    assert len(cluster.runtime.queue) == 1


async def test_a_status_that_does_not_parse_fails_its_job_naming_the_field_and_no_other() -> None:
    policy_spec = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]}
    }
    cluster = Cluster(policy_spec=policy_spec, gpus=4)
    broken = cluster.api.add("broken", in_cluster_job())
    cluster.api.jobs["broken"]["status"] = broken["status"] = {
        "attempts": [{"attempt": 1, "outcome": "Finished"}]  # edited by hand
    }
    good = cluster.api.add("good", in_cluster_job())
    for body in (broken, good):
        cluster.runtime.observe(body)
    await cluster.runtime.admission.cycle(["uid-broken", "uid-good"])
    assert cluster.api.jobs["good"]["status"]["attempts"][0]["outcome"] == "Dispatching"
    await cluster.runtime.work("uid-broken")
    failed = {c["type"]: c for c in cluster.api.jobs["broken"]["status"]["conditions"]}["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "InvalidStatus")
    assert failed["message"].startswith("status.attempts.0.outcome:")
    assert cluster.api.jobs["broken"]["status"]["phase"] == "Failed"


async def test_a_dispatch_waits_for_the_admission_loop_to_be_idle_then_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=10),),
    )
    await cluster.burst(1, external_job())
    admission = cluster.runtime.admission
    admission.request("uid-other")  # a decision is pending: the loop is busy
    step = asyncio.create_task(cluster.runtime.work("uid-j0000"))
    await asyncio.sleep(0.2)
    assert not any(line.startswith("submit") for line in cluster.api.log)  # decisions first
    admission._idle.set()  # the loop has decided what it had
    await step
    assert any(line.startswith("submit akash") for line in cluster.api.log)


async def test_a_dispatch_does_not_wait_for_ever_on_a_busy_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobloop, "DISPATCH_YIELD", 0.05)
    cluster = Cluster(
        policy_spec={"inCluster": {"enabled": False}},
        offers=(offer("akash", A100, PerGPUHour(Decimal("0.39")), available=10),),
    )
    await cluster.burst(1, external_job())
    cluster.runtime.admission.request("uid-other")  # and it never gets idle
    await cluster.runtime.work("uid-j0000")
    assert any(line.startswith("submit akash") for line in cluster.api.log)


def test_an_offers_gpus_stay_held_until_a_refresh_after_the_network_runs_the_work() -> None:
    """A network takes the GPUs when it places the work (an Akash lease), not when the
    operator admits it: a refresh in between still offers them, so an attempt not yet
    running keeps them held whatever the refresh; one running since before the refresh is in
    the offer's own figure."""
    refreshed = NOW - timedelta(minutes=5)

    def attempt(name: str, outcome: str, running_since: datetime | None) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
            "spec": {"gpu": {"count": 1}, "estimatedDuration": "1h"},
            "status": {
                "attempts": [
                    {
                        "attempt": 1,
                        "backend": "External",
                        "provider": "akash",
                        "gpuProduct": A100,
                        "gpus": 1,
                        "outcome": outcome,
                        "startTime": (NOW - timedelta(minutes=10)).isoformat(),
                        **({"runningSince": running_since.isoformat()} if running_since else {}),
                    }
                ]
            },
        }

    offers = (offer("akash", A100, PerGPUHour(Decimal("0.30")), available=4),)
    jobs = [
        attempt("pending", "Pending", None),  # admitted before the refresh, lease not yet
        attempt("leased-before", "Running", NOW - timedelta(minutes=8)),
        attempt("leased-after", "Running", NOW - timedelta(minutes=1)),
    ]
    (seen,) = Holdings.of(jobs, ()).offers(offers, {"akash": refreshed})
    assert seen.available == 4 - 2 and seen.active_jobs == 3
