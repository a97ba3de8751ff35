"""The eviction rule on network offers: capacity and provider slots, only where cancel works."""

from __future__ import annotations

import random
from decimal import Decimal

from hybridgpu.api.computeprovider import CANCELLABLE_TYPES, ProviderType
from hybridgpu.networks.container import ContainerAdapter
from hybridgpu.routing.decision import ScoredCandidate
from hybridgpu.routing.preemption import (
    Eviction,
    Place,
    Running,
    choose_victims,
    plan_eviction,
    rank,
)

LOW = rank(0, latency_sensitive=False)
HIGH = rank(0, latency_sensitive=True)


def ext(
    uid: str,
    gpus: int,
    ran: float,
    *,
    product: str = "RTX4090",
    job_rank: int = LOW,
    provider: str = "nosana",
    ends_in: float | None = None,
) -> Running:
    return Running(uid, product, "", gpus, job_rank, ran, ends_in, provider=provider)


def offer(
    free: int,
    *,
    slots: int | None = None,
    price: str = "0.30",
    start: float = 120.0,
    product: str = "RTX4090",
    provider: str = "nosana",
) -> Place:
    return Place(product, "", free, provider, slots, Decimal(price), start)


def test_every_cancellable_network_has_an_adapter_that_cancels() -> None:
    from hybridgpu.networks import akash, livepeer, nosana, openai_compat, vastai

    classes = {
        ProviderType.AKASH: akash.AkashAdapter,
        ProviderType.NOSANA: nosana.NosanaAdapter,
        ProviderType.VASTAI: vastai.VastAdapter,
        ProviderType.LIVEPEER: livepeer.LivepeerAdapter,
        ProviderType.OPENAI: openai_compat.OpenAIAdapter,
    }
    for kind in CANCELLABLE_TYPES:
        assert classes[kind].cancel is not ContainerAdapter.cancel  # not the abstract stub


def test_work_on_a_network_that_cannot_cancel_is_left_alone() -> None:
    def evict(cancellable: set[str]) -> Eviction | None:
        return choose_victims(
            gpus=1,
            job_rank=HIGH,
            products=None,
            places=[offer(0)],
            running=[ext("be", 1, 60)],
            cancellable=cancellable,
        )

    assert evict(set()) is None
    found = evict({"nosana"})
    assert found is not None and found.victims == ("be",) and found.provider == "nosana"
    assert found.external


def test_offer_capacity_is_freed_by_victims_of_its_product_newest_first() -> None:
    running = [ext("old", 2, 7200), ext("new", 2, 60), ext("other", 4, 10, product="A100")]
    found = choose_victims(
        gpus=2,
        job_rank=HIGH,
        products=None,
        places=[offer(0)],
        running=running,
        cancellable={"nosana"},
    )
    assert found is not None and found.victims == ("new",)


def test_a_full_provider_slot_limit_is_freed_by_any_of_its_attempts() -> None:
    # GPUs are free on the offer but the network runs its maxConcurrentJobs: one attempt of
    # any product frees a slot; the newest goes.
    running = [ext("a100", 1, 30, product="A100"), ext("old", 1, 5000)]
    found = choose_victims(
        gpus=1,
        job_rank=HIGH,
        products=None,
        places=[offer(4, slots=0)],
        running=running,
        cancellable={"nosana"},
    )
    assert found is not None and found.victims == ("a100",)
    # Both GPUs and a slot short: one victim on the offer frees both.
    found = choose_victims(
        gpus=1,
        job_rank=HIGH,
        products=None,
        places=[offer(0, slots=0)],
        running=running,
        cancellable={"nosana"},
    )
    assert found is not None and found.victims == ("old",)


def test_plan_eviction_needs_the_networks_start_latency_within_the_deadline() -> None:
    def plan(deadline: float) -> object:
        return plan_eviction(
            target=None,
            deadline_seconds=deadline,
            gpus=1,
            runs_for_seconds=3600,
            job_rank=HIGH,
            products=None,
            prices={},
            places=[offer(0, start=120)],
            running=[ext("be", 1, 60)],
            checkpoint_seconds=900,
            cancellable={"nosana"},
        )

    assert plan(300) is not None
    assert plan(100) is None  # it would start late there anyway


def test_random_external_evictions_are_sufficient_lower_ranked_cancellable_and_minimal() -> None:
    rng = random.Random(153)
    providers = ["nosana", "akash", "io"]
    products = ["RTX4090", "A100"]
    for _ in range(800):
        running = [
            ext(
                f"j{i}",
                rng.randint(1, 4),
                rng.uniform(0, 1e4),
                product=rng.choice(products),
                job_rank=rng.randint(0, 3),
                provider=rng.choice(providers),
            )
            for i in range(rng.randint(0, 10))
        ]
        places = [
            offer(rng.randint(0, 3), slots=rng.choice([None, 0, 1]), product=prod, provider=prov)
            for prov in providers
            for prod in products
            if rng.random() < 0.7
        ]
        cancellable = {p for p in providers if rng.random() < 0.7}
        need, job_rank = rng.randint(1, 6), rng.randint(0, 3)
        found = choose_victims(
            gpus=need,
            job_rank=job_rank,
            products=None,
            places=places,
            running=running,
            cancellable=cancellable,
        )
        by_uid = {v.uid: v for v in running}
        if found is None:
            for p in places:  # no offer could have been freed by evictable work
                if p.provider not in cancellable:
                    continue
                pool = [v for v in running if v.provider == p.provider and v.rank < job_rank]
                gpus = sum(v.gpus for v in pool if v.gpu_product == p.gpu_product)
                slots_ok = p.slots is None or p.slots >= 1 or len(pool) >= 1
                room = p.free >= need and (p.slots is None or p.slots >= 1)
                assert room or not (p.free + gpus >= need and slots_ok)
            continue
        place = next(
            p for p in places if (p.provider, p.gpu_product) == (found.provider, found.gpu_product)
        )
        victims = [by_uid[u] for u in found.victims]
        assert found.provider in cancellable
        assert all(v.rank < job_rank and v.provider == found.provider for v in victims)

        def enough(vs: list[Running], place: Place = place, need: int = need) -> bool:
            freed = sum(v.gpus for v in vs if v.gpu_product == place.gpu_product)
            slots = len(vs) + (place.slots if place.slots is not None else 1)
            return place.free + freed >= need and slots >= 1

        assert enough(victims)
        assert all(not enough([v for v in victims if v is not w]) for w in victims)


def test_plan_eviction_takes_the_least_lost_of_the_places_worth_it() -> None:
    # Evicting on Nosana loses less work but costs more than the on-time answer ($0.40);
    # the cluster's node loses more yet is worth it, so it is the one chosen.
    target = ScoredCandidate(
        "akash/A100",
        "External",
        "akash",
        "A100",
        Decimal("0.40"),
        Decimal("0.40"),
        60.0,
        1.0,
        True,
        "Feasible",
    )
    found = plan_eviction(
        target=target,
        deadline_seconds=300,
        gpus=1,
        runs_for_seconds=3600,
        job_rank=HIGH,
        products=None,
        prices={"RTX4090": Decimal("0.10")},
        places=[offer(0, price="0.50"), Place("RTX4090", "n1", 0)],
        running=[ext("net", 1, 10), Running("node", "RTX4090", "n1", 1, LOW, 600)],
        checkpoint_seconds=900,
        cancellable={"nosana"},
    )
    assert found is not None
    assert (found.provider, found.victims) == ("", ("node",))
