"""The routing core and the simulator stay free of cluster and network clients."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import hybridgpu

PACKAGE = Path(hybridgpu.__file__).parent
FORBIDDEN = {"kopf", "kubernetes", "httpx"}
ROUTING_ALLOWED = {"hybridgpu.api", "hybridgpu.units", "hybridgpu.routing"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("sub", ["routing", "simulate"])
def test_no_cluster_or_network_clients(sub: str) -> None:
    files = _modules(sub)
    assert files, f"no modules found under {sub}"
    for path in files:
        bad = [n for n in _imports(path) if n.split(".")[0] in FORBIDDEN]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_routing_imports_only_stdlib_api_units_and_itself() -> None:
    for path in _modules("routing"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            assert any(name == a or name.startswith(a + ".") for a in ROUTING_ALLOWED), (
                f"{path.relative_to(PACKAGE)} imports {name}"
            )


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import httpx\nfrom kopf import on\n")
    assert [n for n in _imports(bad) if n.split(".")[0] in FORBIDDEN] == ["httpx", "kopf"]
