"""GPU utilisation and framebuffer use per node and per GPU product, read from Prometheus.

The series are NVIDIA dcgm-exporter's (``DCGM_FI_DEV_GPU_UTIL``, ``DCGM_FI_DEV_FB_USED``,
``DCGM_FI_DEV_FB_FREE``; one series per GPU). ``fetch_gpu_telemetry`` is synchronous, like
``prometheus_api_client``; the operator calls it in a thread and, on ``TelemetryUnavailable``,
keeps routing on pod requests alone.

The node a series belongs to is read from the ``Hostname`` label dcgm-exporter sets, else from
``node`` or ``kubernetes_node``, which Prometheus' Kubernetes service discovery relabelling
commonly adds. A GPU's product is its ``modelName`` with spaces turned into ``-`` (the rule GPU
Feature Discovery uses for ``nvidia.com/gpu.product``), unless the node's own label is known.

Health (``GpuSample.fault``): a GPU is faulty when its last XID (``DCGM_FI_DEV_XID_ERRORS``) is
not one of the application XIDs NVIDIA's k8s-device-plugin also ignores (13, 31, 43, 45, 68:
``internal/rm/health.go``, "Application errors: the GPU should still be healthy"), when it has
uncorrectable remapped rows (``DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS`` > 0) or a row remap
failure (``DCGM_FI_DEV_ROW_REMAP_FAILURE`` = 1), or when DCGM's health check reports a failure
(``DCGM_EXP_GPU_HEALTH_STATUS`` >= 20, ``DCGM_HEALTH_RESULT_FAIL``; dcgm-exporter emits it only
when its counters file enables it). The series are optional: a missing one counts as healthy.
Each sample also carries when Prometheus scraped it (``timestamp(...)``), so that the operator
can tell stale telemetry from fresh.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from hybridgpu.inventory.pools import NodeRecord

UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
FB_USED_METRIC = "DCGM_FI_DEV_FB_USED"
FB_FREE_METRIC = "DCGM_FI_DEV_FB_FREE"
XID_METRIC = "DCGM_FI_DEV_XID_ERRORS"
UNCORRECTABLE_ROWS_METRIC = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"
ROW_REMAP_FAILURE_METRIC = "DCGM_FI_DEV_ROW_REMAP_FAILURE"
HEALTH_METRIC = "DCGM_EXP_GPU_HEALTH_STATUS"
HEALTH_METRICS = (XID_METRIC, UNCORRECTABLE_ROWS_METRIC, ROW_REMAP_FAILURE_METRIC, HEALTH_METRIC)
HEALTH_QUERY = '{__name__=~"' + "|".join(HEALTH_METRICS) + '"}'
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})
"""XIDs caused by the application, not the GPU (NVIDIA k8s-device-plugin skips them too)."""
HEALTH_FAIL = 20.0
"""DCGM_HEALTH_RESULT_FAIL (PASS is 0, WARN 10)."""
NODE_LABELS = ("Hostname", "node", "kubernetes_node")

QueryResult = Sequence[Mapping[str, Any]]
"""The ``data.result`` list of a Prometheus instant-vector query."""


class TelemetryUnavailable(RuntimeError):
    """Prometheus could not give GPU telemetry; the message says why (never any credential)."""


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU as dcgm-exporter reports it."""

    node: str
    gpu: str
    """Index on the node (the ``gpu`` label)."""
    uuid: str
    model_name: str
    utilization_percent: float
    fb_used_mib: float | None = None
    fb_free_mib: float | None = None
    xid: float | None = None
    uncorrectable_remapped_rows: float | None = None
    row_remap_failure: float | None = None
    health_status: float | None = None
    scraped_at: float | None = None
    """Unix seconds of the scrape the utilisation came from (None: unknown)."""

    @property
    def fault(self) -> str | None:
        """Why this GPU must not take work, or None when it looks healthy."""
        if self.xid and int(self.xid) not in APPLICATION_XIDS:
            return f"XID {int(self.xid)}"
        if self.uncorrectable_remapped_rows and self.uncorrectable_remapped_rows > 0:
            return f"{int(self.uncorrectable_remapped_rows)} uncorrectable remapped rows"
        if self.row_remap_failure and self.row_remap_failure >= 1:
            return "row remap failure"
        if self.health_status is not None and self.health_status >= HEALTH_FAIL:
            return "DCGM health check failed"
        return None

    @property
    def busy_fraction(self) -> float:
        """How busy the GPU is measured: the larger of compute and framebuffer use, 0..1."""
        compute = min(max(self.utilization_percent, 0.0), 100.0) / 100
        memory = 0.0
        if self.fb_used_mib is not None and self.fb_free_mib is not None:
            total = self.fb_used_mib + self.fb_free_mib
            memory = self.fb_used_mib / total if total > 0 else 0.0
        return max(compute, min(max(memory, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class NodeTelemetry:
    """The GPUs of one node, aggregated."""

    node: str
    gpus: int
    utilization_percent: float
    """Mean over the node's GPUs."""
    fb_used_mib: float
    fb_free_mib: float
    busy_gpus: int
    """GPUs with non-zero utilisation."""


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """Everything read in one refresh."""

    samples: tuple[GpuSample, ...]

    @property
    def nodes(self) -> dict[str, NodeTelemetry]:
        """Per node, keyed by node name."""
        grouped: dict[str, list[GpuSample]] = defaultdict(list)
        for sample in self.samples:
            grouped[sample.node].append(sample)
        return {
            name: NodeTelemetry(
                node=name,
                gpus=len(gpus),
                utilization_percent=_mean(s.utilization_percent for s in gpus),
                fb_used_mib=sum(s.fb_used_mib or 0.0 for s in gpus),
                fb_free_mib=sum(s.fb_free_mib or 0.0 for s in gpus),
                busy_gpus=sum(1 for s in gpus if s.utilization_percent > 0),
            )
            for name, gpus in sorted(grouped.items())
        }

    def faults(self) -> dict[str, str]:
        """Nodes with at least one faulty GPU, and why (``GPU 0: XID 79``, the first by index)."""
        out: dict[str, str] = {}
        for s in sorted(self.samples, key=lambda s: (s.node, _index(s.gpu))):
            fault = s.fault
            if fault is not None and s.node not in out:
                out[s.node] = f"GPU {s.gpu or s.uuid}: {fault}"
        return out

    def busy_gpus_by_node(self) -> dict[str, float]:
        """Per node, the GPUs measured busy (each GPU counts its ``busy_fraction``)."""
        out: dict[str, float] = defaultdict(float)
        for s in self.samples:
            out[s.node] += s.busy_fraction
        return dict(out)

    def newest_scrape(self) -> float | None:
        """Unix seconds of the most recent scrape among the samples (None if unknown)."""
        times = [s.scraped_at for s in self.samples if s.scraped_at is not None]
        return max(times) if times else None

    def fresh(self, now: float, max_age: float) -> GpuTelemetry | None:
        """Only the samples scraped within ``max_age`` of ``now``; None when none is.

        Samples without a scrape time count as fresh (Prometheus drops series it has not
        scraped for five minutes on its own).
        """
        kept = tuple(
            s for s in self.samples if s.scraped_at is None or now - s.scraped_at <= max_age
        )
        return GpuTelemetry(kept) if kept else None

    def utilization_by_product(self, nodes: Iterable[NodeRecord] = ()) -> dict[str, float]:
        """Mean utilisation over all GPUs of each product (each GPU weighs the same).

        ``nodes`` (the inventory's records) give each node's GFD product; GPUs of nodes not
        among them are attributed by ``modelName``. The result feeds ``pools_from``.
        """
        product_of_node = {n.name: n.gpu_product for n in nodes}
        grouped: dict[str, list[float]] = defaultdict(list)
        for s in self.samples:
            product = product_of_node.get(s.node) or product_from_model_name(s.model_name)
            grouped[product].append(s.utilization_percent)
        return {product: _mean(values) for product, values in sorted(grouped.items())}


def usable_telemetry(
    telemetry: GpuTelemetry | None, now: float, max_age: float
) -> tuple[GpuTelemetry | None, str]:
    """The fresh part of ``telemetry`` (None if none is), and why not when it is all stale."""
    if telemetry is None:
        return None, ""
    fresh = telemetry.fresh(now, max_age)
    if fresh is not None:
        return fresh, ""
    newest = telemetry.newest_scrape()
    age = "unknown" if newest is None else f"{now - newest:.0f}s"
    return None, (f"DCGM telemetry is stale: the newest scrape is {age} old (limit {max_age:.0f}s)")


def _index(gpu: str) -> int:
    return int(gpu) if gpu.isdigit() else 1 << 30


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def product_from_model_name(model_name: str) -> str:
    """GFD's product name for an NVML model name (``Tesla T4`` -> ``Tesla-T4``)."""
    return "-".join(model_name.split())


def node_of(labels: Mapping[str, str]) -> str | None:
    """The node a series belongs to, by the first of ``NODE_LABELS`` that is set."""
    for key in NODE_LABELS:
        value = labels.get(key)
        if value:
            return value
    return None


def _value(entry: Mapping[str, Any]) -> float | None:
    try:
        value = float(entry["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _gpu_key(labels: Mapping[str, str], node: str) -> tuple[str, str]:
    return node, labels.get("UUID") or labels.get("uuid") or labels.get("gpu", "")


def parse_query_results(
    util: QueryResult,
    fb_used: QueryResult = (),
    fb_free: QueryResult = (),
    health: Mapping[str, QueryResult] | None = None,
    scraped: QueryResult = (),
) -> GpuTelemetry:
    """Join the instant vectors per GPU. Series without a node label are skipped.

    ``health`` maps the health metrics (``XID_METRIC`` ...) to their results; ``scraped`` is
    ``timestamp(DCGM_FI_DEV_GPU_UTIL)``. A GPU shared by several pods can appear once per pod
    (dcgm-exporter's shared-GPU mode); the first series per GPU wins, as the values are the
    device's own.
    """
    used = _by_gpu(fb_used)
    free = _by_gpu(fb_free)
    health = health or {}
    xid = _by_gpu(health.get(XID_METRIC, ()))
    rows = _by_gpu(health.get(UNCORRECTABLE_ROWS_METRIC, ()))
    remap = _by_gpu(health.get(ROW_REMAP_FAILURE_METRIC, ()))
    # One health series per watched subsystem: the worst counts.
    status = _by_gpu(health.get(HEALTH_METRIC, ()), worst=True)
    when = _by_gpu(scraped)
    samples: dict[tuple[str, str], GpuSample] = {}
    for entry in util:
        labels = entry.get("metric") or {}
        node = node_of(labels)
        value = _value(entry)
        if node is None or value is None:
            continue
        key = _gpu_key(labels, node)
        if key in samples:
            continue
        samples[key] = GpuSample(
            node=node,
            gpu=labels.get("gpu", ""),
            uuid=labels.get("UUID") or labels.get("uuid", ""),
            model_name=labels.get("modelName", ""),
            utilization_percent=value,
            fb_used_mib=used.get(key),
            fb_free_mib=free.get(key),
            xid=xid.get(key),
            uncorrectable_remapped_rows=rows.get(key),
            row_remap_failure=remap.get(key),
            health_status=status.get(key),
            scraped_at=when.get(key),
        )
    return GpuTelemetry(samples=tuple(samples[k] for k in sorted(samples)))


def _by_gpu(result: QueryResult, *, worst: bool = False) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for entry in result:
        labels = entry.get("metric") or {}
        node = node_of(labels)
        value = _value(entry)
        if node is not None and value is not None:
            key = _gpu_key(labels, node)
            if worst and key in values:
                values[key] = max(values[key], value)
            else:
                values.setdefault(key, value)
    return values


def redact_url(url: str) -> str:
    """The URL without user-info, query or fragment, safe for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise TelemetryUnavailable(
            f"prometheus URL {redact_url(url)} is not valid (bad port?)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TelemetryUnavailable(
            f"prometheus URL {redact_url(url)!r} is not valid: expected http(s)://host[:port]"
        )


ClientFactory = Callable[..., Any]


def fetch_gpu_telemetry(
    url: str,
    *,
    timeout_seconds: float = 5.0,
    headers: Mapping[str, str] | None = None,
    client_factory: ClientFactory = PrometheusConnect,
) -> GpuTelemetry:
    """Query Prometheus at ``url`` for the DCGM series and aggregate them.

    ``headers`` (for example a bearer token) are sent but never reported. Raises
    ``TelemetryUnavailable`` when Prometheus is unreachable, answers with an error, or has no
    ``DCGM_FI_DEV_GPU_UTIL`` series at all (dcgm-exporter not scraped).
    """
    _check_url(url)
    where = redact_url(url)
    try:
        client = client_factory(
            url=url.rstrip("/"),
            headers=dict(headers) if headers else None,
            # One quick retry: the operator refreshes on a timer and must not hang on a dead host.
            retry=Retry(total=1, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            timeout=timeout_seconds,
        )
        util = client.custom_query(UTIL_METRIC)
        fb_used = client.custom_query(FB_USED_METRIC)
        fb_free = client.custom_query(FB_FREE_METRIC)
        # One query for the optional health series, split by metric name below.
        health_series = client.custom_query(HEALTH_QUERY)
        scraped = client.custom_query(f"timestamp({UTIL_METRIC})")
    except PrometheusApiClientException as exc:
        status = str(exc).split(" (", 1)[0]
        raise TelemetryUnavailable(
            f"prometheus at {where} answered with an error: {status}"
        ) from None
    except OSError as exc:
        # requests' exceptions derive from OSError; their text may echo the URL, so leave it out.
        raise TelemetryUnavailable(
            f"prometheus at {where} is unreachable ({type(exc).__name__})"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TelemetryUnavailable(
            f"prometheus at {where} sent an unexpected answer ({type(exc).__name__})"
        ) from None
    health: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in health_series:
        health[(entry.get("metric") or {}).get("__name__", "")].append(entry)
    telemetry = parse_query_results(util, fb_used, fb_free, health, scraped)
    if not telemetry.samples:
        raise TelemetryUnavailable(
            f"prometheus at {where} has no {UTIL_METRIC} series with a node label"
            " (is dcgm-exporter being scraped?)"
        )
    return telemetry
