"""Early wake-ups of jobs deferred for price: the broadcaster, and what counts as freed capacity.

The stopper is Kopf's own (the object a daemon gets as ``stopped``), so these also pin that
``Wakeup.sleep`` uses its awaitable ``wait(timeout)`` the way Kopf 1.45 implements it.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from hybridgpu.controller.providers import improved_places, wake_for_refresh
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.releases import InClusterReleases
from hybridgpu.controller.wakeup import Wakeup
from hybridgpu.handlers.policies import wake_deferred_jobs
from hybridgpu.inventory.pools import NodeRecord, PodRecord
from hybridgpu.routing.snapshot import PerGPUHour, PerToken

from .routing_fixtures import offer

RTX = "nosana/NVIDIA-GeForce-RTX-4090"
LONG = 60.0
"""A delay no test waits out: returning early is the behaviour under test."""


def stopper() -> tuple[FlagSetter, AsyncFlagWaiter]:  # type: ignore[type-arg]
    setter: FlagSetter = FlagSetter()  # type: ignore[type-arg]
    return setter, AsyncFlagWaiter(setter)


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def settle() -> None:
    """Let started tasks reach their first await."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_notify_wakes_the_sleepers_awaiting_that_place() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    started = time.monotonic()
    sleepers = [asyncio.create_task(wakeup.sleep(stopped, LONG, (RTX,))) for _ in range(3)]
    await settle()
    assert not any(s.done() for s in sleepers)
    wakeup.notify(RTX)
    assert await asyncio.wait_for(asyncio.gather(*sleepers), 1.0) == [True, True, True]
    assert time.monotonic() - started < 1.0
    await settle()
    assert not other_tasks()  # the stopper waits were cancelled and awaited


async def test_a_bare_provider_wakes_every_product_of_it_and_nothing_else() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    nosana = asyncio.create_task(wakeup.sleep(stopped, LONG, (RTX,)))
    pool = asyncio.create_task(wakeup.sleep(stopped, LONG, ("in-cluster/Tesla-T4",)))
    await settle()
    wakeup.notify("akash/NVIDIA-GeForce-RTX-4090", "in-cluster/NVIDIA-A10")
    await settle()
    assert not nosana.done() and not pool.done()
    wakeup.notify("nosana")
    assert await asyncio.wait_for(nosana, 1.0) is True
    assert not pool.done()
    wakeup.notify("in-cluster")
    assert await asyncio.wait_for(pool, 1.0) is True


async def test_notify_all_wakes_every_sleeper_and_is_not_lost_meanwhile() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    sleepers = [
        asyncio.create_task(wakeup.sleep(stopped, LONG, (place,)))
        for place in (RTX, "in-cluster/Tesla-T4")
    ]
    await settle()
    before = wakeup.generation
    wakeup.notify_all()
    assert await asyncio.wait_for(asyncio.gather(*sleepers), 1.0) == [True, True]
    # A job that was deciding while the policy changed decides again at once.
    assert await asyncio.wait_for(wakeup.sleep(stopped, LONG, (RTX,), since=before), 1.0)
    assert not await wakeup.sleep(stopped, 0.01, (RTX,), since=wakeup.generation)


async def test_a_sleep_awaiting_nothing_is_not_woken() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    sleeper = asyncio.create_task(wakeup.sleep(stopped, 0.2, ()))
    await settle()
    wakeup.notify(RTX, "nosana", "in-cluster")
    await settle()
    assert not sleeper.done()
    assert await asyncio.wait_for(sleeper, 1.0) is False  # after its delay


async def test_the_delay_elapses_without_a_notify() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    started = time.monotonic()
    assert await wakeup.sleep(stopped, 0.05, (RTX,)) is False
    assert 0.04 < time.monotonic() - started < 1.0
    await settle()
    assert not other_tasks()


async def test_stop_ends_the_sleep_and_wins_over_a_pending_notify() -> None:
    wakeup = Wakeup()
    setter, stopped = stopper()
    sleeper = asyncio.create_task(wakeup.sleep(stopped, LONG, (RTX,)))
    await settle()
    setter.set()
    assert await asyncio.wait_for(sleeper, 1.0) is False
    mark = wakeup.generation
    wakeup.notify(RTX)
    # Already stopped: a notification made since the mark does not count.
    assert await wakeup.sleep(stopped, LONG, (RTX,), since=mark) is False
    started = time.monotonic()
    assert await wakeup.sleep(stopped, LONG, ()) is False  # the plain wait returns at once too
    assert time.monotonic() - started < 1.0
    await settle()
    assert not other_tasks()


async def test_a_notify_made_while_the_step_ran_is_not_lost() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    mark = wakeup.generation  # noted before deciding
    wakeup.notify("nosana")  # capacity freed while the step was deciding or writing status
    started = time.monotonic()
    assert await wakeup.sleep(stopped, LONG, (RTX,), since=mark) is True
    assert time.monotonic() - started < 0.5
    # ...but one about another place is.
    mark = wakeup.generation
    wakeup.notify("akash")
    assert await wakeup.sleep(stopped, 0.05, (RTX,), since=mark) is False


async def test_settle_holds_a_wake_until_it_is_over_without_losing_it() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    mark = wakeup.generation
    started = time.monotonic()
    sleeper = asyncio.create_task(wakeup.sleep(stopped, LONG, (RTX,), since=mark, settle=0.2))
    await settle()
    wakeup.notify(RTX)
    await asyncio.sleep(0.05)
    assert not sleeper.done()
    assert await asyncio.wait_for(sleeper, 1.0) is True
    assert 0.15 < time.monotonic() - started < 1.0


async def test_a_cancelled_sleeper_leaves_no_task_and_no_waiter() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    sleeper = asyncio.create_task(wakeup.sleep(stopped, LONG, (RTX,)))
    await settle()
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    await settle()
    assert not other_tasks()
    wakeup.notify(RTX)  # nobody left to wake; must not fail


# -- what counts as freed capacity -----------------------------------------------------------


def test_offers_that_grew_or_got_cheaper_are_named() -> None:
    full = offer("nosana", available=0, pricing=PerGPUHour(Decimal("0.30")))
    dear = offer("akash", pricing=PerGPUHour(Decimal("2.00")))
    before = (full, dear)
    assert improved_places(before, before) == set()
    grown = offer("nosana", available=2, pricing=PerGPUHour(Decimal("0.30")))
    cheaper = offer("akash", pricing=PerGPUHour(Decimal("1.50")))
    assert improved_places(before, (grown, cheaper)) == {
        "nosana/NVIDIA-A100-SXM4-80GB",
        "akash/NVIDIA-A100-SXM4-80GB",
    }
    # Fewer GPUs or a higher price free nothing; an offer of nothing is no news either.
    shrunk = offer("akash", available=1, pricing=PerGPUHour(Decimal("2.50")))
    assert improved_places(before, (full, shrunk)) == set()
    # After a rebuild (or while the provider was unusable) every offer counts.
    assert improved_places((), before) == {"akash/NVIDIA-A100-SXM4-80GB"}
    # Prices in another unit cannot be compared: the offer counts as changed.
    tokens = offer("akash", pricing=PerToken(Decimal("0.1"), Decimal("0.2")))
    assert improved_places(before, (full, tokens)) == {"akash/NVIDIA-A100-SXM4-80GB"}


async def test_a_place_no_job_can_await_yet_wakes_every_deferred_job() -> None:
    wakeup = Wakeup()
    _, stopped = stopper()
    cheap = offer("nosana", pricing=PerGPUHour(Decimal("0.30")))
    h100 = offer("nosana", product="NVIDIA-H100-80GB-HBM3", pricing=PerGPUHour(Decimal("1.00")))

    async def woken_by(before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
        # The sleeper awaits another network's place by name.
        sleeper = asyncio.create_task(wakeup.sleep(stopped, 0.5, ("akash/NVIDIA-A10",)))
        await settle()
        wake_for_refresh(wakeup, before, after)
        return await asyncio.wait_for(sleeper, 2.0)

    assert await woken_by((), (cheap,))  # a provider that just became usable
    assert await woken_by((cheap,), (cheap, h100))  # a product it did not offer before
    assert not await woken_by((cheap,), (cheap,))  # nothing new
    grown = offer("nosana", available=16, pricing=PerGPUHour(Decimal("0.30")))
    assert not await woken_by((cheap,), (grown,))  # grew: only jobs awaiting it by name
    assert wakeup.notified_since(("nosana/NVIDIA-A100-SXM4-80GB",), wakeup.generation - 1)


def _pod(phase: str, node: str | None = "n1", products: frozenset[str] | None = None) -> PodRecord:
    return PodRecord("ns", "p", node, phase, 1, products, "main")


def test_a_gpu_pod_frees_its_pool_once_when_it_ends_or_goes() -> None:
    releases = InClusterReleases()
    t4 = NodeRecord("n1", "Tesla-T4", 15360, 4, True)
    assert releases.node("n1", t4) == {"in-cluster/Tesla-T4"}  # a new node: GPUs to take
    assert releases.pod("ns/p", _pod("Running")) == frozenset()
    assert releases.pod("ns/p", _pod("Running")) == frozenset()
    assert releases.pod("ns/p", None) == {"in-cluster/Tesla-T4"}  # Succeeded: no record
    assert releases.pod("ns/p", None) == frozenset()  # then DELETED: nothing new
    # A queued pod names the products it would take; its deletion shortens their queues.
    queued = _pod("Pending", node=None, products=frozenset({"NVIDIA-A10"}))
    assert releases.pod("ns/q", queued) == frozenset()
    assert releases.pod("ns/q", None) == {"in-cluster/NVIDIA-A10"}
    # A pod on a node not (yet) known, naming no product: any pool.
    assert releases.pod("ns/r", _pod("Running", node="n9")) == frozenset()
    assert releases.pod("ns/r", None) == {"in-cluster"}
    # A pod the operator never saw holding GPUs frees nothing it knows of.
    assert releases.pod("ns/s", None) == frozenset()


def test_a_node_frees_capacity_when_it_appears_grows_or_is_uncordoned() -> None:
    releases = InClusterReleases()
    ready = NodeRecord("n1", "Tesla-T4", 15360, 4, True)
    cordoned = NodeRecord("n1", "Tesla-T4", 15360, 4, False)
    assert releases.node("n1", cordoned) == frozenset()
    assert releases.node("n1", ready) == {"in-cluster/Tesla-T4"}
    assert releases.node("n1", ready) == frozenset()  # a heartbeat changes nothing
    assert releases.node("n1", cordoned) == frozenset()
    assert releases.node("n1", ready) == {"in-cluster/Tesla-T4"}
    bigger = NodeRecord("n1", "Tesla-T4", 15360, 8, True)
    assert releases.node("n1", bigger) == {"in-cluster/Tesla-T4"}
    assert releases.node("n1", None) == frozenset()  # a node going frees nothing


async def test_a_policy_spec_change_wakes_every_waiting_job_but_its_status_does_not() -> None:
    memo = kopf.Memo()
    memo.registry = Registry()
    memo.policy_generations = {}
    poked: list[str] = []
    memo.jobs = SimpleNamespace(poke_namespace=poked.append)
    wakeup = memo.registry.wakeup

    async def event(generation: int, type: str = "MODIFIED") -> int:
        before = wakeup.generation
        meta = {"generation": generation}
        await wake_deferred_jobs(namespace="ns", name="p", meta=meta, memo=memo, type=type)
        return wakeup.generation - before

    # First sight (also after a restart): the jobs of its namespace that waited for it go now.
    assert await event(1, "ADDED") == 0
    assert poked == ["ns"]
    assert await event(1) == 0  # a status patch: same generation
    assert await event(2) == 1  # the spec changed
    assert wakeup.notified_since((RTX,), 0)
    assert await event(2) == 0
    assert await event(2, "DELETED") == 0
    assert memo.policy_generations == {}


def test_a_refresh_tells_the_admission_loop_that_prices_may_have_dropped() -> None:
    """Only a refresh may lower a price: its places reach the listeners marked so, and a
    release (an attempt that ended) does not."""
    wakeup = Wakeup()
    heard: list[tuple[frozenset[str] | None, bool]] = []
    wakeup.listeners.append(lambda places, repriced: heard.append((places, repriced)))
    dear = offer("akash", pricing=PerGPUHour(Decimal("2.00")))
    cheaper = offer("akash", pricing=PerGPUHour(Decimal("1.00")))
    wake_for_refresh(wakeup, (dear,), (cheaper,))
    wakeup.notify("akash")
    assert heard == [
        (frozenset({"akash/NVIDIA-A100-SXM4-80GB"}), True),
        (frozenset({"akash"}), False),
    ]
