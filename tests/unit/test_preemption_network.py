"""Preemption on a network: a latency-sensitive job whose only place is a full offer of a network
that can cancel evicts the newest preemptible best-effort attempt there, once; the victim's
outcome is written first, its cancel is sent once (owed and retried until the network confirms),
it queues again, and the evictor waits for the offer's next refresh instead of evicting again.

Driven through ``JobRuntime`` on the in-memory API server of ``test_admission`` (which checks
resourceVersions), as ``test_preemption_admission`` drives the in-cluster side."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hybridgpu.controller import eviction
from hybridgpu.routing.snapshot import PerGPUHour

from .inventory_objects import A100
from .routing_fixtures import offer
from .test_admission import Cluster, external_job, in_cluster_job, routed_reason
from .test_preemption_admission import queued_event_reasons, run
from .test_reconcile import FakeNetwork

PREEMPTION = {"evict": "LowerRank", "checkpointInterval": "15m"}
NETWORK_ONLY = {"inCluster": {"enabled": False}, "preemption": PREEMPTION}
URGENT = external_job(estimatedDuration="1h", startWithin="5m")
"""Latency-sensitive: $1.50 on the Akash offer, within its 60 s start latency."""


def stamp(minutes_ago: float) -> str:
    when = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def network(cluster: Cluster, provider: str = "akash") -> FakeNetwork:
    adapter = cluster.registry.providers[provider].adapter
    assert isinstance(adapter, FakeNetwork)
    return adapter


def submitted(cluster: Cluster, name: str, minutes_ago: float, outcome: str = "Running") -> None:
    """Job ``name``'s attempt is on the network under its id, running for ``minutes_ago``.
    (Admitted just now, not then: the policy, created at the suite's start, would not be
    charged for it.)"""
    body = cluster.api.jobs[name]
    attempt = body["status"]["attempts"][-1]
    attempt["outcome"] = outcome
    if outcome == "Running":
        attempt["runningSince"] = stamp(minutes_ago)
    if outcome != "Dispatching":
        attempt["externalId"] = f"akash-{name}"
        ref = body["status"]["externalRef"]
        ref["id"] = f"akash-{name}"
        cluster.registry.submitted.add(ref["idempotencyKey"])  # as the step that submitted it
    cluster.version_bump(body)
    cluster.runtime.observe(copy.deepcopy(body))


def refresh(cluster: Cluster, available: int, provider: str = "akash") -> None:
    """The provider's offer list is read again: ``available`` A100s are free now."""
    entry = cluster.registry.providers[provider]
    (old,) = entry.offers
    entry.offers = (offer(provider, A100, old.pricing, available=available),)
    entry.refreshed = datetime.now(UTC)


async def two_on_akash(
    policy: dict[str, Any] | None = None,
    *,
    second: str = "Running",
    max_concurrent: int = 100,
    **victim: Any,
) -> Cluster:
    """Two preemptible best-effort attempts fill Akash's two A100s (j0000 started 2 h ago,
    j0001 20 minutes ago); the last refresh counts both as taken."""
    cluster = Cluster(
        policy_spec=policy or NETWORK_ONLY,
        offers=(offer("akash", A100, PerGPUHour(Decimal("1.50")), available=2),),
        max_concurrent={"akash": max_concurrent},
    )
    await cluster.burst(2, external_job(estimatedDuration="4h", preemptible=True, **victim))
    assert [a["provider"] for a in cluster.dispatched()] == ["akash", "akash"]
    submitted(cluster, "j0000", minutes_ago=120)
    submitted(cluster, "j0001", minutes_ago=20, outcome=second)
    refresh(cluster, available=8 if max_concurrent <= 2 else 0)
    return cluster


async def arrive(cluster: Cluster, name: str, spec: dict[str, Any]) -> str:
    body = cluster.api.add(name, spec, datetime.now(UTC))
    cluster.runtime.observe(body)
    await cluster.runtime.admission.cycle([body["metadata"]["uid"]])
    return str(body["metadata"]["uid"])


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.api.jobs[name].get("status") or {}


def routed_message(cluster: Cluster, name: str) -> str:
    (routed,) = [c for c in status(cluster, name)["conditions"] if c["type"] == "Routed"]
    return str(routed["message"])


def outcomes(cluster: Cluster, *names: str) -> list[str]:
    return [status(cluster, n)["attempts"][-1]["outcome"] for n in names]


def past_backoff(cluster: Cluster, name: str) -> str:
    """The victim was evicted a minute ago (past its failover backoff); its uid."""
    body = cluster.api.jobs[name]
    body["status"]["attempts"][-1]["endTime"] = stamp(1)
    cluster.version_bump(body)
    cluster.runtime.observe(copy.deepcopy(body))
    return str(body["metadata"]["uid"])


async def test_a_full_network_offer_held_by_preemptible_work_is_freed_once_and_taken() -> None:
    cluster = await two_on_akash()
    ls = await arrive(cluster, "urgent", URGENT)

    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert "evicting preemptible ns/j0001 on akash (" in routed_message(cluster, "urgent")
    victim = status(cluster, "j0001")
    last = victim["attempts"][-1]
    assert (last["outcome"], last["reason"], last["preemptedBy"]) == (
        "Preempted",
        "Preempted",
        "ns/urgent",
    )
    assert victim["preemptions"] == 1
    assert routed_reason(victim) == ("Waiting", "Preempted")
    assert "externalRef" not in victim
    assert network(cluster).cancelled == ["akash-j0001"]  # the newest, by its recorded id
    assert not victim.get("pendingCancels")  # the network confirmed
    assert outcomes(cluster, "j0000") == ["Running"]
    assert ls in cluster.runtime.admission.nominated

    # Decided again before the offer is refreshed: it still reads full, but the GPU is coming
    # back. Nothing more is evicted (the old rule would evict j0000 now).
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert "waiting for the GPUs of the work it evicted on akash" in routed_message(
        cluster, "urgent"
    )
    assert outcomes(cluster, "j0000") == ["Running"]
    assert network(cluster).cancelled == ["akash-j0001"]

    # The refresh shows the GPU: the evictor goes first and takes it; the victim waits.
    refresh(cluster, available=1)
    victim_uid = past_backoff(cluster, "j0001")
    await cluster.runtime.admission.cycle([victim_uid, ls])
    urgent = status(cluster, "urgent")
    assert routed_reason(urgent)[0] == "Routed"
    assert (urgent["attempts"][-1]["backend"], urgent["attempts"][-1]["provider"]) == (
        "External",
        "akash",
    )
    assert len(status(cluster, "j0001")["attempts"]) == 1
    assert routed_reason(status(cluster, "j0001"))[0] == "Waiting"
    assert ls not in cluster.runtime.admission.nominated


async def test_the_evicted_job_queues_again_without_spending_a_failover_attempt() -> None:
    policy = {**NETWORK_ONLY, "failover": {"maxAttempts": 1}}
    cluster = await two_on_akash(policy)
    await arrive(cluster, "urgent", URGENT)
    assert outcomes(cluster, "j0001") == ["Preempted"]
    refresh(cluster, available=2)
    await cluster.runtime.admission.cycle([past_backoff(cluster, "j0001")])
    again = status(cluster, "j0001")
    # Attempt 2 under a key of its own: the network finds no old work under it. With results
    # kept, the store is the checkpoint (as for an evicted Pod): it sends what is left.
    assert [a["outcome"] for a in again["attempts"]] == ["Preempted", "Dispatching"]
    assert again["externalRef"]["idempotencyKey"] == "uid-j0001-2"
    assert routed_reason(again)[0] == "Routed"


async def test_an_attempt_still_being_submitted_is_never_a_victim() -> None:
    # j0001 is the newest, but its submit may be in flight: a cancel now could come before
    # the work exists. The older, submitted one is evicted instead.
    cluster = await two_on_akash(second="Dispatching")
    await arrive(cluster, "urgent", URGENT)
    assert outcomes(cluster, "j0000", "j0001") == ["Preempted", "Dispatching"]
    assert network(cluster).cancelled == ["akash-j0000"]


async def test_with_only_attempts_being_submitted_nothing_is_evicted() -> None:
    cluster = await two_on_akash(second="Dispatching")
    submitted(cluster, "j0000", minutes_ago=120, outcome="Dispatching")
    await arrive(cluster, "urgent", URGENT)
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "NoCapacity")
    assert outcomes(cluster, "j0000", "j0001") == ["Dispatching", "Dispatching"]
    assert network(cluster).cancelled == []


async def test_a_network_that_cannot_cancel_is_never_a_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eviction, "CANCELLABLE_TYPES", frozenset())
    cluster = await two_on_akash()
    await arrive(cluster, "urgent", URGENT)
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "NoCapacity")
    assert outcomes(cluster, "j0000", "j0001") == ["Running", "Running"]
    assert network(cluster).cancelled == []


async def test_work_that_is_not_preemptible_on_a_network_is_never_evicted() -> None:
    cluster = Cluster(
        policy_spec=NETWORK_ONLY,
        offers=(offer("akash", A100, PerGPUHour(Decimal("1.50")), available=1),),
    )
    await cluster.burst(1, external_job(estimatedDuration="4h"))
    submitted(cluster, "j0000", minutes_ago=20)
    refresh(cluster, available=0)
    await arrive(cluster, "urgent", URGENT)
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "NoCapacity")
    assert network(cluster).cancelled == []


@pytest.mark.parametrize(("limit", "evicts"), [("13.00", False), ("14.00", True)])
async def test_an_eviction_never_frees_a_place_the_budget_would_refuse(
    limit: str, evicts: bool
) -> None:
    # The victims' $6.00 estimates are committed: $12.00. The evictor's $1.50 fits in a
    # $14.00 budget, not in a $13.00 one, where the engine would reject it once Akash had
    # room (it checks capacity first, so its NoCapacity says nothing about the budget).
    policy = {**NETWORK_ONLY, "budget": {"limit": limit, "whenExceeded": "Reject"}}
    cluster = await two_on_akash(policy)
    await arrive(cluster, "urgent", URGENT)
    assert (routed_reason(status(cluster, "urgent"))[1] == "Preempting") is evicts
    assert outcomes(cluster, "j0001") == ["Preempted" if evicts else "Running"]
    assert network(cluster).cancelled == (["akash-j0001"] if evicts else [])


async def test_two_evictors_in_one_cycle_never_evict_the_same_work() -> None:
    cluster = await two_on_akash()
    uids = []
    for name in ("urgent-a", "urgent-b"):
        body = cluster.api.add(name, URGENT, datetime.now(UTC))
        cluster.runtime.observe(body)
        uids.append(body["metadata"]["uid"])
    await cluster.runtime.admission.cycle(uids)
    assert outcomes(cluster, "j0000", "j0001") == ["Preempted", "Preempted"]
    assert sorted(network(cluster).cancelled) == ["akash-j0000", "akash-j0001"]
    by = {status(cluster, n)["attempts"][-1]["preemptedBy"] for n in ("j0000", "j0001")}
    assert by == {"ns/urgent-a", "ns/urgent-b"}


async def test_a_full_concurrency_limit_frees_a_slot_and_the_evictor_takes_it() -> None:
    # Akash has GPUs to spare but runs at most two jobs: evicting one frees its slot at once.
    cluster = await two_on_akash(max_concurrent=2)
    ls = await arrive(cluster, "urgent", URGENT)
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert outcomes(cluster, "j0000", "j0001") == ["Running", "Preempted"]
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent"))[0] == "Routed"
    assert status(cluster, "urgent")["attempts"][-1]["provider"] == "akash"
    assert network(cluster).cancelled == ["akash-j0001"]


async def test_a_cancel_the_network_refuses_is_owed_retried_and_holds_the_evictor() -> None:
    cluster = await two_on_akash()
    network(cluster).cancel_failures = 1
    ls = await arrive(cluster, "urgent", URGENT)
    victim = status(cluster, "j0001")
    assert victim["attempts"][-1]["outcome"] == "Preempted"  # written before the cancel
    (owed,) = victim["pendingCancels"]
    assert (owed["provider"], owed["id"], owed["attempt"], owed["tries"]) == (
        "akash",
        "akash-j0001",
        1,
        1,
    )
    assert "502" in owed["lastError"]
    assert "CancelOwed" in queued_event_reasons(cluster)
    assert network(cluster).cancelled == []

    # A refresh a minute after the eviction, while the work still runs on the network, shows
    # nothing freed: the evictor keeps waiting for it rather than evict j0000 as well.
    past_backoff(cluster, "j0001")
    refresh(cluster, available=0)
    await cluster.runtime.admission.cycle([ls])
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "Preempting")
    assert outcomes(cluster, "j0000") == ["Running"]

    # The victim's next step tries the owed cancel again; the network confirms it, once.
    await cluster.runtime.work(cluster.api.jobs["j0001"]["metadata"]["uid"])
    assert network(cluster).cancelled == ["akash-j0001"]
    assert not status(cluster, "j0001").get("pendingCancels")


async def test_work_admitted_after_the_last_refresh_shows_its_gpus_at_once() -> None:
    # The offer was read before both attempts were admitted: it never counted their GPUs (the
    # loop subtracts them itself), so the one evicted is free in the very next cycle.
    cluster = Cluster(
        policy_spec=NETWORK_ONLY,
        offers=(offer("akash", A100, PerGPUHour(Decimal("1.50")), available=2),),
    )
    await cluster.burst(2, external_job(estimatedDuration="4h", preemptible=True))
    submitted(cluster, "j0000", minutes_ago=120)
    submitted(cluster, "j0001", minutes_ago=20)
    ls = await arrive(cluster, "urgent", URGENT)
    assert outcomes(cluster, "j0000", "j0001") == ["Running", "Preempted"]
    await cluster.runtime.admission.cycle([ls])
    assert status(cluster, "urgent")["attempts"][-1]["provider"] == "akash"
    assert outcomes(cluster, "j0000") == ["Running"]
    assert network(cluster).cancelled == ["akash-j0001"]


async def test_of_a_node_and_a_network_offer_the_place_losing_less_work_is_freed() -> None:
    # The node's preemptible attempt has run two hours (a checkpoint interval lost); the one
    # on Akash is still starting (nothing lost): Akash is freed, the node keeps its work.
    policy = {
        "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}]},
        "preemption": PREEMPTION,
    }
    cluster = Cluster(
        policy_spec=policy,
        gpus=1,
        offers=(offer("akash", A100, PerGPUHour(Decimal("1.50")), available=1),),
    )
    await arrive(cluster, "local", in_cluster_job(estimatedDuration="4h", preemptible=True))
    run(cluster, "local", minutes_ago=120)
    await arrive(cluster, "remote", external_job(estimatedDuration="4h", preemptible=True))
    submitted(cluster, "remote", minutes_ago=0, outcome="Pending")
    refresh(cluster, available=0)
    anywhere = external_job(
        placement="Any", gpu={"count": 1, "products": [A100]}, estimatedDuration="1h"
    )
    await arrive(cluster, "urgent", {**anywhere, "startWithin": "5m"})
    assert "evicting preemptible ns/remote on akash" in routed_message(cluster, "urgent")
    assert outcomes(cluster, "local", "remote") == ["Running", "Preempted"]
    assert network(cluster).cancelled == ["akash-remote"]
    assert not any(line.startswith("delete") for line in cluster.api.log)


async def test_after_a_restart_an_attempt_is_a_victim_only_once_its_step_has_seen_it() -> None:
    # A restarted process submits a client-driven batch again under its key before it polls
    # it: until the job's step has done so, a cancel could come before that submit.
    cluster = await two_on_akash()
    cluster.registry.submitted.clear()
    cluster.restart()
    ls = await arrive(cluster, "urgent", URGENT)
    assert routed_reason(status(cluster, "urgent")) == ("Waiting", "NoCapacity")
    assert network(cluster).cancelled == []

    await cluster.runtime.work(cluster.api.jobs["j0001"]["metadata"]["uid"])
    remote = status(cluster, "j0001")["externalRef"]["id"]
    await cluster.runtime.admission.cycle([ls])
    assert outcomes(cluster, "j0000", "j0001") == ["Running", "Preempted"]
    assert network(cluster).cancelled == [remote]
