"""``hybridgpu quote`` input handling: clear errors naming the file, line, column or field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.cli import main
from hybridgpu.commands.quote import (
    QUOTE_ROUTING,
    InputError,
    credential_env_var,
    judge,
    judge_all,
    load_credentials,
    load_job,
    load_providers,
)
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour, Snapshot


def test_env_var_name() -> None:
    assert credential_env_var("vast-eu.1") == "HYBRIDGPU_CREDENTIAL_VAST_EU_1"


def test_yaml_errors_name_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("kind: InferenceJob\nspec:\n  task: [llm\n")
    with pytest.raises(InputError, match=r"job.yaml: line 4, column 1"):
        load_job(bad)


def test_model_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text(
        "kind: InferenceJob\n"
        "spec: {task: llm, model: m, input: {requests: 0}, estimatedDuration: 1m}\n"
    )
    with pytest.raises(InputError, match=r"spec.input.requests"):
        load_job(bad)


def test_providers_must_be_compute_providers(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "kind: ComputeProvider\nmetadata: {name: a}\nspec: {type: vastai, endpoint: http://example.com}\n"
    )
    with pytest.raises(InputError, match=r"spec.endpoint"):
        load_providers(bad)
    bad.write_text("kind: Pod\n")
    with pytest.raises(InputError, match="document 1 is not a ComputeProvider"):
        load_providers(bad)


def test_credentials_file_must_map_names_to_strings(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("- a\n")
    with pytest.raises(InputError, match="mapping of provider name"):
        load_credentials(bad, ["a"])


def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["quote", "-f", str(missing), "--providers", str(missing)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_quote_judges_offers_as_the_engine_does() -> None:
    # The quote used to run its own checks, which disagreed with the engine (no trust tier,
    # capacity by one GPU, costs on estimatedDuration alone). Now it asks the engine itself.
    job = InferenceJobSpec.model_validate(
        {
            "task": "container",
            "image": "i",
            "input": {"requests": 1},
            "estimatedDuration": "2h",
            "gpu": {"count": 2, "products": ["NVIDIA-L40S", "NVIDIA-A10"]},
            "maxCost": "5.00",
        }
    )

    def offer(product: str, usd: str, available: int, region: str = "us") -> ExternalOffer:
        return ExternalOffer(
            "p",
            ProviderType.VASTAI,
            product,
            24 * 2**30,
            PerGPUHour(Decimal(usd)),
            available,
            region,
            TrustTier.COMMUNITY,
            1.0,
        )

    offers = [
        offer("NVIDIA-L40S", "1.00", 2),  # 2 GPUs x 2 h x $1.00 = $4.00
        offer("NVIDIA-L40S", "1.00", 1),  # one GPU free: the job needs two
        offer("NVIDIA-A10", "1.50", 4),  # $6.00 > maxCost
        offer("NVIDIA-H100", "0.50", 8),
    ]
    verdicts = judge_all(job, offers)
    snapshot = Snapshot(now=datetime.now(UTC), offers=tuple(offers), inventory_final=True)
    engine = {id(c.offer): c for c in decide(job, QUOTE_ROUTING, snapshot).candidates}
    for verdict, o in zip(verdicts, offers, strict=True):
        assert verdict.cost == engine[id(o)].estimated_cost
        assert verdict.feasible == engine[id(o)].feasible
        assert verdict.reason.split(":")[0] == (
            "" if engine[id(o)].reason == "Feasible" else engine[id(o)].reason
        )
    assert [v.feasible for v in verdicts] == [True, False, False, False]
    assert verdicts[1].reason == "NoCapacity: no capacity available"
    assert verdicts[2].reason == "MaxCostExceeded: estimated 6 USD is above maxCost"
    assert verdicts[3].reason.startswith("ProductNotAllowed: GPU NVIDIA-H100")
    assert str(verdicts[0].cost) == "4.00"
    assert judge(job, offers[0]).estimate == "EstimatedDuration 4 GPU-h"
