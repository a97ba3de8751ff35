"""The chart's CRDs are the generated crds/, byte for byte, and render unchanged but metadata."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit import test_chart_render as chart

GENERATED = chart.REPO / "crds"
IN_CHART = chart.CHART / "files" / "crds"


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.yaml"))


def test_chart_crd_files_are_the_generated_ones() -> None:
    assert _names(IN_CHART) == _names(GENERATED)
    for name in _names(GENERATED):
        assert (IN_CHART / name).read_bytes() == (GENERATED / name).read_bytes(), (
            f"{name} drifted: run hack/sync-chart-crds.sh"
        )


def test_rendered_crds_equal_the_generated_specs() -> None:
    rendered = {
        d["metadata"]["name"]: d
        for d in chart.of_kind(chart.render(show_only="crds.yaml"), "CustomResourceDefinition")
    }
    for path in GENERATED.glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        out = rendered.pop(source["metadata"]["name"])
        assert out["spec"] == source["spec"]
        # Our labels are added; the generator's are kept.
        assert source["metadata"]["labels"].items() <= out["metadata"]["labels"].items()
        assert out["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert rendered == {}
