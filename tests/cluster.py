"""Stdlib-only helpers to use the local control plane (hack/cluster-up.sh) from tests.

    from tests.cluster import ensure_cluster, kubectl
    kubeconfig = ensure_cluster()          # starts it (and builds it) if it is not healthy
    kubectl("get", "nodes", "-o", "json").stdout

``ensure_cluster`` is cheap when the cluster is already up (hack/cluster-up.sh returns at once).
Use it from a session-scoped pytest fixture; the cluster is left running afterwards (stop it with
``make cluster-down`` / hack/cluster-down.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# Cold builds take a while; an already built cluster starts in seconds.
CLUSTER_UP_TIMEOUT_S = float(os.environ.get("HYBRIDGPU_CLUSTER_UP_TIMEOUT", "3600"))


def _local_dir(repo_root: Path) -> Path:
    env = os.environ.get("HYBRIDGPU_LOCAL_DIR")
    return Path(env) if env else repo_root / ".local"


def kubeconfig_path(repo_root: Path = REPO_ROOT) -> Path:
    return _local_dir(repo_root) / "kubeconfig"


@cache
def bin_dir(repo_root: Path = REPO_ROOT) -> Path:
    """Directory of our pinned binaries (kubectl, kube-apiserver, ..., kwok)."""
    out = subprocess.run(
        [str(repo_root / "hack" / "build-controlplane.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def kubectl_path(repo_root: Path = REPO_ROOT) -> Path:
    return bin_dir(repo_root) / "kubectl"


def is_healthy(repo_root: Path = REPO_ROOT) -> bool:
    kc = kubeconfig_path(repo_root)
    kbin = kubectl_path(repo_root)
    if not (kc.exists() and kbin.exists()):
        return False
    r = subprocess.run(
        [str(kbin), "--kubeconfig", str(kc), "--request-timeout=5s", "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        check=False,
    )
    return r.returncode == 0


def ensure_cluster(repo_root: Path = REPO_ROOT) -> Path:
    """Make sure the local control plane is up; return the kubeconfig path.

    Runs hack/cluster-up.sh (which builds missing binaries first) unless the API server already
    answers /readyz. cluster-up.sh itself also verifies every component process is alive.
    """
    repo_root = Path(repo_root).resolve()
    if not is_healthy(repo_root):
        subprocess.run(
            [str(repo_root / "hack" / "cluster-up.sh")],
            check=True,
            timeout=CLUSTER_UP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    return kubeconfig_path(repo_root)


class KubectlError(subprocess.CalledProcessError):
    """CalledProcessError whose message shows kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


def kubectl(
    *args: str,
    input: str | None = None,  # mirrors subprocess.run
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run our built kubectl against .local/kubeconfig; text output captured.

    With ``check=True`` (default) a non-zero exit raises KubectlError (a CalledProcessError
    whose message includes stderr).
    """
    cmd = [str(kubectl_path()), "--kubeconfig", str(kubeconfig_path()), *args]
    r = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode != 0:
        raise KubectlError(r.returncode, cmd, output=r.stdout, stderr=r.stderr)
    return r


def kubectl_json(*args: str) -> Any:
    """``kubectl <args> -o json`` parsed."""
    return json.loads(kubectl(*args, "-o", "json").stdout)
