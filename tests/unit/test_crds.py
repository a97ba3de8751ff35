"""The CRDs under crds/ are the rendering of the models, and they teach the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridgpu.api import crdgen

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_the_models(kind: crdgen.Kind) -> None:
    path = CRDS / f"hybridgpu.dev_{kind.plural}.yaml"
    assert path.read_text() == crdgen.render(kind), (
        f"{path.name} drifted from the models: run `hybridgpu crds --write crds`"
    )


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        found += _walk(prop, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict) and "properties" in items:
        found += _walk(items, f"{path}[]")
    return found


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_described(kind: crdgen.Kind) -> None:
    root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(root)
    for forbidden in ("$ref", "anyOf", "title:", "$defs"):
        assert forbidden not in text
    for path, node in _walk(root["properties"]["spec"], "spec") + _walk(
        root["properties"]["status"], "status"
    ):
        assert node.get("description"), f"{kind.kind} {path} has no description"
        assert "type" in node, f"{kind.kind} {path} has no type"


def test_names_columns_and_scope() -> None:
    by_kind = {k.kind: crdgen.crd(k) for k in crdgen.KINDS}
    ij = by_kind["InferenceJob"]["spec"]
    assert ij["names"]["shortNames"] == ["ij"]
    assert ij["names"]["categories"] == ["hybridgpu"]
    columns = [c["name"] for c in ij["versions"][0]["additionalPrinterColumns"]]
    assert columns[:5] == ["Phase", "Target", "GPU", "Results", "Cost"]
    assert columns[-1] == "Age"
    assert by_kind["ComputeProvider"]["spec"]["scope"] == "Cluster"
    assert by_kind["RoutingPolicy"]["spec"]["names"]["shortNames"] == ["rp"]
    for crd in by_kind.values():
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in crdgen.KINDS:
        status = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "status"
        ]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_optional_objects_whose_absence_means_off_get_no_default() -> None:
    rp = next(k for k in crdgen.KINDS if k.kind == "RoutingPolicy")
    spec = crdgen.crd(rp)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    # The API server would otherwise turn deferral on (and an empty selector on) for everyone.
    assert "default" not in props["deferral"]
    assert "default" not in props["external"]["properties"]["providerSelector"]
    assert "providerSelector" not in props["external"]["default"]
    # Sub-objects that are always present still default to {} so their own defaults apply.
    assert props["failover"]["default"] == {
        "maxAttempts": 3,
        "backoff": "10s",
        "maxRunTimeFactor": 2.0,
    }
    assert props["deferral"]["properties"]["maxWait"]["default"] == "336h"
    assert "x-hybridgpu-absent-by-default" not in str(crdgen.crd(rp))
