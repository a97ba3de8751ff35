"""values.schema.json: every value described and closed, defaults valid, docs generated from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit import test_chart_render as chart

SCHEMA = json.loads((chart.CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((chart.CHART / "values.yaml").read_text())
FREE_FORM = {
    # Kubernetes objects passed through verbatim; the API server validates them.
    "global",
    "resources",
    "affinity",
    "podSecurityContext",
    "securityContext",
    "operator.jobTolerations[]",
    "operator.extraEnv[]",
    "tolerations[]",
    "networkPolicy.prometheus.namespaceSelector",
    "networkPolicy.prometheus.podSelector",
    "routingPolicy.spec",
    "computeProviders[].spec",
}


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    return found


def test_every_value_has_a_description() -> None:
    missing = [p for p, n in _walk(SCHEMA)[1:] if not p.endswith("[]") and not n.get("description")]
    assert missing == []


def test_every_object_is_closed_or_a_declared_map() -> None:
    open_objects = [
        path
        for path, node in _walk(SCHEMA)
        if node.get("type") == "object"
        and node.get("additionalProperties") is not False
        and not isinstance(node.get("additionalProperties"), dict)
        and path not in FREE_FORM
    ]
    assert open_objects == []


def test_defaults_satisfy_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("operator.logformat=json", "additional properties 'logformat' not allowed"),
        ("operator.logFormat=xml", "operator/logFormat"),
        ("rbac.secretNamespaces={Bad_NS}", "rbac/secretNamespaces/0"),
    ],
)
def test_a_typo_fails_helm_with_the_field_named(flag: str, message: str) -> None:
    result = chart.helm("template", "t", str(chart.CHART), "--set", flag, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_decimal_strings_must_be_strings() -> None:
    result = chart.helm(
        "template",
        "t",
        str(chart.CHART),
        "--set",
        "metrics.prometheusRule.dailyBudget=100",
        check=False,
    )
    assert "prometheusRule/dailyBudget" in result.stderr
    assert "want string" in result.stderr


def test_readme_lists_every_value_from_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, str(chart.REPO / "hack" / "chart-docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    readme = (chart.CHART / "README.md").read_text()
    leaves = [p for p, n in _walk(SCHEMA)[1:] if "properties" not in n and "[]" not in p]
    assert leaves, "schema walk found nothing"
    for path in leaves:
        assert f"| `{path}` |" in readme, path


def test_chart_docs_refuses_a_value_without_description(tmp_path: Path) -> None:
    broken = json.loads(json.dumps(SCHEMA))
    del broken["properties"]["replicaCount"]["description"]
    for name in ("values.yaml", "README.md"):
        (tmp_path / name).write_text((chart.CHART / name).read_text())
    (tmp_path / "values.schema.json").write_text(json.dumps(broken))
    result = subprocess.run(
        [sys.executable, str(chart.REPO / "hack" / "chart-docs.py"), "--chart", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "replicaCount has no description" in result.stderr
