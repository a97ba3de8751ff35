"""One version: hybridgpu.__version__. The package metadata reads it (pyproject's dynamic
version); the chart's version and appVersion (the default image tag) follow it, and
hack/set-version.sh moves all of them together."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import hybridgpu

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "hybridgpu" / "Chart.yaml"


def test_the_package_takes_its_version_from_hybridgpu_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "hybridgpu.__version__"}
    assert metadata.version("hybridgpu") == hybridgpu.__version__


def test_the_charts_versions_are_the_packages() -> None:
    chart = yaml.safe_load(CHART.read_text())
    assert chart["appVersion"] == hybridgpu.__version__
    assert chart["version"] == hybridgpu.__version__


def test_set_version_moves_the_package_and_the_chart_together(tmp_path: Path) -> None:
    for relative in ("hack/set-version.sh", "operator/hybridgpu/__init__.py", CHART):
        source = REPO / relative
        target = tmp_path / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    subprocess.run(
        [str(tmp_path / "hack" / "set-version.sh"), "9.8.7"], check=True, capture_output=True
    )
    init = (tmp_path / "operator" / "hybridgpu" / "__init__.py").read_text()
    assert '__version__ = "9.8.7"' in init
    chart = yaml.safe_load((tmp_path / CHART.relative_to(REPO)).read_text())
    assert (chart["version"], chart["appVersion"]) == ("9.8.7", "9.8.7")
    refused = subprocess.run(
        [str(tmp_path / "hack" / "set-version.sh"), "latest"], capture_output=True, check=False
    )
    assert refused.returncode != 0
