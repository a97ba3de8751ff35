"""The dcgm-exporter stand-in: exposition format, label set, values, sources and HTTP server."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybridgpu.cli import build_parser
from hybridgpu.inventory.pools import gpu_nodes_index, gpu_pods_index
from hybridgpu.telemetry.dcgm_exporter import (
    CountersFileError,
    FakeGpu,
    FaultsError,
    fake_gpus,
    framebuffer_mib,
    gpu_utilization,
    load_counters,
    parse_counters,
    parse_faults,
    render_metrics,
)
from hybridgpu.telemetry.server import DcgmExporterServer
from hybridgpu.telemetry.sources import SourceError, StaticSource
from tests.unit.inventory_objects import T4, node, pod

NOW = 1_764_300_000.0
REFERENCE_CSV = Path("/work/shared/reference/specs/dcgm-exporter-default-counters.csv")


def cluster() -> dict[str, list[dict[str, Any]]]:
    return {
        "nodes": [node("a1", 4), node("t1", 2, T4, 15360), node("cpu", None, None, None)],
        "pods": [
            pod("train", 2, "a1", namespace="ml"),
            pod("infer", 1, "t1"),
            pod("waiting", 1, "a1", "Pending"),
            pod("done", 1, "a1", "Succeeded"),
        ],
    }


def gpus() -> list[FakeGpu]:
    doc = cluster()
    nodes = [r for n in doc["nodes"] for r in gpu_nodes_index(n).values()]
    pods = [r for p in doc["pods"] for r in gpu_pods_index(p).values()]
    return fake_gpus(nodes, pods)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_one_gpu_per_allocatable_device_and_running_pods_hold_them() -> None:
    result = gpus()
    assert [(g.node, g.index) for g in result] == [("a1", i) for i in range(4)] + [
        ("t1", 0),
        ("t1", 1),
    ]
    holders = [g.holder.key if g.holder else None for g in result]
    assert holders == ["ml/train", "ml/train", None, None, "default/infer", None]


def test_exposition_parses_and_mirrors_the_counters_csv() -> None:
    text = render_metrics(gpus(), NOW)
    parsed = families(text)
    counters = [c for c in load_counters() if c.prom_type != "label"]
    assert len(counters) >= 20
    # prometheus_client strips a counter's _total suffix from the family name.
    names = {re.sub(r"_total$", "", c.field) for c in counters}
    assert set(parsed) == names
    for counter in counters:
        assert f"# HELP {counter.field} {counter.help}\n" in text
        assert f"# TYPE {counter.field} {counter.prom_type}\n" in text
    util = parsed["DCGM_FI_DEV_GPU_UTIL"]
    assert util.type == "gauge"
    assert len(util.samples) == 6


def test_label_set_and_order_follow_dcgm_exporter() -> None:
    text = render_metrics(gpus(), NOW)
    held = next(line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL{"))
    assert re.fullmatch(
        r'DCGM_FI_DEV_GPU_UTIL\{gpu="0",UUID="GPU-[0-9a-f-]{36}",pci_bus_id="00000000:07:00\.0",'
        r'device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="a1",'
        r'DCGM_FI_DRIVER_VERSION="535\.129\.03",container="main",namespace="ml",pod="train"\} \d+',
        held,
    ), held
    samples = families(text)["DCGM_FI_DEV_GPU_UTIL"].samples
    free = [s.labels for s in samples if s.labels["Hostname"] == "t1" and s.labels["gpu"] == "1"]
    assert free == [
        {
            "gpu": "1",
            "UUID": free[0]["UUID"],
            "pci_bus_id": "00000000:17:00.0",
            "device": "nvidia1",
            "modelName": "Tesla T4",
            "Hostname": "t1",
            "DCGM_FI_DRIVER_VERSION": "535.129.03",
        }
    ]
    uuids = {s.labels["UUID"] for s in samples}
    assert len(uuids) == 6


def test_held_gpus_are_busy_and_free_ones_idle_across_time() -> None:
    result = gpus()
    for t in range(0, 600, 7):
        for gpu in result:
            util = gpu_utilization(gpu, NOW + t)
            if gpu.holder is None:
                assert util == 0
            else:
                assert 70 <= util <= 95


def test_noise_varies_over_time_and_zero_noise_is_constant() -> None:
    held = gpus()[0]
    noisy = {gpu_utilization(held, NOW + 10 * k) for k in range(50)}
    assert len(noisy) > 1
    steady = {gpu_utilization(held, NOW + 10 * k, noise=0) for k in range(50)}
    assert len(steady) == 1


def test_framebuffer_adds_up_to_the_gpu_memory() -> None:
    for gpu in gpus():
        used, free, reserved = framebuffer_mib(gpu)
        assert used + free + reserved == gpu.memory_mib
        assert (used == 0) == (gpu.holder is None)
    samples = families(render_metrics(gpus(), NOW))["DCGM_FI_DEV_FB_FREE"].samples
    t4_free = [s.value for s in samples if s.labels["Hostname"] == "t1" and s.labels["gpu"] == "1"]
    assert t4_free == [15360 - round(15360 * 0.006)]


def test_energy_counter_only_grows() -> None:
    gpu = gpus()[0]

    def energy(now: float) -> float:
        text = render_metrics([gpu], now)
        fam = families(text)["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
        return float(fam.samples[0].value)

    assert energy(NOW) < energy(NOW + 1) < energy(NOW + 86_400)


def test_bundled_counters_match_the_reference_csv() -> None:
    if not REFERENCE_CSV.exists():
        pytest.skip(f"{REFERENCE_CSV} not present")
    assert load_counters() == parse_counters(REFERENCE_CSV.read_text())


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("DCGM_FI_DEV_GPU_UTIL, gauge\n", "x.csv:1:"),
        ("# c\nDCGM_FI_DEV_GPU_UTIL, histogram, h\n", "x.csv:2:23:"),
        ("GPU_UTIL, gauge, h\n", "x.csv:1:1:"),
    ],
)
def test_counters_csv_errors_name_line_and_column(text: str, where: str) -> None:
    with pytest.raises(CountersFileError, match=re.escape(where)):
        parse_counters(text, "x.csv")


def test_static_source_reports_bad_json_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text('{\n  "nodes": [\n    {"kind": }\n  ]\n}\n')
    with pytest.raises(SourceError, match=re.escape(f"{path}:3:") + r"\d+: invalid JSON"):
        StaticSource(path).read()


def test_static_source_accepts_a_kubectl_list(tmp_path: Path) -> None:
    doc = cluster()
    items = [{"kind": "Node", **n} for n in doc["nodes"]] + [
        {"kind": "Pod", **p} for p in doc["pods"]
    ]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"kind": "List", "items": items}))
    state = StaticSource(path).read()
    assert sorted(n.name for n in state.nodes) == ["a1", "t1"]
    assert sorted(p.key for p in state.pods) == ["default/infer", "default/waiting", "ml/train"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[DcgmExporterServer, Path]]:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(cluster()))
    server = DcgmExporterServer(StaticSource(path), port=0, refresh_s=0.05, clock=lambda: NOW)
    server.start()
    try:
        yield server, path
    finally:
        server.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_server_serves_metrics_and_follows_file_changes(
    served: tuple[DcgmExporterServer, Path],
) -> None:
    server, path = served
    base = f"http://127.0.0.1:{server.port}"
    status, ctype, body = get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    assert len(families(body)["DCGM_FI_DEV_GPU_UTIL"].samples) == 6
    assert get(base + "/health")[0] == 200
    assert get(base + "/nope")[0] == 404

    doc = cluster()
    doc["nodes"].append(node("a2", 8))
    path.write_text(json.dumps(doc))
    os.utime(path, (NOW + 5, NOW + 5))  # a new mtime even on coarse-grained filesystems
    server.refresh()
    samples = families(get(base + "/metrics")[2])["DCGM_FI_DEV_GPU_UTIL"].samples
    assert len(samples) == 14


def test_server_without_data_answers_503_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{oops")
    server = DcgmExporterServer(StaticSource(path), port=0, refresh_s=60)
    server.start()
    try:
        status, _, body = get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert status == 503
    assert f"{path}:1:2: invalid JSON" in body


def test_cli_registers_dcgm_exporter_serve() -> None:
    args = build_parser().parse_args(
        ["dcgm-exporter", "serve", "--from-json", "c.json", "--port", "19400"]
    )
    assert args.port == 19400
    assert args.from_json == Path("c.json")
    assert callable(args.func)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dcgm-exporter", "serve", "--port", "1"])


def _value(body: str, field: str, node_name: str, gpu: str) -> float:
    for sample in families(body)[field].samples:
        if sample.labels["Hostname"] == node_name and sample.labels["gpu"] == gpu:
            return float(sample.value)
    raise AssertionError(f"no {field} for {node_name}/{gpu}")


def test_injected_faults_replace_values_per_gpu_or_node() -> None:
    faults = parse_faults(
        {"a1/2": {"DCGM_FI_DEV_XID_ERRORS": 79}, "t1": {"DCGM_FI_DEV_ROW_REMAP_FAILURE": 1}}
    )
    body = render_metrics(gpus(), NOW, faults=faults)
    assert _value(body, "DCGM_FI_DEV_XID_ERRORS", "a1", "2") == 79
    assert _value(body, "DCGM_FI_DEV_XID_ERRORS", "a1", "1") == 0
    assert _value(body, "DCGM_FI_DEV_ROW_REMAP_FAILURE", "t1", "0") == 1
    assert _value(body, "DCGM_FI_DEV_ROW_REMAP_FAILURE", "t1", "1") == 1
    assert "DCGM_EXP_GPU_HEALTH_STATUS" not in body  # commented out in the default counters


def test_health_status_appears_when_the_counters_enable_it() -> None:
    counters = parse_counters(
        "DCGM_FI_DEV_GPU_UTIL, gauge, util\n"
        "DCGM_EXP_GPU_HEALTH_STATUS, gauge, Current DCGM-reported GPU health status.\n"
    )
    faults = parse_faults({"a1/0": {"DCGM_EXP_GPU_HEALTH_STATUS": 20}})
    body = render_metrics(gpus(), NOW, counters, faults=faults)
    assert _value(body, "DCGM_EXP_GPU_HEALTH_STATUS", "a1", "0") == 20
    assert _value(body, "DCGM_EXP_GPU_HEALTH_STATUS", "a1", "1") == 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected an object"),
        ({"a1/x": {}}, "key 'a1/x' must be NODE or NODE/INDEX"),
        ({"a1": {"XID": 1}}, "a1.XID: not a DCGM field name"),
        ({"a1": {"DCGM_FI_DEV_XID_ERRORS": "79"}}, "a1.DCGM_FI_DEV_XID_ERRORS: must be a number"),
    ],
)
def test_bad_faults_name_the_key(doc: object, message: str) -> None:
    with pytest.raises(FaultsError, match=re.escape(message)):
        parse_faults(doc, "faults.json")


def test_server_rereads_the_faults_file(served: tuple[DcgmExporterServer, Path]) -> None:
    server, path = served
    faults = path.parent / "faults.json"
    server.faults_path = faults
    base = f"http://127.0.0.1:{server.port}"
    server.refresh()
    assert _value(get(base + "/metrics")[2], "DCGM_FI_DEV_XID_ERRORS", "a1", "0") == 0
    faults.write_text(json.dumps({"a1/0": {"DCGM_FI_DEV_XID_ERRORS": 48}}))
    server.refresh()
    assert _value(get(base + "/metrics")[2], "DCGM_FI_DEV_XID_ERRORS", "a1", "0") == 48
    faults.write_text("{broken")
    os.utime(faults, (NOW + 9, NOW + 9))
    server.refresh()  # a bad file keeps the last good faults
    assert _value(get(base + "/metrics")[2], "DCGM_FI_DEV_XID_ERRORS", "a1", "0") == 48
    faults.unlink()
    server.refresh()
    assert _value(get(base + "/metrics")[2], "DCGM_FI_DEV_XID_ERRORS", "a1", "0") == 0
