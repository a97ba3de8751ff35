"""The operator *from the image* `make image` built, end to end.

hack/run-image.sh unpacks dist/'s OCI archive (umoci) and runs the bundle's process, the
image's entrypoint `hybridgpu run` as its user 65532, with bubblewrap: the image's root
filesystem read-only, a fresh /tmp, the host network. test_operator's scenarios (route,
dispatch, succeed; in the cluster and on a network) run against it with this module's
``stack``, as test_helm_rbac.py does with the chart's ServiceAccount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
# Where the image's process finds its kubeconfig (bound read-only into the sandbox).
MOUNT = "/var/run/hybridgpu"

__all__ = [
    "test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node",
    "test_overflow_goes_to_the_cheapest_feasible_network",
    "test_the_operator_answers_its_liveness_probe",
    "test_the_operator_serves_its_metrics",
]


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The image unpacked into an OCI runtime bundle (reused while the archive is the same)."""
    image = built_image()
    out = subprocess.run(
        [str(RUN_IMAGE), "--archive", str(REPO_ROOT / image["archive"]), "--unpack-only"],
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
    cluster: Path, bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    """test_operator's stack, with the operator the image's."""
    spec = json.loads((bundle / "config.json").read_text())
    uid = int(spec["process"]["user"]["uid"])
    secrets = _readable_kubeconfig(REPO_ROOT / ".local" / "image" / "secrets", uid)
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
