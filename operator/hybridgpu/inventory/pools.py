"""The cluster's GPU capacity per product, computed from Node and Pod objects. Pure: no I/O.

The operator keeps two Kopf indexes whose values are the compact records made here::

    @kopf.index("nodes")
    def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, NodeRecord]:
        return gpu_nodes_index(body)

    @kopf.index("pods")
    def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, PodRecord]:
        return gpu_pods_index(body)

    pools = pools_from(index_values(gpu_nodes), index_values(gpu_pods), utilization)

Objects without GPUs give ``{}`` and so never enter an index: with thousands of CPU pods the
indexes hold only the few hundred bytes per GPU pod that scheduling arithmetic needs.

How the figures are counted (and why):

* ``allocatable`` sums ``status.allocatable["nvidia.com/gpu"]`` over nodes that are Ready and not
  cordoned (``spec.unschedulable``); a NotReady or cordoned node takes no new work, so its GPUs
  (and the pods on it) are left out of the pool altogether. Taints are not considered: GPU nodes
  are commonly tainted ``nvidia.com/gpu:NoSchedule`` and GPU pods tolerate that.
* ``in_use`` sums the effective ``nvidia.com/gpu`` request of pods bound to those nodes
  (``spec.nodeName`` set) that have not terminated (phase neither Succeeded nor Failed), the way
  kube-scheduler computes a pod's request: max(sum over containers plus restartable (sidecar) init
  containers, each ordinary init container plus the sidecars started before it), plus
  ``spec.overhead``. A container's request falls back to its limit, as Kubernetes defaults
  requests of extended resources to their limits.
* ``queued`` sums the requests of Pending pods not yet bound whose ``nodeSelector`` or required
  node affinity names GPU products (``nvidia.com/gpu.product`` with ``In``). A pod that accepts
  several products counts in each of those pools: it is demand any of them may have to absorb,
  and over-stating a queue only makes routing more careful. Pending GPU pods that name no product
  are not spread over the pools; ``unconstrained_queued`` returns their total so the operator can
  report it (or spread it) as it sees fit.
* ``max_free_per_node`` is the largest ``allocatable - in_use`` of one Ready, uncordoned node:
  a job's GPUs must share a node. ``max_gpus_per_node`` is the largest node of the product,
  cordoned or not: a job asking for more can never run on it.
* ``release_seconds`` (only when ``pools_from`` is given ``now``) holds, ascending, the seconds
  until each GPU of a pod counted in ``in_use`` is expected back: one entry per GPU, from the
  pod's start (``status.startTime``; ``creationTimestamp`` for a bound pod without one) plus the
  ``hybridgpu.dev/estimated-duration`` annotation the operator puts on the pods of its Jobs
  (the InferenceJob's ``estimatedDuration``). Pods without it (not made by hybridgpu) and pods
  still running past their expected end are left out as unknown; the engine assumes the
  policy's maxQueueTime for GPUs beyond the known ones. The list is cut at ``queued`` plus the
  biggest node's GPUs, the most any job's wait can look at.
* ``node_ready_seconds`` (with ``now`` too) reads the same releases node by node: when one
  Ready node first has 1, 2, … GPUs free (``routing.offerfacts.node_ready_seconds``), since a
  job's GPUs must share a node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from hybridgpu.gpu_products import TRACE_GPU_PRODUCTS
from hybridgpu.jobs.conditions import parse_timestamp
from hybridgpu.routing.offerfacts import node_ready_seconds
from hybridgpu.routing.snapshot import InClusterPool
from hybridgpu.units import parse_duration, quantity_value

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
ESTIMATED_DURATION_ANNOTATION = "hybridgpu.dev/estimated-duration"
"""On the pods of hybridgpu's in-cluster Jobs: the InferenceJob's ``estimatedDuration``."""
UNLABELLED_PRODUCT = "unknown"
"""Pool name for nodes that offer nvidia.com/gpu but carry no GPU Feature Discovery labels."""

MIB = 2**20
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
_KNOWN_MEMORY_MIB = dict(TRACE_GPU_PRODUCTS.values())

T = TypeVar("T")


class InvalidObject(ValueError):
    """A Node or Pod carries a value that cannot be read (the message names object and field)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the inventory needs of one GPU node."""

    name: str
    gpu_product: str
    memory_mib: int
    """Per-GPU framebuffer (GFD ``nvidia.com/gpu.memory``); 0 when unknown."""
    allocatable: int
    schedulable: bool
    """Ready and not cordoned."""


@dataclass(frozen=True, slots=True)
class PodRecord:
    """What the inventory needs of one pod that requests GPUs."""

    namespace: str
    name: str
    node: str | None
    """``spec.nodeName``; None while the pod is not bound."""
    phase: str
    gpus: int
    """Effective ``nvidia.com/gpu`` request, as the scheduler counts it."""
    products: frozenset[str] | None
    """GPU products the pod's node selection accepts; None when it names none."""
    container: str
    """First container that requests GPUs (dcgm-exporter attributes a GPU to a container)."""
    ends_at: float | None = None
    """Expected end, Unix seconds: start plus the estimated-duration annotation; None: unknown."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def active(self) -> bool:
        """Holds (or will hold) its GPUs: not Succeeded or Failed."""
        return self.phase not in TERMINATED_PHASES

    @property
    def pending_unbound(self) -> bool:
        return self.node is None and self.phase == "Pending"


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace")
    name = str(meta.get("name", "?"))
    return f"{namespace}/{name}" if namespace else name


def _gpu_count(value: object, where: str) -> int:
    """Read an nvidia.com/gpu quantity; extended resources are whole, non-negative numbers."""
    if isinstance(value, bool):
        raise InvalidObject(f"{where}: {value!r} is not a whole number of GPUs")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        # The API server canonicalises quantities: 1000 GPUs come back as "1k".
        try:
            count = quantity_value(value.strip())
        except ValueError:
            count = Decimal(-1)
        if count >= 0 and count == count.to_integral_value():
            return int(count)
    raise InvalidObject(f"{where}: {value!r} is not a whole number of GPUs")


def _label_number(value: object, where: str) -> int:
    """A label holding a whole number (GFD writes MiB as plain digits, not a quantity)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise InvalidObject(f"{where}: {value!r} is not a whole number")


def _is_ready(status: Mapping[str, Any]) -> bool:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def node_record(
    body: Mapping[str, Any], pool: Mapping[str, str] | None = None
) -> NodeRecord | None:
    """A compact record of a Node, or None if it offers no ``nvidia.com/gpu`` or lacks one of
    the ``pool`` labels (the admin's GPU node selector: other nodes are not the operator's)."""
    meta = body.get("metadata") or {}
    if pool:
        node_labels = meta.get("labels") or {}
        if any(node_labels.get(key) != value for key, value in pool.items()):
            return None
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise InvalidObject("Node without metadata.name")
    raw = (status.get("allocatable") or {}).get(GPU_RESOURCE)
    if raw is None:
        return None
    allocatable = _gpu_count(raw, f"Node {name}: status.allocatable[{GPU_RESOURCE!r}]")
    if allocatable == 0:
        return None
    labels = meta.get("labels") or {}
    product = str(labels.get(PRODUCT_LABEL) or UNLABELLED_PRODUCT)
    memory_raw = labels.get(MEMORY_LABEL)
    if memory_raw is None:
        memory_mib = _KNOWN_MEMORY_MIB.get(product, 0)
    else:
        memory_mib = _label_number(memory_raw, f"Node {name}: label {MEMORY_LABEL} (MiB)")
    return NodeRecord(
        name=name,
        gpu_product=product,
        memory_mib=memory_mib,
        allocatable=allocatable,
        schedulable=_is_ready(status) and not spec.get("unschedulable", False),
    )


def gpu_nodes_index(
    body: Mapping[str, Any], pool: Mapping[str, str] | None = None
) -> dict[str, NodeRecord]:
    """Kopf index function for Nodes: ``{node name: NodeRecord}``, or ``{}`` without GPUs
    (or outside ``pool``)."""
    record = node_record(body, pool)
    return {record.name: record} if record else {}


def _container_gpus(container: Mapping[str, Any], where: str) -> int:
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        value = (resources.get(kind) or {}).get(GPU_RESOURCE)
        if value is not None:
            return _gpu_count(value, f"{where}.resources.{kind}[{GPU_RESOURCE!r}]")
    return 0


def pod_gpu_request(spec: Mapping[str, Any], where: str = "Pod") -> int:
    """The pod's effective ``nvidia.com/gpu`` request, computed as kube-scheduler does.

    Restartable init containers (sidecars, ``restartPolicy: Always``) keep running, so they add
    to the regular containers; an ordinary init container runs alone beside the sidecars started
    before it, so only the largest such moment counts.
    """
    total = sum(
        _container_gpus(c, f"{where}: spec.containers[{i}]")
        for i, c in enumerate(spec.get("containers") or ())
    )
    sidecars = 0
    peak_init = 0
    for i, init in enumerate(spec.get("initContainers") or ()):
        gpus = _container_gpus(init, f"{where}: spec.initContainers[{i}]")
        if init.get("restartPolicy") == "Always":
            sidecars += gpus
        else:
            peak_init = max(peak_init, gpus + sidecars)
    overhead = (spec.get("overhead") or {}).get(GPU_RESOURCE)
    extra = _gpu_count(overhead, f"{where}: spec.overhead") if overhead is not None else 0
    return max(total + sidecars, peak_init) + extra


def _term_products(term: Mapping[str, Any]) -> frozenset[str] | None:
    """Products one nodeSelectorTerm accepts (its expressions are ANDed); None: unconstrained."""
    accepted: frozenset[str] | None = None
    for expr in term.get("matchExpressions") or ():
        if expr.get("key") != PRODUCT_LABEL or expr.get("operator") != "In":
            continue
        values = frozenset(str(v) for v in expr.get("values") or ())
        accepted = values if accepted is None else accepted & values
    return accepted


def pod_products(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """GPU products a pod's nodeSelector and required node affinity accept; None if it names none.

    Terms of ``requiredDuringSchedulingIgnoredDuringExecution`` are ORed, so one unconstrained
    term makes the whole affinity unconstrained. ``NotIn``/``Exists`` are not positive choices
    and leave the pod unconstrained here.
    """
    accepted: frozenset[str] | None = None
    selected = (spec.get("nodeSelector") or {}).get(PRODUCT_LABEL)
    if selected is not None:
        accepted = frozenset({str(selected)})
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or ()
    if terms:
        union: set[str] = set()
        for term in terms:
            products = _term_products(term)
            if products is None:
                return accepted
            union |= products
        accepted = frozenset(union) if accepted is None else accepted & union
    return accepted


def expected_end(meta: Mapping[str, Any], status: Mapping[str, Any], bound: bool) -> float | None:
    """When a pod is expected to finish (Unix seconds), or None when that is not known.

    Known only for pods carrying the estimated-duration annotation (hybridgpu's own) that have
    started: ``status.startTime``, else the creation time of a pod already bound to a node.
    A malformed annotation or timestamp makes the end unknown rather than the pod invalid.
    """
    labels = meta.get("labels") or {}
    if not ((labels.get(OWNER_LABEL) or labels.get(UID_LABEL)) and labels.get(ATTEMPT_LABEL)):
        # Any other pod could steer everyone's wait estimates with the annotation; an
        # attempt's pod says no more than its InferenceJob's own estimatedDuration.
        return None
    duration = (meta.get("annotations") or {}).get(ESTIMATED_DURATION_ANNOTATION)
    if not duration:
        return None
    started = status.get("startTime") or (meta.get("creationTimestamp") if bound else None)
    try:
        start = parse_timestamp(started)
        seconds = parse_duration(str(duration)).total_seconds()
    except (ValueError, OverflowError):
        return None
    return None if start is None else start.timestamp() + seconds


def pod_record(body: Mapping[str, Any]) -> PodRecord | None:
    """A compact record of a Pod, or None if it requests no GPUs or has terminated."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if phase in TERMINATED_PHASES:
        return None
    where = f"Pod {_name(body)}"
    gpus = pod_gpu_request(spec, where)
    if gpus == 0:
        return None
    container = next(
        (
            str(c.get("name", ""))
            for i, c in enumerate(spec.get("containers") or ())
            if _container_gpus(c, f"{where}: spec.containers[{i}]") > 0
        ),
        "",
    )
    node = spec.get("nodeName") or None
    return PodRecord(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        node=node,
        phase=phase,
        gpus=gpus,
        products=pod_products(spec),
        container=container,
        ends_at=expected_end(meta, status, node is not None),
    )


OWNER_LABEL = "hybridgpu.dev/inferencejob"
"""On the Pods and batch/v1 Jobs of in-cluster attempts: the InferenceJob's name."""
ATTEMPT_LABEL = "hybridgpu.dev/attempt"
UID_LABEL = "hybridgpu.dev/inferencejob-uid"
"""On the same: the InferenceJob's UID (names longer than a label value carry only this)."""


def gpu_pods_index(body: Mapping[str, Any]) -> dict[str, PodRecord]:
    """Kopf index function for Pods: ``{"namespace/name": PodRecord}``, or ``{}``."""
    record = pod_record(body)
    return {record.key: record} if record else {}


def index_values(index: Mapping[Any, Iterable[T]]) -> Iterator[T]:
    """Every value of a Kopf index (a mapping of keys to collections of values)."""
    for values in index.values():
        yield from values


def gpus_in_use_by_node(pods: Iterable[PodRecord]) -> dict[str, int]:
    """GPUs held per node by bound, not terminated pods."""
    used: dict[str, int] = defaultdict(int)
    for pod in pods:
        if pod.node and pod.active:
            used[pod.node] += pod.gpus
    return dict(used)


def unconstrained_queued(pods: Iterable[PodRecord]) -> int:
    """GPUs requested by Pending, unbound pods that name no GPU product (in no pool's queue)."""
    return sum(p.gpus for p in pods if p.pending_unbound and not p.products)


def pools_from(
    nodes: Iterable[NodeRecord],
    pods: Iterable[PodRecord],
    utilization: Mapping[str, float] | None = None,
    *,
    now: datetime | None = None,
    faults: Mapping[str, str] | None = None,
    busy_by_node: Mapping[str, float] | None = None,
) -> tuple[InClusterPool, ...]:
    """One ``InClusterPool`` per GPU product, sorted by product name.

    ``utilization`` maps a GPU product to its mean DCGM utilisation in percent (see
    ``inventory.telemetry``); products missing from it get ``utilization_percent=None``.
    A product whose nodes are all NotReady or cordoned still gets a pool, with nothing
    allocatable, so that routing can say why it was not chosen. With ``now`` the pools carry
    ``release_seconds`` (see the module docstring); without it that stays empty.

    ``faults`` (node -> why, from ``GpuTelemetry.faults``) leaves those nodes out of the pool
    like NotReady ones, counted in ``unhealthy_gpus`` with the first reason; ``busy_by_node``
    (``GpuTelemetry.busy_gpus_by_node``) gives ``measured_busy`` over the nodes kept.
    """
    faults = faults or {}
    pod_list = list(pods)
    used = gpus_in_use_by_node(pod_list)
    queued: dict[str, int] = defaultdict(int)
    # Node -> seconds until each GPU of its pods is expected back, pods not yet overdue.
    ends: dict[str, list[float]] = defaultdict(list)
    clock = now.timestamp() if now is not None else None
    for pod in pod_list:
        if pod.pending_unbound and pod.products:
            for product in pod.products:
                queued[product] += pod.gpus
        elif pod.node and pod.active and pod.ends_at and clock and pod.ends_at > clock:
            ends[pod.node].extend([pod.ends_at - clock] * pod.gpus)

    by_product: dict[str, list[NodeRecord]] = defaultdict(list)
    for node in nodes:
        by_product[node.gpu_product].append(node)

    pools: list[InClusterPool] = []
    for product in sorted(by_product):
        members = by_product[product]
        schedulable = [n for n in members if n.schedulable]
        ready = [n for n in schedulable if n.name not in faults]
        faulty = [n for n in schedulable if n.name in faults]
        memories = [n.memory_mib for n in members if n.memory_mib > 0]
        # Differing labels within one product would be odd; promise only what every node has.
        memory_bytes = min(memories) * MIB if memories else 0
        free_per_node = [max(n.allocatable - used.get(n.name, 0), 0) for n in ready]
        biggest = max(n.allocatable for n in members)
        releases: tuple[float, ...] = ()
        node_ready: tuple[float, ...] = ()
        if ends:
            known = [left for n in ready for left in ends.get(n.name, ())]
            # A job's wait looks at most at the GPUs the queue wants plus its own.
            releases = tuple(sorted(known)[: queued.get(product, 0) + biggest])
            node_ready = node_ready_seconds(
                (
                    (free, sorted(ends.get(n.name, ())))
                    for n, free in zip(ready, free_per_node, strict=True)
                ),
                biggest,
            )
        pools.append(
            InClusterPool(
                gpu_product=product,
                memory_bytes=memory_bytes,
                allocatable=sum(n.allocatable for n in ready),
                in_use=sum(used.get(n.name, 0) for n in ready),
                queued=queued.get(product, 0),
                utilization_percent=None if utilization is None else utilization.get(product),
                max_free_per_node=max(free_per_node, default=0),
                # Cordoning is temporary; a node's size is not, so count every node here.
                max_gpus_per_node=biggest,
                release_seconds=releases,
                node_ready_seconds=node_ready,
                unhealthy_gpus=sum(n.allocatable for n in faulty),
                unhealthy_in_use=sum(used.get(n.name, 0) for n in faulty),
                unhealthy_max_free=max(
                    (max(n.allocatable - used.get(n.name, 0), 0) for n in faulty), default=0
                ),
                unhealthy_reason=f"node {faulty[0].name}: {faults[faulty[0].name]}"
                if faulty
                else "",
                measured_busy=_measured(ready, busy_by_node),
            )
        )
    return tuple(pools)


def _measured(nodes: list[NodeRecord], busy_by_node: Mapping[str, float] | None) -> float | None:
    """GPUs measured busy over ``nodes``; None unless telemetry covers every one of them."""
    if busy_by_node is None or any(n.name not in busy_by_node for n in nodes):
        return None
    return sum(min(busy_by_node[n.name], n.allocatable) for n in nodes)
