"""The Helm chart rendered by the real `helm` (hack/build-helm.sh): structure and defaults.

Other test_chart_* modules use ``render`` and ``helm`` from here.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridgpu import __version__

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "hybridgpu"
NAMESPACE = "hybridgpu-system"
RELEASE = "hgpu"


@functools.cache
def helm_path() -> Path:
    """The cached helm binary; tests skip when it has not been built (`make helm`)."""
    out = subprocess.run(
        [str(REPO / "hack" / "build-helm.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; skip the test if the binary is not built yet."""
    path = helm_path()
    if not path.exists():
        pytest.skip(f"helm is not built: run `make helm` ({path})")
    result = subprocess.run([str(path), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*flags: str, show_only: str | None = None) -> list[dict[str, Any]]:
    """`helm template` of the chart with the given flags, as a list of objects."""
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, *flags]
    if show_only:
        args += ["--show-only", f"templates/{show_only}"]
    text = helm(*args).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    (main,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(main)


def test_lint_strict_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout + result.stderr


def test_defaults_render_one_recreate_deployment_of_hybridgpu_run() -> None:
    docs = render()
    (deployment,) = of_kind(docs, "Deployment")
    assert not of_kind(docs, "StatefulSet")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    main = container(docs)
    assert main["image"] == f"ghcr.io/hybridgpu/hybridgpu:{__version__}"
    assert "--liveness=http://0.0.0.0:8081/healthz" in main["args"]
    assert not any(a.startswith("--peering") for a in main["args"])
    assert "--standalone" in main["args"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["HYBRIDGPU_LOG_FORMAT"] == "json"
    assert env["HYBRIDGPU_METRICS_PORT"] == "8080"
    assert "HYBRIDGPU_NAMESPACES" not in env
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_pod_meets_the_restricted_pod_security_standard_by_default() -> None:
    docs = render()
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(docs)
    sc = main["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]


def test_operator_values_become_the_settings_the_operator_reads() -> None:
    docs = render(
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
        "--set",
        "operator.prometheusUrl=http://prom:9090",
        "--set",
        "operator.logFormat=plain",
        "--set",
        "operator.logLevel=debug",
        "--set",
        "operator.runtimeImages.llm=vllm/vllm-openai:v0.6.3",
        "--set",
        "operator.jobTolerations[0].key=gpu",
        "--set",
        "operator.jobTolerations[0].operator=Exists",
        "--set",
        "operator.gpuNodeSelector.pool=inference",
        "--set",
        "image.digest=sha256:" + "a" * 64,
    )
    main = container(docs)
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["HYBRIDGPU_NAMESPACES"] == "team-a,team-b"
    assert env["HYBRIDGPU_PROMETHEUS_URL"] == "http://prom:9090"
    assert env["HYBRIDGPU_LOG_FORMAT"] == "plain"
    assert env["HYBRIDGPU_RUNTIME_IMAGE_LLM"] == "vllm/vllm-openai:v0.6.3"
    assert yaml.safe_load(env["HYBRIDGPU_JOB_TOLERATIONS"]) == [
        {"key": "gpu", "operator": "Exists"}
    ]
    assert json.loads(env["HYBRIDGPU_GPU_NODE_SELECTOR"]) == {"pool": "inference"}
    assert "--verbose" in main["args"]
    assert main["image"] == f"ghcr.io/hybridgpu/hybridgpu:{__version__}@sha256:" + "a" * 64


def test_the_default_result_store_reaches_the_operator_with_its_keys_from_a_secret() -> None:
    main = container(render())
    assert not any(e["name"].startswith("HYBRIDGPU_RESULTS_") for e in main["env"])
    main = container(
        render(
            "--set",
            "results.bucket=team-results",
            "--set",
            "results.endpoint=http://seaweedfs-s3.storage:8333",
            "--set",
            "results.credentialsSecret=results-keys",
        )
    )
    env = {e["name"]: e for e in main["env"]}
    assert env["HYBRIDGPU_RESULTS_BUCKET"]["value"] == "team-results"
    assert env["HYBRIDGPU_RESULTS_ENDPOINT"]["value"] == "http://seaweedfs-s3.storage:8333"
    assert env["HYBRIDGPU_RESULTS_PREFIX"]["value"] == "hybridgpu"
    # The keys come from the Secret, never from values.
    assert env["HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "results-keys",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert "value" not in env["HYBRIDGPU_RESULTS_ACCESS_KEY_ID"]
    bad = helm("template", RELEASE, str(CHART), "--set", "results.bucket=Bad_Name", check=False)
    assert bad.returncode != 0 and "/results/bucket" in bad.stderr


def test_several_replicas_run_a_statefulset_peering_with_distinct_priorities() -> None:
    docs = render("--set", "replicaCount=3")
    assert not of_kind(docs, "Deployment")
    (sts,) = of_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    main = container(docs)
    assert f"--peering={RELEASE}-hybridgpu" in main["args"]
    assert "--standalone" not in main["args"]
    assert "--priority=$(HYBRIDGPU_POD_INDEX)" in main["args"]
    index = next(e for e in main["env"] if e["name"] == "HYBRIDGPU_POD_INDEX")
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert any(e["name"] == "POD_ID" for e in main["env"]), "Kopf's peer identity"
    crds = {d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    (peering,) = of_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == f"{RELEASE}-hybridgpu"


def test_namespaced_peering_uses_a_kopfpeering_per_watched_namespace() -> None:
    docs = render("--set", "replicaCount=2", "--set", "operator.watchNamespaces={a,b}")
    assert not of_kind(docs, "ClusterKopfPeering")
    assert sorted(d["metadata"]["namespace"] for d in of_kind(docs, "KopfPeering")) == ["a", "b"]


def test_crds_are_templated_with_the_keep_policy_and_can_be_left_out() -> None:
    crds = of_kind(render(), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        "inferencejobs.hybridgpu.dev",
        "routingpolicies.hybridgpu.dev",
        "computeproviders.hybridgpu.dev",
    }
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    unkept = of_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all(
        "helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in unkept
    )
    assert not of_kind(render("--set", "crds.enabled=false"), "CustomResourceDefinition")


def test_objects_of_our_own_crds_are_hooks_until_the_kinds_are_served() -> None:
    flags = (
        "--set",
        "routingPolicy.create=true",
        "--set",
        "routingPolicy.namespaces={team-a}",
        "--set",
        "computeProviders[0].name=akash",
        "--set",
        "computeProviders[0].spec.type=akash",
    )
    first = render(*flags)
    (policy,) = of_kind(first, "RoutingPolicy")
    (provider,) = of_kind(first, "ComputeProvider")
    for obj in (policy, provider):
        notes = obj["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == "post-install,post-upgrade"
        assert notes["meta.helm.sh/release-name"] == RELEASE
        assert notes["meta.helm.sh/release-namespace"] == NAMESPACE
    served = render(
        *flags,
        "--api-versions",
        "hybridgpu.dev/v1alpha1/RoutingPolicy",
        "--api-versions",
        "hybridgpu.dev/v1alpha1/ComputeProvider",
    )
    for obj in of_kind(served, "RoutingPolicy") + of_kind(served, "ComputeProvider"):
        assert "helm.sh/hook" not in (obj["metadata"].get("annotations") or {})


def test_network_policy_limits_egress_and_needs_the_api_server_cidrs() -> None:
    failed = helm(
        "template", RELEASE, str(CHART), "--set", "networkPolicy.enabled=true", check=False
    )
    assert failed.returncode != 0
    assert "networkPolicy.apiServer.cidrs is required" in failed.stderr
    docs = render(
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "--set",
        "operator.prometheusUrl=http://prometheus.monitoring:9090",
        "--set",
        "networkPolicy.networks[0].cidrs={203.0.113.0/24}",
        "--set",
        "networkPolicy.networks[0].ports={443}",
    )
    (policy,) = of_kind(docs, "NetworkPolicy")
    egress = policy["spec"]["egress"]
    assert egress[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert any(r["ports"] == [{"port": 9090, "protocol": "TCP"}] for r in egress)
    assert any(r["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}] for r in egress)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_servicemonitor_needs_the_metrics_service() -> None:
    failed = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
        check=False,
    )
    assert "needs metrics.service.enabled" in failed.stderr
    (monitor,) = of_kind(render("--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
