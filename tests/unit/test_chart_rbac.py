"""RBAC of the chart: exactly the permissions the operator's code uses, each for a reason.

Every rendered rule must appear in NEEDED with the code that needs it; the evidence string must
still be in that file (remove the code path and the test asks to remove the permission), and a
permission no row explains fails the test. The e2e test tests/e2e/test_helm_rbac.py shows the
rules are sufficient by running the operator with the ServiceAccount's token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf

from tests.unit import test_chart_render as chart

OPERATOR = chart.REPO / "operator" / "hybridgpu"
KOPF = Path(str(kopf.__file__)).parent

Rule = tuple[str, str, str]
"""(apiGroup, resource, verb)"""

NEEDED: dict[Rule, tuple[Path, str]] = {
    ("hybridgpu.dev", "computeproviders", "list"): (
        OPERATOR / "handlers/providers.py",
        '@kopf.daemon(GROUP, VERSION, "computeproviders"',
    ),
    ("hybridgpu.dev", "computeproviders", "watch"): (
        OPERATOR / "handlers/indexes.py",
        '@kopf.index(GROUP, VERSION, "computeproviders")',
    ),
    ("hybridgpu.dev", "computeproviders", "patch"): (
        OPERATOR / "handlers/startup.py",
        "settings.persistence.progress_storage",
    ),
    ("hybridgpu.dev", "computeproviders/status", "patch"): (
        OPERATOR / "kube.py",
        "patch_cluster_custom_object_status",
    ),
    ("", "nodes", "list"): (OPERATOR / "handlers/indexes.py", '@kopf.index("nodes")'),
    ("", "nodes", "watch"): (OPERATOR / "handlers/indexes.py", '@kopf.index("nodes")'),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): (
        KOPF / "_core/reactor/observation.py",
        "references.CRDS",
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): (
        KOPF / "_core/reactor/observation.py",
        "queueing.watcher(",
    ),
    ("hybridgpu.dev", "inferencejobs", "get"): (
        OPERATOR / "kube.py",
        "get_namespaced_custom_object",
    ),
    ("hybridgpu.dev", "inferencejobs", "list"): (
        OPERATOR / "handlers/indexes.py",
        '@kopf.index(GROUP, VERSION, "inferencejobs")',
    ),
    ("hybridgpu.dev", "inferencejobs", "watch"): (
        OPERATOR / "handlers/jobs.py",
        '@kopf.on.event(GROUP, VERSION, "inferencejobs")',
    ),
    ("hybridgpu.dev", "inferencejobs", "patch"): (
        OPERATOR / "kube.py",
        "self._custom.patch_namespaced_custom_object, JOBS",
    ),
    ("hybridgpu.dev", "routingpolicies", "list"): (
        OPERATOR / "handlers/indexes.py",
        '@kopf.index(GROUP, VERSION, "routingpolicies")',
    ),
    ("hybridgpu.dev", "routingpolicies", "watch"): (
        OPERATOR / "handlers/policies.py",
        '@kopf.on.event(GROUP, VERSION, "routingpolicies")',
    ),
    ("hybridgpu.dev", "routingpolicies", "get"): (
        OPERATOR / "controller/ledger_writes.py",
        "await kube.get_policy(",
    ),
    ("hybridgpu.dev", "routingpolicies", "patch"): (
        OPERATOR / "handlers/startup.py",
        "AnnotationsProgressStorage",
    ),
    ("hybridgpu.dev", "inferencejobs/status", "patch"): (
        OPERATOR / "kube.py",
        "def patch_job_status",
    ),
    ("hybridgpu.dev", "routingpolicies/status", "patch"): (
        OPERATOR / "kube.py",
        "def patch_policy_status",
    ),
    ("batch", "jobs", "create"): (OPERATOR / "kube.py", "create_namespaced_job"),
    ("batch", "jobs", "get"): (OPERATOR / "kube.py", "read_namespaced_job"),
    ("batch", "jobs", "delete"): (OPERATOR / "kube.py", "delete_namespaced_job"),
    ("batch", "jobs", "list"): (
        OPERATOR / "handlers/indexes.py",
        '@kopf.index("batch", "v1", "jobs"',
    ),
    ("batch", "jobs", "watch"): (
        OPERATOR / "handlers/indexes.py",
        '@kopf.on.event("batch", "v1", "jobs"',
    ),
    ("", "pods", "list"): (OPERATOR / "handlers/indexes.py", '@kopf.index("pods")'),
    ("", "pods", "watch"): (OPERATOR / "handlers/indexes.py", '@kopf.index("pods")'),
    ("", "configmaps", "get"): (OPERATOR / "kube.py", "read_namespaced_config_map"),
    ("", "events", "create"): (OPERATOR / "kube.py", "create_namespaced_event"),
    ("", "secrets", "get"): (OPERATOR / "kube.py", "read_namespaced_secret"),
    ("kopf.dev", "clusterkopfpeerings", "list"): (
        KOPF / "_core/engines/peering.py",
        "CLUSTER_PEERINGS_K",
    ),
    ("kopf.dev", "clusterkopfpeerings", "watch"): (
        KOPF / "_core/engines/peering.py",
        "CLUSTER_PEERINGS_K",
    ),
    ("kopf.dev", "clusterkopfpeerings", "get"): (
        KOPF / "_core/engines/peering.py",
        "CLUSTER_PEERINGS_K",
    ),
    ("kopf.dev", "clusterkopfpeerings", "patch"): (
        KOPF / "_core/engines/peering.py",
        "patching.patch_obj",
    ),
    ("kopf.dev", "kopfpeerings", "list"): (
        KOPF / "_core/engines/peering.py",
        "NAMESPACED_PEERINGS_K",
    ),
    ("kopf.dev", "kopfpeerings", "watch"): (
        KOPF / "_core/engines/peering.py",
        "NAMESPACED_PEERINGS_K",
    ),
    ("kopf.dev", "kopfpeerings", "get"): (
        KOPF / "_core/engines/peering.py",
        "NAMESPACED_PEERINGS_K",
    ),
    ("kopf.dev", "kopfpeerings", "patch"): (
        KOPF / "_core/engines/peering.py",
        "patching.patch_obj",
    ),
}
CLUSTER_SCOPED = {
    "computeproviders",
    "computeproviders/status",
    "nodes",
    "customresourcedefinitions",
    "clusterkopfpeerings",
}


def _flatten(rules: list[dict[str, Any]]) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _roles(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return chart.of_kind(docs, kind)


def test_every_permission_is_explained_by_the_code_that_uses_it() -> None:
    for rule, (path, evidence) in NEEDED.items():
        assert evidence in path.read_text(), f"{rule}: {evidence!r} no longer in {path}"


def test_clusterwide_rules_are_exactly_the_needed_ones_without_wildcards() -> None:
    docs = chart.render(
        "--set",
        "rbac.secretNamespaces={creds}",
        "--set",
        "rbac.secretNames={akash-key}",
        "--set",
        "replicaCount=2",
    )
    (cluster_role,) = _roles(docs, "ClusterRole")
    granted = _flatten(cluster_role["rules"])
    expected = {r for r in NEEDED if r[1] not in ("secrets", "kopfpeerings")}
    assert granted == expected
    for rule in cluster_role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    (secrets_role,) = _roles(docs, "Role")
    assert secrets_role["metadata"]["namespace"] == "creds"
    assert _flatten(secrets_role["rules"]) == {("", "secrets", "get")}


def test_peering_objects_are_patchable_only_by_name() -> None:
    docs = chart.render("--set", "replicaCount=2")
    (cluster_role,) = _roles(docs, "ClusterRole")
    patching = [
        r
        for r in cluster_role["rules"]
        if "clusterkopfpeerings" in r["resources"] and "patch" in r["verbs"]
    ]
    assert patching and all(
        r.get("resourceNames") == [f"{chart.RELEASE}-hybridgpu"] for r in patching
    )


def test_no_secret_access_without_named_namespaces_and_names_narrow_it() -> None:
    docs = chart.render()
    assert all(
        ("", "secrets", "get") not in _flatten(r["rules"])
        for r in _roles(docs, "ClusterRole") + _roles(docs, "Role")
    )
    named = chart.render(
        "--set", "rbac.secretNamespaces={creds}", "--set", "rbac.secretNames={akash-key}"
    )
    (role,) = _roles(named, "Role")
    assert role["rules"][0]["resourceNames"] == ["akash-key"]
    everything = chart.render(
        "--set", "rbac.secretNamespaces={creds}", "--set", "rbac.allSecretsInNamespaces=true"
    )
    (role,) = _roles(everything, "Role")
    assert "resourceNames" not in role["rules"][0]  # the explicit opt-in


def test_a_credentials_namespace_without_secret_names_is_refused() -> None:
    result = chart.helm(
        "template",
        chart.RELEASE,
        str(chart.CHART),
        "--set",
        "rbac.secretNamespaces={creds}",
        check=False,
    )
    assert result.returncode != 0
    assert "rbac.secretNames is empty" in result.stderr


def test_namespaced_mode_moves_namespaced_rules_into_roles() -> None:
    docs = chart.render("--set", "operator.watchNamespaces={team-a,team-b}")
    (cluster_role,) = _roles(docs, "ClusterRole")
    assert {r[1] for r in _flatten(cluster_role["rules"])} <= CLUSTER_SCOPED
    roles = {r["metadata"]["namespace"]: _flatten(r["rules"]) for r in _roles(docs, "Role")}
    namespaced = {r for r in NEEDED if r[1] not in CLUSTER_SCOPED | {"secrets", "kopfpeerings"}}
    assert roles["team-a"] == namespaced
    assert roles["team-b"] == namespaced
    # Kopf posts events of cluster-scoped ComputeProviders in the operator's own namespace.
    assert roles[chart.NAMESPACE] == {("", "events", "create")}
    bindings = _roles(docs, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == set(roles)
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": f"{chart.RELEASE}-hybridgpu",
            "namespace": chart.NAMESPACE,
        }
