"""inventory.telemetry: parsing DCGM series and talking to a (fake, local) Prometheus HTTP API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hybridgpu.inventory.pools import NodeRecord
from hybridgpu.inventory.telemetry import (
    HEALTH_METRIC,
    HEALTH_QUERY,
    ROW_REMAP_FAILURE_METRIC,
    UNCORRECTABLE_ROWS_METRIC,
    XID_METRIC,
    TelemetryUnavailable,
    fetch_gpu_telemetry,
    node_of,
    parse_query_results,
    product_from_model_name,
    redact_url,
    usable_telemetry,
)


def series(
    value: str, gpu: str, node: str | None, model: str = "NVIDIA A100-SXM4-80GB", **extra: str
) -> dict[str, Any]:
    labels = {
        "__name__": "DCGM_FI_DEV_GPU_UTIL",
        "gpu": gpu,
        "UUID": f"GPU-{node}-{gpu}",
        "device": f"nvidia{gpu}",
        "modelName": model,
        **extra,
    }
    if node is not None:
        labels["Hostname"] = node
    return {"metric": labels, "value": [1764300000.0, value]}


UTIL = [
    series("90", "0", "n1"),
    series("70", "1", "n1"),
    series("0", "0", "n2"),
    series("40", "0", "t1", "Tesla T4"),
]
USED = [series("60000", "0", "n1"), series("50000", "1", "n1"), series("0", "0", "n2")]
FREE = [series("21920", "0", "n1"), series("31920", "1", "n1"), series("81920", "0", "n2")]


def test_parse_aggregates_per_node() -> None:
    nodes = parse_query_results(UTIL, USED, FREE).nodes
    assert set(nodes) == {"n1", "n2", "t1"}
    n1 = nodes["n1"]
    assert (n1.gpus, n1.utilization_percent, n1.busy_gpus) == (2, 80.0, 2)
    assert (n1.fb_used_mib, n1.fb_free_mib) == (110000.0, 53840.0)
    assert nodes["n2"].utilization_percent == 0.0
    assert nodes["n2"].busy_gpus == 0


def test_utilization_by_product_weighs_each_gpu_and_uses_model_name() -> None:
    by_product = parse_query_results(UTIL).utilization_by_product()
    assert by_product == {
        "NVIDIA-A100-SXM4-80GB": pytest.approx(160 / 3),
        "Tesla-T4": 40.0,
    }


def test_utilization_by_product_prefers_the_nodes_gfd_label() -> None:
    records = [NodeRecord("t1", "Tesla-T4-custom", 15360, 1, True)]
    by_product = parse_query_results(UTIL).utilization_by_product(records)
    assert by_product["Tesla-T4-custom"] == 40.0
    assert "Tesla-T4" not in by_product


def test_node_label_falls_back_to_node_then_kubernetes_node() -> None:
    assert node_of({"Hostname": "h", "node": "n"}) == "h"
    assert node_of({"Hostname": "", "node": "n", "kubernetes_node": "k"}) == "n"
    assert node_of({"kubernetes_node": "k"}) == "k"
    assert node_of({"instance": "10.0.0.1:9400"}) is None
    util = [series("55", "0", None, kubernetes_node="k8")]
    assert parse_query_results(util).nodes["k8"].utilization_percent == 55.0


def test_series_without_node_or_with_nan_are_skipped_and_duplicates_counted_once() -> None:
    util = [
        series("50", "0", None),
        series("NaN", "1", "n1"),
        series("30", "0", "n1", pod="a", namespace="x", container="c"),
        series("30", "0", "n1", pod="b", namespace="x", container="c"),
    ]
    nodes = parse_query_results(util).nodes
    assert list(nodes) == ["n1"]
    assert nodes["n1"].gpus == 1


def test_product_from_model_name_follows_gfd() -> None:
    assert product_from_model_name("Tesla T4") == "Tesla-T4"
    assert product_from_model_name("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"


def test_redact_url_drops_credentials_and_query() -> None:
    assert redact_url("https://user:s3cret@prom.example:9443/api?token=abc") == (
        "https://prom.example:9443/api"
    )


class _FakePrometheus(BaseHTTPRequestHandler):
    status = 200
    answers: dict[str, list[dict[str, Any]]] = {}
    seen_headers: list[str] = []

    def do_GET(self) -> None:
        type(self).seen_headers.append(self.headers.get("Authorization", ""))
        query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
        if self.status != 200:
            body = b'{"status":"error","error":"boom"}'
        else:
            result = self.answers.get(query, [])
            data = {"resultType": "vector", "result": result}
            body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, type[_FakePrometheus]]]:
    handler = type("Handler", (_FakePrometheus,), {"answers": {}, "seen_headers": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_reads_the_three_series_over_http(
    fake_prometheus: tuple[str, type[_FakePrometheus]],
) -> None:
    url, handler = fake_prometheus
    handler.answers = {
        "DCGM_FI_DEV_GPU_UTIL": UTIL,
        "DCGM_FI_DEV_FB_USED": USED,
        "DCGM_FI_DEV_FB_FREE": FREE,
    }
    telemetry = fetch_gpu_telemetry(url + "/", headers={"Authorization": "Bearer tok"})
    assert telemetry.nodes["n1"].utilization_percent == 80.0
    assert telemetry.nodes["n1"].fb_used_mib == 110000.0
    # Utilisation, framebuffer used and free, the health series in one, scrape times.
    assert handler.seen_headers == ["Bearer tok"] * 5
    assert telemetry.faults() == {}


def test_fetch_without_dcgm_series_is_unavailable(
    fake_prometheus: tuple[str, type[_FakePrometheus]],
) -> None:
    url, _ = fake_prometheus
    with pytest.raises(TelemetryUnavailable, match="no DCGM_FI_DEV_GPU_UTIL series"):
        fetch_gpu_telemetry(url)


def test_fetch_error_status_is_unavailable_without_credentials(
    fake_prometheus: tuple[str, type[_FakePrometheus]],
) -> None:
    url, handler = fake_prometheus
    handler.status = 400
    secret_url = url.replace("http://", "http://admin:hunter2@")
    with pytest.raises(TelemetryUnavailable) as info:
        fetch_gpu_telemetry(secret_url, headers={"Authorization": "Bearer tok-xyz"})
    message = str(info.value)
    assert "HTTP Status Code 400" in message
    assert "hunter2" not in message
    assert "tok-xyz" not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_fetch_from_a_dead_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TelemetryUnavailable, match=r"unreachable \(ConnectionError\)"):
        fetch_gpu_telemetry(url, timeout_seconds=1)


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "ftp://host/", "http://host:notaport/", ""])
def test_bad_url_is_unavailable_with_a_clear_message(url: str) -> None:
    with pytest.raises(TelemetryUnavailable, match=r"prometheus URL .* not valid"):
        fetch_gpu_telemetry(url)


def named(name: str, value: str, gpu: str, node: str, **extra: str) -> dict[str, Any]:
    entry = series(value, gpu, node, **extra)
    entry["metric"]["__name__"] = name
    return entry


def test_faults_follow_dcgm_fields_and_skip_application_xids() -> None:
    util = [series("10", str(i), "n1") for i in range(2)] + [
        series("10", "0", "n2"),
        series("10", "0", "n3"),
        series("10", "0", "n4"),
        series("10", "0", "n5"),
        series("10", "0", "n6"),
    ]
    health = {
        XID_METRIC: [named(XID_METRIC, "79", "1", "n1"), named(XID_METRIC, "13", "0", "n2")],
        UNCORRECTABLE_ROWS_METRIC: [named(UNCORRECTABLE_ROWS_METRIC, "2", "0", "n3")],
        ROW_REMAP_FAILURE_METRIC: [named(ROW_REMAP_FAILURE_METRIC, "1", "0", "n4")],
        # One health series per watched subsystem: the worst one counts.
        HEALTH_METRIC: [
            named(HEALTH_METRIC, "0", "0", "n5", health_watch="PCIE"),
            named(HEALTH_METRIC, "20", "0", "n5", health_watch="MEM"),
            named(HEALTH_METRIC, "10", "0", "n6", health_watch="MEM"),
        ],
    }
    telemetry = parse_query_results(util, health=health)
    assert telemetry.faults() == {
        "n1": "GPU 1: XID 79",
        "n3": "GPU 0: 2 uncorrectable remapped rows",
        "n4": "GPU 0: row remap failure",
        "n5": "GPU 0: DCGM health check failed",
    }  # XID 13 is the application's (k8s-device-plugin skips it); WARN (10) is no failure


def test_busy_counts_the_larger_of_utilisation_and_framebuffer() -> None:
    util = [series("20", "0", "n1"), series("90", "1", "n1")]
    used = [series("60000", "0", "n1"), series("0", "1", "n1")]
    free = [series("20000", "0", "n1"), series("80000", "1", "n1")]
    busy = parse_query_results(util, used, free).busy_gpus_by_node()
    assert busy["n1"] == pytest.approx(0.75 + 0.90)


def test_stale_samples_are_dropped_and_all_stale_says_how_old() -> None:
    util = [series("50", "0", "n1"), series("50", "0", "n2")]
    scraped = [series("1000", "0", "n1"), series("1100", "0", "n2")]
    telemetry = parse_query_results(util, scraped=scraped)
    fresh, problem = usable_telemetry(telemetry, now=1150.0, max_age=60.0)
    assert fresh is not None and set(fresh.nodes) == {"n2"} and problem == ""
    gone, problem = usable_telemetry(telemetry, now=1300.0, max_age=60.0)
    assert gone is None
    assert problem == "DCGM telemetry is stale: the newest scrape is 200s old (limit 60s)"
    assert usable_telemetry(None, now=0.0, max_age=60.0) == (None, "")


def test_fetch_reads_health_series_and_scrape_times(
    fake_prometheus: tuple[str, type[_FakePrometheus]],
) -> None:
    url, handler = fake_prometheus
    handler.answers = {
        "DCGM_FI_DEV_GPU_UTIL": UTIL,
        HEALTH_QUERY: [named(XID_METRIC, "48", "0", "n2")],
        "timestamp(DCGM_FI_DEV_GPU_UTIL)": [series("1764299990", "0", "n1")],
    }
    telemetry = fetch_gpu_telemetry(url)
    assert telemetry.faults() == {"n2": "GPU 0: XID 48"}
    assert telemetry.newest_scrape() == 1764299990.0
