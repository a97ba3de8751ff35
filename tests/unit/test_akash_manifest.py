"""The Akash manifest port against chain-sdk's own output, and the Console's unit conversions."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.akash import build_sdl, per_block_ceiling, usd_per_hour
from hybridgpu.networks.akash_manifest import manifest_of

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "akash-manifests.json").read_text())


def test_fixtures_come_from_chain_sdk() -> None:
    assert FIXTURES["source"].startswith("@akashnetwork/chain-sdk@")
    assert len(FIXTURES["cases"]) >= 3


@pytest.mark.parametrize("case", FIXTURES["cases"], ids=lambda c: c["hash"][:8])
def test_manifest_and_version_match_chain_sdk(case: dict[str, str]) -> None:
    manifest, version = manifest_of(case["sdl"])
    assert manifest == case["manifest"]
    assert version == case["hash"]


def test_the_version_changes_with_the_idempotency_key_only_through_the_env() -> None:
    job = InferenceJobSpec.model_validate(
        {"task": "container", "image": "i:1", "input": {"requests": 1}, "estimatedDuration": "1h"}
    )
    a = manifest_of(build_sdl(job, "key-a", "NVIDIA-GeForce-RTX-4090", Decimal("0.5")))[1]
    b = manifest_of(build_sdl(job, "key-b", "NVIDIA-GeForce-RTX-4090", Decimal("0.5")))[1]
    # The bid ceiling is not part of the manifest: a new cap does not make a new deployment.
    c = manifest_of(build_sdl(job, "key-a", "NVIDIA-GeForce-RTX-4090", Decimal("0.9")))[1]
    assert a != b
    assert a == c


def test_unsupported_sdl_features_are_refused() -> None:
    expose = "    expose:\n    - port: 80\n    env:\n"
    sdl = FIXTURES["cases"][0]["sdl"].replace("    env:\n", expose)
    with pytest.raises(ValueError, match="expose"):
        manifest_of(sdl)


@pytest.mark.parametrize(
    ("denom", "amount", "akt", "expected"),
    [
        # The Console's gpu-price service: uact/block x 600 blocks/h / 10^6 = USD/h.
        ("uact", "650", None, Decimal("0.39")),
        ("uact", "1.378800000000000000", None, Decimal("0.00082728")),
        # uakt x the AKT price.
        ("uakt", "1000", Decimal("2.5"), Decimal("1.5")),
        ("uakt", "1000", None, None),
        ("usd", "0.5", None, None),  # never a Console bid denom
    ],
)
def test_per_block_prices_convert_like_the_console(
    denom: str, amount: str, akt: Decimal | None, expected: Decimal | None
) -> None:
    assert usd_per_hour(denom, Decimal(amount), akt) == expected


def test_the_sdl_bid_ceiling_is_the_cap_per_block() -> None:
    assert per_block_ceiling(Decimal("0.39"), 1) == 650
    assert per_block_ceiling(Decimal("0.391"), 2) == 1304  # 1303.33 rounded up
    assert usd_per_hour("uact", Decimal(per_block_ceiling(Decimal("2.71"), 8)), None) >= Decimal(
        "21.68"
    )
