"""`hybridgpu run` needs nothing outside the runtime set (requirements/runtime.txt), which is
all the operator image carries.

Two views: every import statement reachable from the `run` command through hybridgpu's own
modules, function-level ones included, names the standard library, hybridgpu, or a module of a
runtime distribution; and a fresh interpreter, where everything outside the runtime set
refuses to import, loads the operator's modules as `hybridgpu run` does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.unit.test_dependencies import DEV, RUNTIME

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "hybridgpu"
# What `hybridgpu run` loads: the CLI, the command, and (inside run()) the Kopf handlers.
RUN_ROOTS = ("hybridgpu.cli", "hybridgpu.commands.run", "hybridgpu.handlers")


def _module_file(name: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module an import statement in ``path`` may load."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for child in node.body
        for n in ast.walk(child)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def reachable_imports(roots: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(hybridgpu modules reached, top-level names of everything else imported)."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for imported in _imports(name, path):
            if imported.split(".")[0] == "hybridgpu":
                todo.append(imported)
            elif imported:
                external.add(imported.split(".")[0])
    return seen, external


@cache
def _providers() -> dict[str, set[str]]:
    """Top-level module name -> the installed distributions that provide it."""
    return {
        top: {canonicalize_name(d) for d in dists}
        for top, dists in metadata.packages_distributions().items()
    }


def _distributions_of(top_level: str) -> set[str]:
    return _providers().get(top_level, set())


def outside_runtime(top_levels: set[str]) -> dict[str, set[str]]:
    """The third-party names no runtime distribution provides, with their providers."""
    runtime = set(RUNTIME)
    bad = {}
    for name in sorted(top_levels - set(sys.stdlib_module_names)):
        providers = _distributions_of(name)
        if not providers & runtime:
            bad[name] = providers
    return bad


def test_everything_the_run_path_imports_is_in_the_runtime_set() -> None:
    modules, external = reachable_imports(RUN_ROOTS)
    assert {"hybridgpu.handlers.startup", "hybridgpu.kube"} <= modules
    assert {"kopf", "kubernetes", "pydantic"} <= external
    assert outside_runtime(external) == {}


def test_the_check_sees_the_simulators_imports() -> None:
    """The same walk from `hybridgpu simulate` finds SciPy and Rich, outside the runtime set:
    the check above can fail."""
    _, external = reachable_imports(("hybridgpu.commands.simulate",))
    assert {"scipy", "rich"} <= set(outside_runtime(external))


BLOCKER = """
import importlib.abc, json, sys
at_startup = set(sys.modules)  # the interpreter's and site's (.pth files), not the operator's
blocked = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is outside the runtime set")
sys.meta_path.insert(0, Block())
from hybridgpu.cli import build_parser
build_parser("run")
import kopf, hybridgpu.commands.run, hybridgpu.handlers
print(json.dumps(sorted({m.split(".")[0] for m in set(sys.modules) - at_startup})))
"""


def test_the_run_path_imports_with_everything_else_refused() -> None:
    outside = {name for name in DEV if name not in RUNTIME}
    blocked = sorted(top for top, dists in _providers().items() if dists <= outside)
    assert {"scipy", "matplotlib", "rich", "pytest"} <= set(blocked)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps(blocked)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"kopf", "hybridgpu", "pydantic"} <= loaded
    # Of what was loaded, what some installed distribution provides (not the interpreter's).
    installed = {m for m in loaded if _providers().get(m)} - {"hybridgpu"}
    assert {"kopf", "kubernetes", "aiohttp"} <= installed
    assert outside_runtime(installed) == {}
