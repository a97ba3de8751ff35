"""GPU utilisation and framebuffer use per node and per GPU product, read from Prometheus.

The series are NVIDIA dcgm-exporter's (``DCGM_FI_DEV_GPU_UTIL``, ``DCGM_FI_DEV_FB_USED``,
``DCGM_FI_DEV_FB_FREE``; one series per GPU). ``fetch_gpu_telemetry`` is synchronous, like
``prometheus_api_client``; the operator calls it in a thread and, on ``TelemetryUnavailable``,
keeps routing on pod requests alone.

The node a series belongs to is read from the ``Hostname`` label dcgm-exporter sets, else from
``node`` or ``kubernetes_node``, which Prometheus' Kubernetes service discovery relabelling
commonly adds. A GPU's product is its ``modelName`` with spaces turned into ``-`` (the rule GPU
Feature Discovery uses for ``nvidia.com/gpu.product``), unless the node's own label is known.
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
    util: QueryResult, fb_used: QueryResult = (), fb_free: QueryResult = ()
) -> GpuTelemetry:
    """Join the three instant vectors per GPU. Series without a node label are skipped.

    A GPU shared by several pods can appear once per pod (dcgm-exporter's shared-GPU mode);
    the first series per GPU wins, as the values are the device's own.
    """
    used = _by_gpu(fb_used)
    free = _by_gpu(fb_free)
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
        )
    return GpuTelemetry(samples=tuple(samples[k] for k in sorted(samples)))


def _by_gpu(result: QueryResult) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for entry in result:
        labels = entry.get("metric") or {}
        node = node_of(labels)
        value = _value(entry)
        if node is not None and value is not None:
            values.setdefault(_gpu_key(labels, node), value)
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
    telemetry = parse_query_results(util, fb_used, fb_free)
    if not telemetry.samples:
        raise TelemetryUnavailable(
            f"prometheus at {where} has no {UTIL_METRIC} series with a node label"
            " (is dcgm-exporter being scraped?)"
        )
    return telemetry
