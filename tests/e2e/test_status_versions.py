"""Version-checked status writes against the real API server (no operator runs here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hybridgpu.kube import Conflict, Kube, load_client_config
from tests.cluster import kubectl
from tests.e2e.harness import get

pytestmark = pytest.mark.e2e


def test_a_status_write_from_a_stale_read_is_refused_by_the_api_server(
    cluster: Path, namespace: str
) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": "versioned", "namespace": namespace},
        "spec": {
            "task": "container",
            "image": "busybox",
            "input": {"requests": 1},
            "estimatedDuration": "10m",
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    kube = Kube(load_client_config(str(cluster)))

    async def race() -> None:
        read = await kube.get_job(namespace, "versioned")
        assert read is not None
        version = read["metadata"]["resourceVersion"]
        written = await kube.patch_job_status(
            namespace, "versioned", {"phase": "Pending"}, resource_version=version
        )
        assert written["metadata"]["resourceVersion"] != version
        # A second writer that read the same version must not overwrite the first.
        with pytest.raises(Conflict):
            await kube.patch_job_status(
                namespace, "versioned", {"phase": "Routed"}, resource_version=version
            )

    asyncio.run(race())
    assert get("ij", "versioned", namespace)["status"]["phase"] == "Pending"
