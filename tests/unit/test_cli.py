"""The command line: version, CRDs, and commands importing only what they need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybridgpu import __version__
from hybridgpu.cli import COMMANDS, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hybridgpu {__version__}"


def test_crds_prints_the_three_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert sorted(d["spec"]["names"]["kind"] for d in docs) == [
        "ComputeProvider",
        "InferenceJob",
        "RoutingPolicy",
    ]


def test_every_command_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


def test_the_operator_command_does_not_load_the_simulator() -> None:
    code = (
        "import sys; from hybridgpu.cli import build_parser; build_parser('run'); "
        "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_explain_without_a_usable_kubeconfig_says_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "kubeconfig"
    empty.write_text("")
    assert main(["explain", "some-job", "--kubeconfig", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the cluster" in err
    assert "--kubeconfig" in err and "KUBECONFIG" in err
