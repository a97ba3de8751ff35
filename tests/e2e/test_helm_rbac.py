"""The chart's RBAC is sufficient: the operator, holding only a token of the chart's
ServiceAccount (TokenRequest API), completes the operator's end-to-end scenarios.

The scenarios are the functions of test_operator.py, collected here again with this module's
``stack`` fixture. Minimality is tests/unit/test_chart_rbac.py's part; here, a few probes show
the token is refused what the chart does not grant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster import kubeconfig_path, kubectl
from tests.e2e import harness
from tests.e2e.test_helm_install import helm, install
from tests.e2e.test_operator import (
    PREFIX,
    test_deleting_a_running_job_cancels_its_remote_work,
    test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node,
    test_overflow_goes_to_the_cheapest_feasible_network,
)

pytestmark = pytest.mark.e2e
RELEASE = "hgpu-rbac"
NAMESPACE = "hybridgpu-rbac-e2e"
CREDENTIALS_NAMESPACE = "hybridgpu-e2e"  # where harness.install_providers puts the API key
SERVICE_ACCOUNT = f"{RELEASE}-hybridgpu"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"

__all__ = [
    "test_deleting_a_running_job_cancels_its_remote_work",
    "test_in_cluster_job_runs_to_succeeded_on_a_fake_gpu_node",
    "test_overflow_goes_to_the_cheapest_feasible_network",
]


def token_kubeconfig(path: Path) -> Path:
    """A kubeconfig with the admin's server and CA but the ServiceAccount's token."""
    admin = yaml.safe_load(kubeconfig_path().read_text())
    token = kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def service_account(cluster: Path) -> Iterator[None]:
    """The chart installed without CRDs (the suite's own are in place) and no replicas."""
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
    kubectl("create", "namespace", CREDENTIALS_NAMESPACE, check=False)
    install(
        RELEASE,
        NAMESPACE,
        "--set",
        "crds.enabled=false",
        "--set",
        "replicaCount=0",
        "--set",
        f"rbac.secretNamespaces={{{CREDENTIALS_NAMESPACE}}}",
        "--set",
        "rbac.allSecretsInNamespaces=true",
    )
    yield
    helm("uninstall", RELEASE, "-n", NAMESPACE, check=False)
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def stack(
    service_account: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    """test_operator's stack, with the operator logged in as the chart's ServiceAccount."""
    tmp = tmp_path_factory.mktemp("helm-rbac")
    config = harness.standin_config(tmp / "standins.yaml")
    # --standalone as the chart's one-replica Pod runs it: its RBAC grants no peering objects.
    operator = harness.operator_process(token_kubeconfig(tmp / "kubeconfig"), "--standalone")
    # A log of its own, so that only this operator's requests are judged.
    operator.log = harness.LOGS / "e2e-helm-rbac-operator.log"
    operator.log.write_text("")
    with harness.running_stack(config, PREFIX, operator) as running:
        yield running


def _can(verb: str, resource: str, namespace: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={USER}"]
    args += ["-n", namespace] if namespace else []
    return kubectl(*args, check=False).stdout.strip() == "yes"


def test_the_token_has_no_more_than_the_chart_grants(service_account: None) -> None:
    assert _can("get", "secrets", CREDENTIALS_NAMESPACE)
    assert not _can("get", "secrets", "default")
    assert not _can("list", "secrets", CREDENTIALS_NAMESPACE)
    assert not _can("delete", "pods", "default")
    assert not _can("update", "inferencejobs.hybridgpu.dev", "default")
    assert not _can("delete", "computeproviders.hybridgpu.dev")
    assert not _can("create", "deployments.apps", "default")
    assert not _can("*", "*")
    assert _can("create", "jobs.batch", "default")
    assert _can("patch", "inferencejobs.hybridgpu.dev/status", "default")


def test_the_operator_was_refused_nothing_but_other_namespaces_secrets(
    stack: harness.Process,
) -> None:
    """Every 403 the operator met must be a Secret outside rbac.secretNamespaces.

    Such refusals are the chart working: ComputeProviders left in the cluster by other runs
    (e.g. the demo's, with credentials in hybridgpu-system) must not be readable.
    """
    log = stack.log.read_text(errors="replace")
    assert "Activity 'login' succeeded" in log
    assert "Not enough permissions" not in log
    # A namespace being deleted also answers 403 to new objects (Kopf's Events); that is no
    # RBAC refusal.
    forbidden = [
        line
        for line in log.splitlines()
        if "APIForbiddenError" in line and "because it is being terminated" not in line
    ]
    assert not forbidden, forbidden[:3]
    refusals = re.findall(r'"message":"([^"\\]*(?:\\.[^"\\]*)*)","reason":"Forbidden"', log)
    assert log.count("Reason: Forbidden") == len(refusals)
    secret_elsewhere = re.compile(
        r'cannot get resource \\"secrets\\" in API group \\"\\" in the namespace \\"([a-z0-9-]+)'
    )
    for message in refusals:
        found = secret_elsewhere.search(message)
        assert found and found.group(1) != CREDENTIALS_NAMESPACE, message
