"""The locked dependency set: uv.lock, its pip views in requirements/, and the venv built from
them; the runtime set leaves out the simulator's SciPy/Matplotlib/Rich; the Kubernetes client
floor does not log response bodies."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import urllib3
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SIMULATOR_ONLY = {"scipy", "matplotlib", "rich", "numpy"}
TOOLS = {"pytest", "hypothesis", "ruff", "mypy", "uv", "cyclonedx-bom", "setuptools"}


def pins(path: Path) -> dict[str, tuple[str, str | None, int]]:
    """name -> (version, marker, number of hashes) of an exported requirements file."""
    found: dict[str, tuple[str, str | None, int]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        (spec,) = requirement.specifier
        assert spec.operator == "==", first
        marker = str(requirement.marker) if requirement.marker else None
        found[canonicalize_name(requirement.name)] = (
            spec.version,
            marker,
            block.count("--hash=sha256:"),
        )
    return found


RUNTIME = pins(REQUIREMENTS / "runtime.txt")
DEV = pins(REQUIREMENTS / "dev.txt")


def test_the_requirement_files_are_exported_from_the_lock(tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(REPO / "hack" / "export-requirements.sh")],
        env={**os.environ, "UV": str(uv), "REQUIREMENTS_DIR": str(tmp_path)},
        check=True,
        capture_output=True,
    )
    for name in ("runtime.txt", "dev.txt"):
        fresh = (tmp_path / name).read_text()
        assert fresh == (REQUIREMENTS / name).read_text(), f"stale {name}: make lock"


def _requirement_key(text: str, extra: str | None) -> tuple[str, str, tuple[str, ...], str]:
    requirement = Requirement(text)
    marker = f"extra == '{extra}'" if extra else ""
    return (
        canonicalize_name(requirement.name),
        str(requirement.specifier),
        tuple(sorted(requirement.extras)),
        marker,
    )


def test_the_lock_resolved_what_pyproject_asks_for() -> None:
    """uv.lock records the requirements it resolved; a pyproject edit without `make lock`
    shows up here (what `uv lock --check` checks, offline)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p["name"] == "hybridgpu"]
    locked = set()
    for r in project["metadata"]["requires-dist"]:
        text = r["name"] + "".join(f"[{e}]" for e in r.get("extras", [])) + r.get("specifier", "")
        extra = re.fullmatch(r"extra == '([^']+)'", r.get("marker", ""))
        locked.add(_requirement_key(text, extra.group(1) if extra else None))
    wanted = {_requirement_key(d, None) for d in PYPROJECT["project"]["dependencies"]}
    for extra, deps in PYPROJECT["project"]["optional-dependencies"].items():
        wanted |= {_requirement_key(d, extra) for d in deps}
    assert locked == wanted
    assert set(project["metadata"]["provides-extras"]) == {"simulate", "dev"}


def test_the_runtime_set_is_the_operators_alone_and_agrees_with_dev() -> None:
    assert {"kopf", "kubernetes", "pydantic", "httpx", "aiohttp"} <= set(RUNTIME)
    assert not (SIMULATOR_ONLY | TOOLS) & set(RUNTIME)
    assert set(DEV) >= SIMULATOR_ONLY | TOOLS
    for name, (version, _, _) in RUNTIME.items():
        assert DEV[name][0] == version, name


def test_every_pin_carries_its_hashes() -> None:
    for name, (_, _, hashes) in {**RUNTIME, **DEV}.items():
        assert hashes >= 1, name


def test_the_venv_holds_exactly_the_locked_versions() -> None:
    """`make venv` installs requirements/dev.txt: each pin that applies here is installed."""
    checked = 0
    for name, (version, marker, _) in DEV.items():
        if marker and not Marker(marker).evaluate():
            continue
        assert metadata.version(name) == version, name
        checked += 1
    assert checked >= len(RUNTIME)


def test_the_images_and_the_dockerfiles_pip_install_the_runtime_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements/runtime.txt" in dockerfile
    build = (REPO / "hack" / "build-image.sh").read_text()
    assert "--require-hashes" in build and "requirements/runtime.txt" in build


def test_the_kubernetes_floor_excludes_clients_that_log_response_bodies() -> None:
    """kubernetes <= 36.0.x log every response body at debug level (rest.py, "response
    body: %s"), Secrets' data included; 37.0.0 is the first release without that line."""
    (floor,) = [
        Requirement(d)
        for d in PYPROJECT["project"]["dependencies"]
        if canonicalize_name(Requirement(d).name) == "kubernetes"
    ]
    assert not floor.specifier.contains("36.0.3")
    assert floor.specifier.contains("37.0.0")
    assert floor.specifier.contains(RUNTIME["kubernetes"][0])


class _OneResponse:
    """A urllib3 pool manager that answers every request with one JSON body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()

    def request(self, *args: Any, **kwargs: Any) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(
            body=self.body,
            status=200,
            headers={"Content-Type": "application/json"},
            preload_content=kwargs.get("preload_content", True),
        )

    def clear(self) -> None:
        pass


def test_the_locked_kubernetes_client_keeps_a_secrets_data_out_of_debug_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kubernetes import client

    secret = base64.b64encode(b"not-for-the-logs").decode()
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.debug = True
    api_client = client.ApiClient(configuration)
    api_client.rest_client.pool_manager = _OneResponse(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "key", "namespace": "ns"},
            "data": {"apiKey": secret},
        }
    )
    try:
        with caplog.at_level(logging.DEBUG):
            read = client.CoreV1Api(api_client).read_namespaced_secret("key", "ns")
    finally:
        configuration.debug = False
    assert read.data == {"apiKey": secret}, "the response went through the client"
    assert secret not in caplog.text
