"""Jobs deferred for price: they wait for the cheap busy place, and are decided again as soon as
capacity may have come free there, not after the 6 h backstop.

The first tests drive ``JobStep`` with the fakes of test_reconcile; the last runs the jobs and
providers daemons themselves (Kopf handlers called as plain coroutines).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.commands import explain
from hybridgpu.controller.claims import Holdings, job_hold
from hybridgpu.controller.jobloop import Inventory, JobRuntime
from hybridgpu.controller.providers import improved_places
from hybridgpu.controller.reconcile import Deps, JobStep
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.releases import InClusterReleases
from hybridgpu.handlers import indexes as index_handlers
from hybridgpu.handlers import providers as provider_handlers
from hybridgpu.routing.engine import DEFERRAL_RECHECK_SECONDS
from hybridgpu.routing.snapshot import ExternalOffer, InClusterPool, Snapshot

from .test_reconcile import RTX, FakeKube, FakeNetwork, World

CHEAP = f"cheap/{RTX}"
DEAR = f"dear/{RTX}"
DEFERRING: dict[str, Any] = {
    "inCluster": {"enabled": False},
    "failover": {"backoff": "0s"},
    "deferral": {"maxPremiumPercent": 10},
}
Events = list[tuple[str, str, str]]


def full(o: ExternalOffer) -> ExternalOffer:
    return replace(o, available=0)


def stopper() -> tuple[FlagSetter, AsyncFlagWaiter]:  # type: ignore[type-arg]
    setter: FlagSetter = FlagSetter()  # type: ignore[type-arg]
    return setter, AsyncFlagWaiter(setter)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


async def run_step(
    world: World, events: Events, deps: Deps | None = None
) -> tuple[JobStep, float | None]:
    step = JobStep(copy.deepcopy(world.kube.obj), deps or world.deps(), lambda *e: events.append(e))
    return step, await step.run()


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_deferred_job_waits_for_the_cheap_offer_and_takes_it_once_it_grows() -> None:
    world = World(policy=DEFERRING)
    cheap, dear = world.offers
    world.offers = (full(cheap), dear)  # the cheap network is out of GPUs; the dear one, 2x, is not
    events: Events = []
    step, delay = await run_step(world, events)

    assert delay == DEFERRAL_RECHECK_SECONDS
    status = world.status
    assert status["decision"]["outcome"] == "Wait"
    routed = conditions(status)["Routed"]
    assert (routed["status"], routed["reason"]) == ("False", "DeferredForPrice")
    assert status["phase"] == "Pending"
    assert status.get("attempts", []) == []
    assert world.networks["dear"].submissions == []
    # Awaited: the cheap place; the dear one too, should its price fall within the premium.
    assert step.wake_on == (CHEAP, DEAR)
    assert [(t, r) for t, r, _ in events] == [("Normal", "Waiting")]
    assert "deferred for price" in events[0][2]

    out = io.StringIO()
    explain.render("j", "ns", world.kube.obj, out)
    table = out.getvalue()
    assert "by policy 'default': Wait" in table
    assert "deferred for price: " + CHEAP in table
    assert f"waiting for capacity at: {CHEAP}\n" in table
    assert status["decision"]["awaiting"] == [CHEAP]
    rows = {
        cells[1]: cells[-1]
        for cells in (line.split() for line in table.splitlines())
        if cells and cells[0].isdigit()
    }
    assert rows == {CHEAP: "NoCapacity", DEAR: "DeferredForPrice"}

    # The next refresh of the cheap network's offers shows GPUs again: the daemon's sleep on
    # the step's places ends at once.
    before = world.offers
    world.offers = (cheap, dear)
    sleeping = asyncio.create_task(world.registry.wakeup.sleep(_never(), 3600, step.wake_on))
    await asyncio.sleep(0)
    world.registry.wakeup.notify(*improved_places(before, world.offers))
    assert await asyncio.wait_for(sleeping, 1.0) is True

    await run_step(world, events)
    attempt = world.status["attempts"][0]
    assert (attempt["provider"], attempt["outcome"]) == ("cheap", "Pending")
    assert world.networks["cheap"].submissions[0][0] == "uid-7-1"
    assert conditions(world.status)["Routed"]["status"] == "True"


def _never() -> AsyncFlagWaiter:  # type: ignore[type-arg]
    return stopper()[1]


async def test_a_job_ending_at_the_awaited_provider_wakes_the_deferred_one() -> None:
    """One slot on the cheap network (maxConcurrentJobs 1): the second job defers for it, and
    gets it when the first job's attempt ends."""
    first = World(policy=DEFERRING)
    registry = first.registry
    registry.providers["cheap"].spec = ComputeProviderSpec.model_validate(
        {"type": "vastai", "endpoint": "https://x.test", "maxConcurrentJobs": 1}
    )
    for name, o in zip(("cheap", "dear"), first.offers, strict=True):
        registry.providers[name].offers = (o,)

    second = World(policy=DEFERRING)

    def live(world: World) -> Deps:
        # Offers with the slots the jobs' statuses hold (controller/claims.py) counted.
        def snapshot(ns: str, name: str, p: Any) -> Snapshot:
            held = Holdings.of([first.kube.obj, second.kube.obj], ())
            return Snapshot(now=world.now, offers=held.offers(registry.offers(world.now), {}))

        return replace(world.deps(), snapshot=snapshot)

    second.registry = registry
    second.kube.obj["metadata"].update(name="k", uid="uid-8")
    events: Events = []

    await run_step(first, events, live(first))
    assert first.status["attempts"][0]["provider"] == "cheap"
    waiting, _ = await run_step(second, events, live(second))
    assert second.status["decision"]["outcome"] == "Wait"
    assert conditions(second.status)["Routed"]["reason"] == "DeferredForPrice"
    reasons = {c["name"]: c["reason"] for c in second.status["decision"]["candidates"]}
    assert reasons == {CHEAP: "ConcurrencyLimit", DEAR: "DeferredForPrice"}
    assert CHEAP in waiting.wake_on

    mark = registry.wakeup.generation
    sleeping = asyncio.create_task(
        registry.wakeup.sleep(_never(), 3600, waiting.wake_on, since=mark)
    )
    await run_step(first, events, live(first))  # polled: still running, nothing freed
    await asyncio.sleep(0)
    assert not sleeping.done()
    first.networks["cheap"].state = "Succeeded"
    await run_step(first, events, live(first))
    assert first.status["phase"] == "Succeeded"
    assert await asyncio.wait_for(sleeping, 1.0) is True

    await run_step(second, events, live(second))
    assert second.status["attempts"][0]["provider"] == "cheap"
    assert second.status["externalRef"]["idempotencyKey"] == "uid-8-1"


async def test_cancelling_an_in_cluster_attempt_notifies_its_pool() -> None:
    pools = (InClusterPool("Tesla-T4", 16 * 2**30, allocatable=4, in_use=0),)
    world = World(
        spec={"gpu": {"count": 1, "products": ["Tesla-T4"]}},
        pools=pools,
        policy={"inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.1"}]}},
    )
    await run_step(world, [])
    assert job_hold(world.kube.obj, ()) is not None
    mark = world.registry.wakeup.generation
    world.kube.obj["spec"]["suspend"] = True
    await run_step(world, [])
    assert job_hold(world.kube.obj, ()) is None
    assert world.registry.wakeup.notified_since(("in-cluster/Tesla-T4",), mark)
    assert not world.registry.wakeup.notified_since(("in-cluster/NVIDIA-A10",), mark)


async def test_a_gpu_pod_ending_notifies_its_pool_through_the_event_handlers() -> None:
    memo = kopf.Memo(registry=Registry(), releases=InClusterReleases())
    node = {
        "metadata": {"name": "n1", "labels": {"nvidia.com/gpu.product": "Tesla-T4"}},
        "status": {
            "allocatable": {"nvidia.com/gpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    pod = {
        "metadata": {"namespace": "ns", "name": "p"},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }
    wakeup = memo.registry.wakeup
    # Kopf calls the handlers only for GPU pods and nodes (it logs every call).
    assert index_handlers._pod_wants_gpus(spec=pod["spec"])
    assert not index_handlers._pod_wants_gpus(spec={"containers": [{"name": "web"}]})
    assert index_handlers._node_has_gpus(status=node["status"])
    assert not index_handlers._node_has_gpus(status={"allocatable": {"cpu": "4"}})

    async def handle_pod(kind: str, body: dict[str, Any]) -> None:
        await index_handlers.gpu_pod_released(
            event={"type": kind, "object": body},
            namespace="ns",
            name="p",
            body=kopf.Body(body),
            memo=memo,
        )

    await index_handlers.gpu_node_added(
        event={"type": "ADDED", "object": node}, name="n1", body=kopf.Body(node), memo=memo
    )
    mark = wakeup.generation
    await handle_pod("ADDED", pod)
    await handle_pod("MODIFIED", pod)
    assert wakeup.generation == mark  # a running pod frees nothing
    done = copy.deepcopy(pod)
    done["status"]["phase"] = "Succeeded"
    await handle_pod("MODIFIED", done)
    assert wakeup.notified_since(("in-cluster/Tesla-T4",), mark)
    mark = wakeup.generation
    await handle_pod("DELETED", done)
    assert wakeup.generation == mark  # its GPUs were already counted free


class OfferingNetwork(FakeNetwork):
    offers: tuple[ExternalOffer, ...] = ()

    async def list_offers(self) -> list[ExternalOffer]:
        return list(self.offers)


class OperatorKube(FakeKube):
    async def patch_provider_status(self, name: str, status: dict[str, Any]) -> None:
        self.log.append(f"provider status {name}")

    async def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def post_event(self, ns: str, body: dict[str, Any]) -> None:
        self.log.append(f"event {body['reason']}")


async def test_the_runtime_wakes_a_deferred_job_when_the_provider_refresh_shows_capacity() -> None:
    """The admission loop, work queue and providers daemon together, on fakes."""
    world = World(policy=DEFERRING)
    kube = OperatorKube(world.kube.obj, world.log)
    job = kube.obj
    job["metadata"]["creationTimestamp"] = datetime.now(UTC).isoformat()
    registry = Registry()
    provider_spec = {"type": "vastai", "endpoint": "https://x.test"}
    networks: dict[str, OfferingNetwork] = {}
    for name, o in zip(("cheap", "dear"), world.offers, strict=True):
        networks[name] = OfferingNetwork(name, world.log)
        registry.providers[name] = replace(
            world.registry.providers[name],
            adapter=networks[name],
            offers=(o,),
            refreshed=datetime.now(UTC),
        )
    cheap_offer = world.offers[0]
    # The providers daemon must find the adapter current, not build a real one.
    assert registry.providers["cheap"].spec == ComputeProviderSpec.model_validate(provider_spec)
    registry.providers["cheap"].offers = (full(cheap_offer),)
    inventory = Inventory(
        nodes=lambda: (),
        pods=lambda: (),
        policies=lambda ns, name: (DEFERRING, "", {}) if (ns, name) == ("ns", "default") else None,
        all_policies=lambda: [(("ns", "default"), {})],
        provider_exists=lambda name: name in ("cheap", "dear"),
        attempt_pods=lambda: (),
        telemetry=lambda: None,
        telemetry_problem=lambda: "",
    )
    runtime = JobRuntime(kube, registry, inventory)  # type: ignore[arg-type]
    memo = kopf.Memo(kube=kube, registry=registry, jobs=runtime)
    log = logging.getLogger("test")
    loops = asyncio.create_task(runtime.run())
    try:
        runtime.observe(copy.deepcopy(job))
        runtime.queue.schedule("uid-7", 0.0)
        await until(lambda: (job.get("status") or {}).get("decision") is not None)
        routed = conditions(job["status"])["Routed"]
        assert (routed["status"], routed["reason"]) == ("False", "DeferredForPrice")
        assert runtime.admission.waiting == {"uid-7"}
        patches = world.log.count("patch")

        registry.wakeup.notify("akash", "in-cluster")  # decided again: nothing changed, no write
        await asyncio.sleep(0.2)
        assert world.log.count("patch") == patches

        # The providers daemon refreshes the cheap network, which has GPUs again.
        networks["cheap"].offers = (cheap_offer,)
        stop_provider, provider_stopped = stopper()
        refresher = asyncio.create_task(
            provider_handlers.keep_provider(
                stopped=provider_stopped,
                name="cheap",
                body={"metadata": {"name": "cheap", "generation": 1}, "spec": provider_spec},
                memo=memo,
                logger=log,
            )
        )
        started = time.monotonic()
        await until(lambda: bool(job["status"].get("attempts")))
        assert time.monotonic() - started < 2.0  # not the 6 h retry
        assert job["status"]["attempts"][0]["provider"] == "cheap"
        # The admission loop wrote the intent; the work queue then submitted it.
        await until(lambda: bool(job["status"]["externalRef"].get("id")))
        assert [k for k, _ in networks["cheap"].submissions] == ["uid-7-1"]
        assert "provider status cheap" in world.log
        await until(lambda: "event Routed" in world.log)
        stop_provider.set()
        await asyncio.wait_for(refresher, 2.0)
    finally:
        loops.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loops
