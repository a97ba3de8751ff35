"""The operator *from the image* `make image` built, end to end.

hack/run-image.sh unpacks dist/'s OCI archive (umoci) and runs the bundle's process, the
image's entrypoint `hybridgpu run` as its user 65532, with bubblewrap: the image's root
filesystem read-only, a fresh /tmp, the host network. test_operator's scenarios (route,
dispatch, succeed; in the cluster and on a network) run against it with this module's
``stack``, as test_helm_rbac.py does with the chart's ServiceAccount.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import REPO_ROOT, kubeconfig_path
from tests.e2e import harness
from tests.e2e.test_operator import (
    PREFIX,
    test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node,
    test_overflow_goes_to_the_cheapest_feasible_network,
    test_the_operator_answers_its_liveness_probe,
    test_the_operator_serves_its_metrics,
)
from tests.image import built_image

pytestmark = pytest.mark.e2e
RUN_IMAGE = REPO_ROOT / "hack" / "run-image.sh"
# Where the image's process finds its kubeconfig, bound read-only into the sandbox: under the
# fresh /tmp, as bwrap can create mount points only there on the read-only root.
MOUNT = "/tmp/secrets"

__all__ = [
    "test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node",
    "test_overflow_goes_to_the_cheapest_feasible_network",
    "test_the_operator_answers_its_liveness_probe",
    "test_the_operator_serves_its_metrics",
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Path]:
    """A folder the image's user can reach (the checkout's may sit under a private one)."""
    path = Path(tempfile.mkdtemp(prefix="hybridgpu-image-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(sandbox: Path) -> Path:
    """The image unpacked into an OCI runtime bundle."""
    image = built_image()
    out = subprocess.run(
        [
            str(RUN_IMAGE),
            "--archive",
            str(REPO_ROOT / image["archive"]),
            "--bundle",
            str(sandbox / "bundle"),
            "--unpack-only",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _readable_kubeconfig(directory: Path, uid: int) -> Path:
    """The admin kubeconfig, readable by the image's user only, in a folder it can reach."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    target = directory / "kubeconfig"
    shutil.copyfile(kubeconfig_path(), target)
    target.chmod(0o400)
    if os.geteuid() == 0:
        os.chown(target, uid, uid)
        os.chown(directory, uid, uid)
    directory.chmod(0o500)
    return target


@pytest.fixture(scope="module")
def stack(
    cluster: Path, bundle: Path, sandbox: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    """test_operator's stack, with the operator the image's."""
    spec = json.loads((bundle / "config.json").read_text())
    uid = int(spec["process"]["user"]["uid"])
    secrets = _readable_kubeconfig(sandbox / "secrets", uid)
    config = harness.standin_config(tmp_path_factory.mktemp("image") / "standins.yaml")
    operator = harness.Process(
        "e2e-image-operator",
        [
            str(RUN_IMAGE),
            "--bundle",
            str(bundle),
            "--ro-bind",
            str(secrets.parent),
            MOUNT,
            "--",
            "--kubeconfig",
            f"{MOUNT}/kubeconfig",
            "--metrics-port",
            str(harness.METRICS_PORT),
            "--liveness",
            f"http://127.0.0.1:{harness.LIVENESS_PORT}/healthz",
            "--log-format",
            "plain",
        ],
    )
    operator.log.write_text("")
    with harness.running_stack(config, PREFIX, operator) as running:
        yield running


def _image_process(stack: harness.Process) -> int:
    """The pid of the image's Python: the descendant of bwrap whose root is the bundle's."""
    assert stack.proc is not None and stack.alive(), stack.log.read_text()[-2000:]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"/usr/bin/python3", b"/usr/local/bin/hybridgpu"]:
            return int(entry.name)
    raise AssertionError("no process runs the image's /usr/local/bin/hybridgpu")


def test_the_images_operator_runs_as_65532_on_a_read_only_root(
    stack: harness.Process, bundle: Path
) -> None:
    pid = _image_process(stack)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"65532"}, status
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    root = next(m.split() for m in mounts if m.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    # The process's files are the bundle's: its Python is the image's, not this machine's.
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe == "/usr/bin/python3.11", exe
    image_python = (bundle / "rootfs" / "usr" / "bin" / "python3.11").read_bytes()
    assert Path(f"/proc/{pid}/root/usr/bin/python3.11").read_bytes() == image_python
    assert "Traceback" not in stack.log.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_skopeo_pushes_the_archive_to_a_registry_under_the_same_digest(tmp_path: Path) -> None:
    """README's `skopeo copy oci-archive:… docker://…`, to Debian's registry (distribution)
    on loopback: the registry serves the manifest under the digest dist/image.json records,
    which is the one the chart's image.digest takes."""
    image = built_image()
    registry_bin = shutil.which("docker-registry")
    if registry_bin is None or shutil.which("skopeo") is None:
        message = "no docker-registry or skopeo (make image-tools)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                "log": {"level": "warn"},
            }
        )
    )
    registry = harness.Process("e2e-image-registry", [registry_bin, "serve", str(config)])
    registry.start()
    try:
        harness.wait_for(
            "the registry", lambda: _answers(f"http://127.0.0.1:{port}/v2/"), timeout=30
        )
        target = f"docker://127.0.0.1:{port}/hybridgpu:{image['tag']}"
        digest_file = tmp_path / "pushed.digest"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--dest-tls-verify=false",
                "--digestfile",
                str(digest_file),
                f"oci-archive:{REPO_ROOT / image['archive']}:{image['tag']}",
                target,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        assert digest_file.read_text().strip() == image["digest"]
        raw = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--raw",
                f"docker://127.0.0.1:{port}/hybridgpu@{image['digest']}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["digest"]
    finally:
        registry.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False
