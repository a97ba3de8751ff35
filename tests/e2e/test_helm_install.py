"""The chart with the real `helm` against the real local control plane.

Lint and template clean, every rendered manifest accepted by the API server (server-side dry
run), install and upgrade succeed and reach the CRDs, uninstall keeps the CRDs and the users'
InferenceJobs. test_helm_rbac.py imports ``helm`` and ``install`` from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import REPO_ROOT, kubeconfig_path, kubectl
from tests.image import IMAGE_JSON, built_image

pytestmark = pytest.mark.e2e
CHART = REPO_ROOT / "charts" / "hybridgpu"
CRDS = ("inferencejobs", "routingpolicies", "computeproviders")
KOPF_CRDS = ("clusterkopfpeerings", "kopfpeerings")


def helm_binary() -> Path:
    """Build (or reuse) helm from the pinned Go module, as `make helm` does."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run helm against the local cluster."""
    cmd = [str(helm_binary()), "--kubeconfig", str(kubeconfig_path()), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}\n{result.stdout}")
    return result


def adopt_crds(release: str, namespace: str) -> None:
    """Let a release take over CRDs applied earlier with kubectl, or kept by an earlier release
    (the chart README's recipe)."""
    names = [f"crd/{crd}.hybridgpu.dev" for crd in CRDS]
    names += [
        f"crd/{crd}.kopf.dev"
        for crd in KOPF_CRDS
        if kubectl("get", f"crd/{crd}.kopf.dev", check=False).returncode == 0
    ]
    for name in names:
        kubectl("label", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            "annotate",
            name,
            "--overwrite",
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )


def image_flags() -> list[str]:
    """The image `make image` built (dist/image.json), by tag and digest; without one (outside
    CI, see tests/image.py), the chart's default."""
    if not IMAGE_JSON.exists() and not os.environ.get("CI"):
        return []
    image = built_image()
    return [
        "--set",
        f"image.repository={image['name']}",
        "--set",
        f"image.tag={image['tag']}",
        "--set",
        f"image.digest={image['digest']}",
    ]


def install(release: str, namespace: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`helm install` into a fresh namespace (the CRDs adopted when the chart manages them),
    with the image this checkout built."""
    if "crds.enabled=false" not in flags:
        adopt_crds(release, namespace)
    where = ["-n", namespace, "--create-namespace"]
    return helm("install", release, str(CHART), *where, *image_flags(), *flags)


def _crd(name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", f"crd/{name}.hybridgpu.dev", "-o", "json").stdout))


@pytest.fixture
def release(cluster: Path) -> Iterator[tuple[str, str]]:
    name, namespace = "hgpu-e2e", "hybridgpu-helm-e2e"
    helm("uninstall", name, "-n", namespace, "--wait", check=False)
    yield name, namespace
    helm("uninstall", name, "-n", namespace, check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_lint_strict_and_template_are_clean(cluster: Path) -> None:
    lint = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in lint.stdout
    assert "[ERROR]" not in lint.stdout and "[WARNING]" not in lint.stdout


def test_every_rendered_manifest_passes_the_api_servers_dry_run(
    cluster: Path, namespace: str
) -> None:
    # Everything but the prometheus-operator kinds, whose CRDs this cluster does not have.
    flags = [
        "--set",
        "replicaCount=2",
        "--set",
        "metrics.dashboard.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServer.cidrs={127.0.0.1/32}",
        "--set",
        f"rbac.secretNamespaces={{{namespace}}}",
        "--set",
        "rbac.allSecretsInNamespaces=true",
        "--set",
        "routingPolicy.create=true",
        "--set",
        f"routingPolicy.namespaces={{{namespace}}}",
        "--set",
        "routingPolicy.spec.budget.limit=100.00",
        "--set",
        "computeProviders[0].name=helm-dry-run-akash",
        "--set",
        "computeProviders[0].spec.type=akash",
        "--set",
        "computeProviders[0].spec.endpoint=https://console-api.akash.network",
        "--api-versions",
        "hybridgpu.dev/v1alpha1/RoutingPolicy",
        "--api-versions",
        "hybridgpu.dev/v1alpha1/ComputeProvider",
    ]
    text = helm("template", "dry", str(CHART), "-n", namespace, *flags).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    # Kopf's peering CRDs are new to the cluster, so objects of them cannot be dry-run with them.
    first = [d for d in docs if d["kind"] not in ("ClusterKopfPeering", "KopfPeering")]
    kinds = {d["kind"] for d in first}
    assert {"Deployment", "StatefulSet"} & kinds and "NetworkPolicy" in kinds
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", input="\n---\n".join(json.dumps(d) for d in first)
    )
    assert result.stdout.count("(server dry run)") == len(first), result.stdout
    # A wrong spec in values is caught by the same CRD schema.
    bad = [d for d in first if d["kind"] == "RoutingPolicy"]
    bad[0]["spec"]["budget"]["limit"] = "lots"
    refused = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad[0]), check=False)
    assert refused.returncode != 0 and "spec.budget.limit" in refused.stderr


def test_install_upgrade_and_uninstall_keep_crds_and_jobs(
    release: tuple[str, str], namespace: str, tmp_path: Path
) -> None:
    name, ns = release
    installed = install(
        name,
        ns,
        "--set",
        "replicaCount=0",
        "--set",
        "rbac.secretNamespaces={" + ns + "}",
        "--set",
        "rbac.allSecretsInNamespaces=true",
        # Objects of CRDs the release installs itself: hooks on install, adopted on upgrade.
        "--set",
        "peering.enabled=true",
        "--set",
        "routingPolicy.create=true",
        "--set",
        "routingPolicy.namespaces={" + namespace + "}",
    )
    assert "kubectl apply -f examples/10-computeproviders.yaml" in installed.stdout, "NOTES"
    assert 'RoutingPolicy "default" is in: ' + namespace in installed.stdout, "NOTES"
    kubectl("get", "clusterkopfpeering", f"{name}-hybridgpu")
    kubectl("get", "routingpolicy", "default", "-n", namespace)
    for crd in CRDS:
        meta = _crd(crd)["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == name
    served = json.loads(kubectl("get", "--raw", "/apis/hybridgpu.dev/v1alpha1").stdout)
    assert {r["name"] for r in served["resources"]} >= set(CRDS)
    kubectl("get", "clusterrole", f"{name}-hybridgpu")

    job = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": "survives-uninstall", "namespace": namespace},
        "spec": {
            "task": "container",
            "image": "ghcr.io/example/batch:1",
            "input": {"requests": 1},
            "gpu": {"count": 1},
            "estimatedDuration": "1m",
            "suspend": True,
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(job))

    # An upgrade reaches the CRDs: a chart whose CRD gained a category updates the live CRD.
    changed = tmp_path / "hybridgpu"
    shutil.copytree(CHART, changed)
    crd_file = changed / "files" / "crds" / "hybridgpu.dev_inferencejobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["names"]["categories"].append("helm-upgrade-probe")
    crd_file.write_text(yaml.safe_dump(crd))
    helm(
        "upgrade",
        name,
        str(changed),
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "operator.logFormat=plain",
    )
    assert "helm-upgrade-probe" in _crd("inferencejobs")["spec"]["names"]["categories"]
    deployment = json.loads(
        kubectl("get", "deployment", f"{name}-hybridgpu", "-n", ns, "-o", "json").stdout
    )
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["HYBRIDGPU_LOG_FORMAT"] == "plain"
    # --reuse-values keeps the image make image built, pulled by its digest.
    if image_flags():
        image = built_image()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image["reference"]
        assert container["image"].endswith("@" + image["digest"])
    helm("upgrade", name, str(CHART), "-n", ns, "--reuse-values")
    assert "helm-upgrade-probe" not in _crd("inferencejobs")["spec"]["names"]["categories"]
    manifest = helm("get", "manifest", name, "-n", ns).stdout
    assert "kind: RoutingPolicy" in manifest and "kind: ClusterKopfPeering" in manifest
    history = json.loads(helm("history", name, "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history][-1] == "deployed" and len(history) == 3

    uninstalled = helm("uninstall", name, "-n", ns, "--wait")
    assert "kept due to the resource policy" in uninstalled.stdout + uninstalled.stderr
    for crd_name in CRDS:
        _crd(crd_name)
    kept = json.loads(
        kubectl("get", "ij", "survives-uninstall", "-n", namespace, "-o", "json").stdout
    )
    assert kept["spec"]["suspend"] is True
    for kind, obj_name, *where in (
        ("clusterrole", f"{name}-hybridgpu"),
        ("clusterkopfpeering", f"{name}-hybridgpu"),
        ("routingpolicy", "default", "-n", namespace),
    ):
        gone = kubectl("get", kind, obj_name, *where, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, gone.stdout)
    for crd_name in KOPF_CRDS:
        kubectl("get", f"crd/{crd_name}.kopf.dev")


def test_a_typo_in_values_fails_install_with_the_field_named(cluster: Path) -> None:
    result = helm(
        "install",
        "typo",
        str(CHART),
        "-n",
        "default",
        "--set",
        "replicas=2",
        "--dry-run=server",
        check=False,
    )
    assert result.returncode != 0
    assert "additional properties 'replicas' not allowed" in result.stderr
