"""Token-priced (serverless) offers: feasibility is task and model, not GPU shape."""

from __future__ import annotations

from decimal import Decimal

from hybridgpu.api.computeprovider import ProviderType
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import ExternalOffer, PerToken

from .routing_fixtures import job, offer, policy, snapshot

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def io_net(served: str | None = MODEL, **kw: object) -> ExternalOffer:
    """An offer as networks/openai_compat.py builds it: unknown GPU, no memory, model label."""
    kw.setdefault("tasks", frozenset({"llm"}))
    return offer(
        "ionet",
        "unknown",
        PerToken(Decimal("0.02"), Decimal("0.05")),
        provider_type=ProviderType.OPENAI,
        memory_bytes=0,
        labels={} if served is None else {"hybridgpu.dev/model": served},
        **kw,
    )


def test_gpu_memory_products_and_count_do_not_bind_a_token_endpoint() -> None:
    constrained = job(gpu={"count": 4, "minMemory": "40Gi", "products": ["NVIDIA-H100"]})
    d = decide(constrained, policy(), snapshot((), (io_net(available=1),)))
    assert d.outcome == "Routed"
    assert d.target is not None
    assert d.target.name == "ionet/unknown"
    # 100 requests x (500 in at $0.02/M + 100 out at $0.05/M) = $0.0015
    assert d.target.estimated_cost == Decimal("0.0015")


def test_the_same_constraints_still_bind_a_gpu_hour_offer() -> None:
    constrained = job(gpu={"count": 1, "minMemory": "40Gi", "products": ["NVIDIA-H100"]})
    small = offer("akash", "NVIDIA-H100", memory_bytes=24 * 2**30)
    other = offer("vastai", "NVIDIA-A10")
    d = decide(constrained, policy(), snapshot((), (small, other)))
    assert {c.name: c.reason for c in d.candidates} == {
        "akash/NVIDIA-H100": "InsufficientMemory",
        "vastai/NVIDIA-A10": "ProductNotAllowed",
    }


def test_an_endpoint_serving_another_model_is_rejected_for_good() -> None:
    fixed = snapshot((), (io_net("mistralai/Mistral-7B"),), inventory_final=True)
    d = decide(job(), policy(), fixed)
    assert d.outcome == "Rejected"
    assert d.reason == "ModelNotServed"
    assert d.candidates[0].reason == "ModelNotServed"


def test_an_endpoint_without_a_model_label_takes_any_model() -> None:
    d = decide(job(model="some/other-model"), policy(), snapshot((), (io_net(None),)))
    assert d.target is not None
    assert d.target.provider == "ionet"


def test_a_token_endpoint_takes_only_llm_jobs() -> None:
    # No tasks restriction on the offer: the pricing unit alone rules out non-llm work.
    endpoint = io_net(tasks=None)
    image = job(task="text-to-image", model="stabilityai/sd-turbo", input={"requests": 10})
    d = decide(image, policy(), snapshot((), (endpoint,), inventory_final=True))
    assert d.outcome == "Rejected"
    assert d.candidates[0].reason == "TaskNotSupported"


def test_the_cheapest_place_wins_between_tokens_and_gpu_hours() -> None:
    # $0.0015 for the whole batch on the endpoint vs an hour of a $2.00 GPU.
    gpu = offer("akash", "NVIDIA-A100-SXM4-80GB")
    d = decide(job(gpu={"minMemory": "80Gi"}), policy(), snapshot((), (gpu, io_net())))
    assert d.target is not None
    assert d.target.name == "ionet/unknown"
    assert [c.feasible for c in d.candidates] == [True, True]
