"""``hybridgpu networks serve`` as a process, the way the demo runs it."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from hybridgpu.standins.config import NETWORKS, load_config


def free_base_port() -> int:
    for _ in range(50):
        base = random.randint(20_000, 60_000)
        try:
            for offset in range(5):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no five free consecutive ports")


def test_serve_listens_on_consecutive_ports_until_interrupted(tmp_path: Path) -> None:
    config = tmp_path / "standins.yaml"
    config.write_text("timeScale: 120\napiKeys: {vastai: k}\n")
    base = free_base_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridgpu.cli",
            "networks",
            "serve",
            "--config",
            str(config),
            "--base-port",
            str(base),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().split() for _ in NETWORKS]
        assert [line[0] for line in lines] == list(NETWORKS)
        assert lines[2][1] == f"http://127.0.0.1:{base + 2}/v1"
        for offset, network in enumerate(NETWORKS):
            with urllib.request.urlopen(f"http://127.0.0.1:{base + offset}/_stats", timeout=5) as r:
                assert json.load(r)["network"] == network
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.returncode == 0


def test_serve_refuses_bad_config_and_non_loopback_hosts(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("timeScale: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "hybridgpu.cli", "networks", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "timeScale" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "hybridgpu.cli", "networks", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("offers:\n  - {network: vastai, gpuProduct: X, usdPerGpuHour: 1.5}\n")
    with pytest.raises(ValueError, match=r"offers.0.usdPerGpuHour"):
        load_config(config)
    config.write_text("offers: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(config)
