"""``hybridgpu quote`` input handling: clear errors naming the file, line, column or field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from hybridgpu.api.computeprovider import ProviderType, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.cli import main
from hybridgpu.commands.quote import (
    InputError,
    credential_env_var,
    judge,
    load_credentials,
    load_job,
    load_providers,
)
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour


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


def test_judge_checks_products_memory_region_price_and_cost() -> None:
    job = InferenceJobSpec.model_validate(
        {
            "task": "container",
            "image": "i",
            "input": {"requests": 1},
            "estimatedDuration": "2h",
            "gpu": {"products": ["NVIDIA-A10"], "minMemory": "40Gi"},
            "regions": ["eu"],
            "maxPricePerGPUHour": "1.00",
            "maxCost": "1.50",
        }
    )
    offer = ExternalOffer(
        "p",
        ProviderType.VASTAI,
        "NVIDIA-L40S",
        24 * 2**30,
        PerGPUHour(Decimal("1.20")),
        0,
        "us",
        TrustTier.COMMUNITY,
        1.0,
    )
    verdict = judge(job, offer)
    assert not verdict.feasible
    for part in (
        "spec.gpu.products",
        "minMemory",
        "spec.regions",
        "capacity",
        "maxPricePerGPUHour",
        "maxCost",
    ):
        assert part in verdict.reason
    assert str(verdict.cost) == "2.40"
