"""The image `make image` wrote to dist/: an OCI archive that skopeo reads, whose config runs
`hybridgpu run` as 65532, whose one layer holds exactly the runtime lock, and whose second
build is the same image (tests/e2e/test_image.py runs it)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

import hybridgpu
from tests.image import built_image
from tests.unit.test_dependencies import RUNTIME

REPO = Path(__file__).resolve().parents[2]
SITE = "usr/local/lib/python3.11/dist-packages/"


@cache
def _image() -> dict[str, Any]:
    return built_image()


@cache
def _blobs() -> dict[str, bytes]:
    """The archive's OCI layout: path -> bytes (the layer stays compressed)."""
    with tarfile.open(REPO / _image()["archive"]) as archive:
        return {
            member.name.removeprefix("./"): archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def _blob(digest: str) -> bytes:
    data = _blobs()[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
    return data


def _manifest() -> dict[str, Any]:
    index = json.loads(_blobs()["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == _image()["tag"]
    assert entry["digest"] == _image()["digest"]
    return dict(json.loads(_blob(entry["digest"])))


def _config() -> dict[str, Any]:
    return dict(json.loads(_blob(_manifest()["config"]["digest"])))


WANTED_FILES = {"etc/passwd", "usr/share/doc/hybridgpu/sbom.cdx.json", "usr/local/bin/hybridgpu"}


@cache
def _layer_contents() -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    """The one layer's entries, and the bytes of the few files the tests read."""
    (layer,) = _manifest()["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = gzip.decompress(_blob(layer["digest"]))
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == _config()["rootfs"]["diff_ids"][0]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        files = {
            m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in members
            if m.isfile()
            and (m.name.removeprefix("./") in WANTED_FILES or m.name.endswith(".dist-info/RECORD"))
        }
    return members, files


def _layer() -> list[tarfile.TarInfo]:
    return _layer_contents()[0]


def _file(name: str) -> bytes:
    return _layer_contents()[1][name]


def _names() -> Iterator[str]:
    return (m.name.removeprefix("./") for m in _layer())


def test_skopeo_reads_the_archive_with_the_recorded_digest() -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("no skopeo (make image-tools)")
    archive = REPO / _image()["archive"]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{archive}:{_image()['tag']}"],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == _image()["digest"]
    assert _image()["reference"] == f"{_image()['name']}:{_image()['tag']}@{_image()['digest']}"


def test_the_config_runs_hybridgpu_run_as_65532_with_the_oci_labels() -> None:
    config = _config()
    process = config["config"]
    assert process["User"] == "65532:65532"
    assert process["Entrypoint"] == ["/usr/local/bin/hybridgpu", "run"]
    assert not process.get("Cmd")
    labels = process["Labels"]
    assert labels["org.opencontainers.image.version"] == hybridgpu.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.revision"] == _image()["revision"]
    assert _manifest()["annotations"] == labels
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert {h["created"] for h in config["history"]} == {config["created"]}
    assert _image()["tag"] == hybridgpu.__version__


def test_the_layer_has_fixed_times_owners_and_no_devices() -> None:
    created = _config()["created"]
    epoch = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    members = _layer()
    assert len(members) > 1000
    assert {m.mtime for m in members} == {epoch}
    owners = {(m.uid, m.gid) for m in members}
    assert owners == {(0, 0), (65532, 65532)}
    assert [m.name.removeprefix("./") for m in members if m.uid == 65532] == ["home/nonroot"]
    assert not [m.name for m in members if m.ischr() or m.isblk() or m.isfifo()]
    assert not [m.name for m in members if m.mode & 0o6000], "no setuid/setgid files"
    passwd = _file("etc/passwd").decode()
    assert "nonroot:x:65532:65532:" in passwd
    launcher = next(m for m in members if m.name.removeprefix("./") == "usr/local/bin/hybridgpu")
    assert launcher.mode & 0o111
    assert _file("usr/local/bin/hybridgpu").startswith(b"#!/usr/bin/python3\n")


def test_the_layer_holds_exactly_the_runtime_lock_compiled() -> None:
    names = set(_names())
    installed = {}
    for name in names:
        if name.startswith(SITE) and name.endswith(".dist-info/METADATA"):
            dist = name.removeprefix(SITE).split("/")[0].removesuffix(".dist-info")
            project, _, version = dist.rpartition("-")
            installed[canonicalize_name(project)] = version
    locked = {name: version for name, (version, _, _) in RUNTIME.items()}
    assert installed == {**locked, "hybridgpu": hybridgpu.__version__}
    for absent in ("scipy", "matplotlib", "rich", "numpy", "pytest"):
        assert not [n for n in names if n.startswith(f"{SITE}{absent}/")], absent
    assert f"{SITE}hybridgpu/__pycache__/cli.cpython-311.pyc" in names
    assert "usr/lib/python3.11/__pycache__/ssl.cpython-311.pyc" in names
    assert "etc/ssl/certs/ca-certificates.crt" in names


def test_every_record_names_only_files_the_image_has() -> None:
    """No leftovers of the install here (console scripts naming this checkout's venv,
    direct_url.json): their RECORD lines would make the image depend on where it was built."""
    names = set(_names())
    records = [n for n in names if n.startswith(SITE) and n.endswith(".dist-info/RECORD")]
    assert len(records) == len(RUNTIME) + 1
    for record in records:
        for line in _file(record).decode().splitlines():
            path = os.path.normpath(SITE + line.rsplit(",", 2)[0])
            assert path in names, (record, line)


def test_the_sbom_lists_the_runtime_lock_and_the_debian_packages() -> None:
    sbom = json.loads((REPO / _image()["sbom"]).read_text())
    assert _file("usr/share/doc/hybridgpu/sbom.cdx.json") == (REPO / _image()["sbom"]).read_bytes()
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    assert sbom["metadata"]["component"]["name"] == "hybridgpu"
    tools = json.dumps(sbom["metadata"]["tools"])
    assert "cyclonedx-py" in tools
    python = {
        canonicalize_name(c["name"]): c["version"]
        for c in sbom["components"]
        if c["purl"].startswith("pkg:pypi/")
    }
    assert python == {name: version for name, (version, _, _) in RUNTIME.items()}
    debian = {c["name"] for c in sbom["components"] if c["purl"].startswith("pkg:deb/debian/")}
    assert {"python3.11", "ca-certificates", "libc6", "libssl3"} <= debian
    status_d = {n.rpartition("/")[2] for n in _names() if n.startswith("var/lib/dpkg/status.d/")}
    assert debian == status_d - {""}


def _inputs_committed() -> bool:
    inputs = (REPO / "hack" / "build-image.sh").read_text()
    paths = inputs.split("INPUTS=(", 1)[1].split(")", 1)[0].split()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=REPO)
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", *paths)
    last = git("log", "-1", "--format=%H", "--", *paths)
    return not status and last == _image()["revision"]


def test_a_second_build_is_the_same_image(tmp_path: Path) -> None:
    """Reproducible: the same inputs (committed) and Debian packages, the same digest."""
    image = _image()
    if not _inputs_committed():
        message = "dist/ was not built from the committed inputs (make image after commit)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(
        [str(REPO / "hack" / "build-image.sh")],
        env={**os.environ, "HYBRIDGPU_IMAGE_WORK": str(tmp_path / "work"), "DIST": str(tmp_path)},
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=900,
    )
    again = json.loads((tmp_path / "image.json").read_text())
    assert again["digest"] == image["digest"]
    archive = Path(image["archive"]).name
    assert (tmp_path / archive).read_bytes() == (REPO / image["archive"]).read_bytes()
