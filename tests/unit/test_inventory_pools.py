"""pools_from and its Kopf index extractors, on Node/Pod objects shaped as the API returns them."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.inventory.pools import (
    ATTEMPT_LABEL,
    ESTIMATED_DURATION_ANNOTATION,
    OWNER_LABEL,
    InvalidObject,
    NodeRecord,
    PodRecord,
    gpu_nodes_index,
    gpu_pods_index,
    index_values,
    pod_gpu_request,
    pod_products,
    pools_from,
    unconstrained_queued,
)
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import InClusterPool, Snapshot
from tests.unit.inventory_objects import A100, T4, container, node, pod, wants


def records(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> tuple[list[NodeRecord], list[PodRecord]]:
    node_records = [r for n in nodes for r in gpu_nodes_index(n).values()]
    pod_records = [r for p in pods for r in gpu_pods_index(p).values()]
    return node_records, pod_records


def pools(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    utilization: dict[str, float] | None = None,
) -> dict[str, InClusterPool]:
    n, p = records(nodes, pods)
    return {pool.gpu_product: pool for pool in pools_from(n, p, utilization)}


def test_one_product_counts_allocatable_in_use_and_largest_free_node() -> None:
    result = pools(
        [node("n1", 8), node("n2", 8)],
        [pod("a", 3, "n1"), pod("b", 2, "n1"), pod("c", 1, "n2")],
    )
    assert set(result) == {A100}
    pool = result[A100]
    assert (pool.allocatable, pool.in_use, pool.free) == (16, 6, 10)
    assert pool.max_free_per_node == 7
    assert pool.memory_bytes == 81920 * 2**20
    assert pool.queued == 0
    assert pool.utilization_percent is None


def test_multiple_products_get_separate_pools_sorted_by_name() -> None:
    n, p = records(
        [node("t4-1", 4, T4, 15360), node("a-1", 8), node("t4-2", 2, T4, 15360)],
        [pod("x", 1, "t4-2"), pod("y", 4, "a-1")],
    )
    result = pools_from(n, p)
    assert [pool.gpu_product for pool in result] == [A100, T4]
    a100, t4 = result
    assert (a100.allocatable, a100.in_use, a100.max_free_per_node) == (8, 4, 4)
    assert (t4.allocatable, t4.in_use, t4.max_free_per_node) == (6, 1, 4)
    assert t4.memory_bytes == 15360 * 2**20


def test_cordoned_and_not_ready_nodes_and_their_pods_are_left_out() -> None:
    result = pools(
        [node("ok", 8), node("cordoned", 8, cordoned=True), node("down", 8, ready=False)],
        [pod("a", 2, "ok"), pod("b", 4, "cordoned"), pod("c", 8, "down")],
    )
    pool = result[A100]
    assert (pool.allocatable, pool.in_use, pool.max_free_per_node) == (8, 2, 6)


def test_max_gpus_per_node_is_the_biggest_node_even_if_cordoned() -> None:
    result = pools([node("small", 4), node("big", 16, cordoned=True)], [pod("a", 4, "small")])
    assert result[A100].max_gpus_per_node == 16
    assert result[A100].max_free_per_node == 0


def test_node_without_ready_condition_is_not_schedulable() -> None:
    body = node("new", 8)
    body["status"]["conditions"] = []
    (record,) = gpu_nodes_index(body).values()
    assert record.schedulable is False


def test_product_whose_nodes_are_all_cordoned_keeps_an_empty_pool() -> None:
    pool = pools([node("c", 8, T4, cordoned=True)], [])[T4]
    assert (pool.allocatable, pool.in_use, pool.free, pool.max_free_per_node) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "body",
    [
        node("cpu-only", gpus=None, product=None, memory_mib=None),
        node("zero", gpus=0),
    ],
)
def test_nodes_without_gpus_are_not_indexed(body: dict[str, Any]) -> None:
    assert gpu_nodes_index(body) == {}


def test_gpu_node_without_gfd_labels_lands_in_unknown_pool() -> None:
    result = pools([node("bare", 2, product=None, memory_mib=None)], [])
    assert result["unknown"].allocatable == 2
    assert result["unknown"].memory_bytes == 0


def test_memory_falls_back_to_known_product_table_when_label_missing() -> None:
    (record,) = gpu_nodes_index(node("t", 4, T4, memory_mib=None)).values()
    assert record.memory_mib == 15360


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminated_pods_hold_no_gpus_and_are_not_indexed(phase: str) -> None:
    assert gpu_pods_index(pod("done", 4, "n1", phase)) == {}
    result = pools([node("n1", 8)], [pod("done", 4, "n1", phase), pod("live", 1, "n1")])
    assert result[A100].in_use == 1


def test_bound_pending_pod_holds_its_gpus() -> None:
    # Bound but still pulling its image: the scheduler has already counted it on the node.
    result = pools([node("n1", 8)], [pod("starting", 3, "n1", "Pending")])
    assert result[A100].in_use == 3
    assert result[A100].queued == 0


def test_pods_without_gpus_are_not_indexed() -> None:
    assert gpu_pods_index(pod("cpu", None)) == {}


def test_limit_is_used_when_no_request() -> None:
    body = pod("l", containers=[container("main", 2, limit_only=True)])
    assert gpu_pods_index(body)["default/l"].gpus == 2


def test_init_container_peak_beats_smaller_sum_of_containers() -> None:
    spec = pod(
        "i",
        containers=[container("a", 1), container("b", 1)],
        init_containers=[container("warmup", 4), container("fetch", None)],
    )["spec"]
    assert pod_gpu_request(spec) == 4


def test_sum_of_containers_beats_smaller_init_container() -> None:
    spec = pod(
        "i",
        containers=[container("a", 2), container("b", 3)],
        init_containers=[container("warmup", 4)],
    )["spec"]
    assert pod_gpu_request(spec) == 5


def test_sidecar_init_containers_add_to_containers_and_later_inits() -> None:
    sidecar = container("proxy", 1) | {"restartPolicy": "Always"}
    spec = pod(
        "s",
        containers=[container("main", 2)],
        init_containers=[container("before", 2), sidecar, container("after", 3)],
    )["spec"]
    # containers + sidecar = 3; "after" runs beside the sidecar = 4; "before" alone = 2.
    assert pod_gpu_request(spec) == 4


def test_pod_overhead_counts() -> None:
    spec = pod("o", 1)["spec"] | {"overhead": {"nvidia.com/gpu": "1"}}
    assert pod_gpu_request(spec) == 2


def test_pending_unbound_pods_queue_on_the_product_they_ask_for() -> None:
    pods_ = [
        pod("sel", 2, None, "Pending", node_selector={"nvidia.com/gpu.product": T4}),
        pod("aff", 3, None, "Pending", affinity_terms=wants(A100)),
        pod("either", 1, None, "Pending", affinity_terms=wants(A100, T4)),
        pod("anything", 4, None, "Pending"),
    ]
    result = pools([node("a", 8), node("t", 4, T4, 15360)], pods_)
    assert result[A100].queued == 3 + 1
    assert result[T4].queued == 2 + 1
    assert result[A100].in_use == 0
    _, p = records([], pods_)
    assert unconstrained_queued(p) == 4


def test_product_constraints_follow_node_affinity_semantics() -> None:
    label = "nvidia.com/gpu.product"
    # Terms are ORed; an unconstrained term makes the whole affinity unconstrained.
    assert pod_products(pod("p", affinity_terms=[*wants(A100), []])["spec"]) is None
    # Expressions within a term are ANDed.
    both = [[*wants(A100, T4)[0], {"key": label, "operator": "In", "values": [T4]}]]
    assert pod_products(pod("p", affinity_terms=both)["spec"]) == {T4}
    # nodeSelector and affinity must both hold.
    spec = pod("p", node_selector={label: A100}, affinity_terms=wants(A100, T4))["spec"]
    assert pod_products(spec) == {A100}
    # NotIn is not a positive choice.
    not_in = [[{"key": label, "operator": "NotIn", "values": [T4]}]]
    assert pod_products(pod("p", affinity_terms=not_in)["spec"]) is None


def test_utilization_is_attached_per_product() -> None:
    result = pools([node("a", 8), node("t", 4, T4)], [], {A100: 81.5})
    assert result[A100].utilization_percent == 81.5
    assert result[T4].utilization_percent is None


def test_index_values_flattens_a_kopf_like_index() -> None:
    n1 = gpu_nodes_index(node("n1", 8))
    n2 = gpu_nodes_index(node("n2", 4))
    index = {"n1": list(n1.values()), "n2": list(n2.values())}
    assert sorted(r.name for r in index_values(index)) == ["n1", "n2"]


HALF_GPU = {"nvidia.com/gpu": "0.5"}


def test_canonical_quantities_are_read_as_the_api_server_writes_them() -> None:
    # 1000 GPUs come back from the API server as "1k".
    (record,) = gpu_nodes_index(node("big", gpus="1k")).values()
    assert record.allocatable == 1000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (node("bad", gpus="lots"), "Node bad: status.allocatable['nvidia.com/gpu']"),
        (node("bad", memory_mib="80Gi"), "Node bad: label nvidia.com/gpu.memory"),
        (
            pod("bad", containers=[{"name": "main", "resources": {"requests": HALF_GPU}}]),
            "Pod default/bad: spec.containers[0].resources.requests['nvidia.com/gpu']",
        ),
    ],
)
def test_bad_values_name_the_object_and_field(body: dict[str, Any], field: str) -> None:
    extract = gpu_nodes_index if body["kind"] == "Node" else gpu_pods_index
    with pytest.raises(InvalidObject) as info:
        extract(body)
    assert field in str(info.value)


# -- release_seconds: when the GPUs of hybridgpu's pods are expected back -------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STARTED = "2026-11-28T11:50:00Z"  # ten minutes before NOW


ATTEMPT = {OWNER_LABEL: "job", ATTEMPT_LABEL: "1"}
"""The labels of an in-cluster attempt's pods."""


def test_only_an_attempts_pod_is_trusted_with_a_duration() -> None:
    forged = pod(
        "f", 1, "n1", annotations={ESTIMATED_DURATION_ANNOTATION: "1m"}, start_time=STARTED
    )
    (record,) = gpu_pods_index(forged).values()
    assert record.ends_at is None  # another tenant's pod cannot say the GPUs come back soon


def ours(
    name: str, gpus: int, node_name: str | None, duration: str, start: str | None = STARTED
) -> dict[str, Any]:
    """A pod of a hybridgpu Job: the estimated duration annotated, started at ``start``."""
    return pod(
        name,
        gpus,
        node_name,
        "Running" if start else "Pending",
        annotations={ESTIMATED_DURATION_ANNOTATION: duration},
        labels=ATTEMPT,
        start_time=start,
    )


def test_expected_end_is_start_time_plus_the_annotated_duration() -> None:
    (record,) = gpu_pods_index(ours("a", 2, "n1", "1h30m")).values()
    assert record.ends_at == datetime(2026, 11, 28, 13, 20, tzinfo=UTC).timestamp()


def test_expected_end_is_unknown_without_annotation_or_start() -> None:
    (foreign,) = gpu_pods_index(pod("x", 1, "n1", start_time=STARTED)).values()
    assert foreign.ends_at is None
    (unbound,) = gpu_pods_index(
        pod(
            "u",
            1,
            None,
            "Pending",
            annotations={ESTIMATED_DURATION_ANNOTATION: "1h"},
            labels=ATTEMPT,
        )
    ).values()
    assert unbound.ends_at is None
    (bad,) = gpu_pods_index(
        pod(
            "b",
            1,
            "n1",
            annotations={ESTIMATED_DURATION_ANNOTATION: "soon"},
            labels=ATTEMPT,
            start_time=STARTED,
        )
    ).values()
    assert bad.ends_at is None  # a malformed annotation is not a broken pod


def test_bound_pod_without_start_time_falls_back_to_its_creation() -> None:
    body = pod(
        "b",
        1,
        "n1",
        "Pending",
        annotations={ESTIMATED_DURATION_ANNOTATION: "20m"},
        labels=ATTEMPT,
        created="2026-11-28T11:55:00Z",
    )
    (record,) = gpu_pods_index(body).values()
    assert record.ends_at == datetime(2026, 11, 28, 12, 15, tzinfo=UTC).timestamp()
    # Not bound: the creation time says nothing about when it starts.
    del body["spec"]["nodeName"]
    (record,) = gpu_pods_index(body).values()
    assert record.ends_at is None


def test_release_seconds_lists_each_gpu_of_known_pods_ascending() -> None:
    n, p = records(
        [node("n1", 4), node("n2", 4), node("t", 4, T4), node("off", 4, cordoned=True)],
        [
            ours("long", 2, "n1", "1h"),  # 50 min left
            ours("short", 1, "n2", "20m"),  # 10 min left
            ours("overdue", 1, "n2", "5m"),  # still running past its end: unknown
            pod("foreign", 1, "n1", start_time=STARTED),  # not ours: unknown
            ours("cordoned", 1, "off", "30m"),  # its node takes no work
            ours("t4", 1, "t", "15m"),
            ours("waiting", 2, None, "1h", start=None),  # queued, not holding GPUs
        ],
    )
    result = {pool.gpu_product: pool for pool in pools_from(n, p, now=NOW)}
    assert result[A100].release_seconds == (600.0, 3000.0, 3000.0)
    assert result[T4].release_seconds == (300.0,)
    assert (result[A100].in_use, result[A100].queued) == (5, 0)
    # Node by node: n1 has 1 free and 2 back in 50 min (its third is unknown), n2 2 free and
    # 1 back in 10 min. Three GPUs on one node in 10 min (n2); four on none that is known.
    assert result[A100].node_ready_seconds == (0.0, 0.0, 600.0, math.inf)
    assert result[T4].node_ready_seconds == (0.0, 0.0, 0.0, 300.0)
    # Without ``now`` nothing is estimated and the other figures are the same.
    plain = {pool.gpu_product: pool for pool in pools_from(n, p)}
    assert plain[A100].release_seconds == ()
    assert replace(result[A100], release_seconds=(), node_ready_seconds=()) == plain[A100]


def test_release_seconds_stop_where_no_job_can_look() -> None:
    # Nodes of 2 GPUs and 1 GPU queued: a wait never looks past queued + 2 = 3 releases.
    n, p = records(
        [node("n1", 2), node("n2", 2)],
        [
            ours("a", 1, "n1", "20m"),
            ours("b", 1, "n1", "30m"),
            ours("c", 2, "n2", "40m"),
            pod("q", 1, None, "Pending", affinity_terms=wants(A100)),
        ],
    )
    (pool,) = pools_from(n, p, now=NOW)
    assert pool.release_seconds == (600.0, 1200.0, 1800.0)


def test_a_decision_waits_for_the_estimated_release() -> None:
    nodes_, pods_ = records([node("n1", 1)], [ours("busy", 1, "n1", "20m")])
    policy = RoutingPolicySpec.model_validate(
        {
            "inCluster": {
                "maxQueueTime": "5m",
                "gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "1.00"}],
            }
        }
    )
    snap = Snapshot(now=NOW, pools=pools_from(nodes_, pods_, now=NOW))
    assert snap.pools[0].release_seconds == (600.0,)
    job = InferenceJobSpec.model_validate(
        {
            "task": "container",
            "image": "busybox",
            "input": {"requests": 1},
            "estimatedDuration": "1h",
            "placement": "InCluster",
        }
    )
    d = decide(job, policy, snap)
    (candidate,) = d.candidates
    assert candidate.expected_start_seconds == 600.0
    assert (d.outcome, d.reason) == ("Wait", "QueueTooLong")
    # A longer queue allowance takes the pool, starting when our pod is expected to end.
    patient = policy.model_copy(
        update={
            "in_cluster": policy.in_cluster.model_copy(
                update={"max_queue_time": timedelta(minutes=15)}
            )
        }
    )
    d = decide(job, patient, snap)
    assert d.target is not None
    assert d.target.expected_start_seconds == 600.0


def test_only_nodes_with_every_pool_label_are_indexed() -> None:
    pool = {"type": "process-agent", "pool": "inference"}
    inside = node("in", 4)
    inside["metadata"]["labels"].update(pool)
    partly = node("partly", 4)
    partly["metadata"]["labels"]["pool"] = "inference"
    assert set(gpu_nodes_index(inside, pool)) == {"in"}
    assert gpu_nodes_index(partly, pool) == {}
    assert gpu_nodes_index(node("kwok", 4), pool) == {}
    assert set(gpu_nodes_index(node("kwok", 4), {})) == {"kwok"}
