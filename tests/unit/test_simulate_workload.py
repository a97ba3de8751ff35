from __future__ import annotations

from pathlib import Path

import pytest

from hybridgpu.simulate.inputs import DEFAULT_JOBS, DEFAULT_NODES, load_nodes, load_prices
from hybridgpu.simulate.workload import TraceError, load_workload

HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)


def write(tmp_path: Path, text: str, name: str = "jobs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_alibaba_rows_map_to_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "p0,1000,1024,1,460,,LS,Running,100,700,100\n"
        + "p1,1000,1024,0,0,,BE,Running,0,50,0\n"
        + "p2,1000,1024,2,1000,V100M16|V100M32,BE,Succeeded,0,3600,5\n",
    )
    w = load_workload(path)
    assert w.format == "alibaba-pod-list"
    assert w.rows == 3
    assert w.skipped_cpu_only == 1
    first, second = w.jobs
    assert (first.name, first.arrival, first.duration, first.gpus) == ("p2", 0.0, 3600.0, 2)
    assert first.products == ("Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB")
    assert not first.latency_sensitive
    assert second.latency_sensitive
    assert second.gpu_milli == 460
    assert second.gpus == 1


def test_hours_keeps_early_arrivals(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "a,0,0,1,1000,,BE,Running,0,10,0\nb,0,0,1,1000,,BE,Running,7200,7300,7200\n",
    )
    w = load_workload(path, hours=1)
    assert [j.name for j in w.jobs] == ["a"]
    assert w.skipped_outside_horizon == 1


def test_azure_rows_become_one_request_llm_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,5000,50\n"
        "2023-11-16 18:15:50.9951690,396,109\n",
    )
    w = load_workload(path)
    assert w.format == "azure-llm"
    a, b = w.jobs
    assert a.arrival == 0.0
    assert b.arrival == pytest.approx(4.314579)
    assert a.duration == pytest.approx(5000 / 5000 + 50 / 50)
    assert (a.task, a.input_tokens, a.output_tokens) == ("llm", 5000, 50)


@pytest.mark.parametrize(
    ("row", "where", "words"),
    [
        ("p0,1000,1024,x,460,,LS,Running,100,700,100", ":2:14:", "num_gpu must be an integer"),
        ("p0,1000,1024,1,460,,LS,Running,100,50,100", ":2:36:", "before creation_time"),
        ("p0,1000,1024,1,460,H100,LS,Running,100,700,100", ":2:20:", "unknown gpu_spec"),
        ("p0,1000,1024,1,460,,XX,Running,100,700,100", ":2:21:", "qos must be one of"),
        ("p0,1000,1024,1,460", ":2:1:", "expected 11 fields"),
    ],
)
def test_bad_alibaba_rows_name_line_and_column(
    tmp_path: Path, row: str, where: str, words: str
) -> None:
    path = write(tmp_path, HEADER + row + "\n")
    with pytest.raises(TraceError) as err:
        load_workload(path)
    assert where in str(err.value)
    assert words in str(err.value)


def test_bad_azure_timestamp_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n")
    with pytest.raises(TraceError, match=r"jobs\.csv:2:1: TIMESTAMP"):
        load_workload(path)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(TraceError, match=r":1:1: unknown trace format"):
        load_workload(path)


def test_bundled_default_trace_loads() -> None:
    w = load_workload(DEFAULT_JOBS)
    assert w.rows == 8152
    assert len(w.jobs) + w.skipped_cpu_only == 8152
    assert all(j.gpus >= 1 and j.duration > 0 for j in w.jobs)


def test_nodes_scale_keeps_biggest_nodes_first() -> None:
    full = load_nodes(DEFAULT_NODES)
    assert sum(n.gpus for n in full) == 6212
    small = load_nodes(DEFAULT_NODES, scale=0.01)
    v100 = [n for n in small if n.gpu_product == "Tesla-V100-SXM2-16GB"]
    assert [n.gpus for n in v100] == [8]
    with pytest.raises(ValueError, match="capacity-scale"):
        load_nodes(DEFAULT_NODES, scale=0)


def test_bad_node_model_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,8,B200\n", "nodes.csv")
    with pytest.raises(TraceError, match=r"nodes\.csv:2:10: unknown GPU model 'B200'"):
        load_nodes(path)


def test_bad_price_names_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "provider,kind,gpu_product,gpu_memory_gib,usd_per_gpu_hour,as_of\n"
        "akash,depin,NVIDIA-A10,24,cheap,2026-01-01\n",
        "prices.csv",
    )
    with pytest.raises(TraceError, match=r"prices\.csv:2:27: usd_per_gpu_hour"):
        load_prices(path)
