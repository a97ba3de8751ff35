"""Shared fixtures: the real local control plane, with the CRDs applied."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import REPO_ROOT, ensure_cluster, kubectl


@pytest.fixture(scope="session")
def cluster() -> Path:
    """The local control plane's kubeconfig, with the hybridgpu CRDs installed and served."""
    kubeconfig = ensure_cluster(REPO_ROOT)
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "load-gpu-nodes.py"), "--limit", "16"],
        check=True,
        capture_output=True,
    )
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    for crd in ("inferencejobs", "routingpolicies", "computeproviders"):
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.hybridgpu.dev")
    return kubeconfig


@pytest.fixture
def namespace(cluster: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards without waiting."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", check=False)
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
