"""``hybridgpu runner livepeer`` on a large batch: throughput and peak memory (bounded?).

    .venv/bin/python tests/bench/bench_runner.py [--requests 20000] [--prompt-bytes 200]

Starts the ai-runner stand-in (tests/incluster/ai_runner_standin.py, text-to-image: one 4x4
PNG per request, inlined as a data URL) and a local GET/PUT object server holding an input of
``--requests`` lines, runs the runner as its own process (as the Job runs it), and prints the
requests per second, the output size and the runner's peak RSS. Run it at two sizes: if memory
is bounded by the longest line, the peak RSS does not grow with the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.cluster import REPO_ROOT
from tests.incluster.objects import object_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def high_water_kib(pid: int) -> int:
    """The process's peak resident set since its exec (VmHWM), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--prompt-bytes", type=int, default=200)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'operator'}"}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.incluster.ai_runner_standin"],
        env={
            **env,
            "PIPELINE": "text-to-image",
            "MODEL_ID": "m",
            "HYBRIDGPU_AI_RUNNER_PORT": str(port),
        },
    )
    try:
        with object_server() as store:
            pad = "x" * args.prompt_bytes
            store.objects["in.jsonl"] = b"".join(
                json.dumps({"custom_id": f"r-{i}", "body": {"prompt": f"{i} {pad}"}}).encode()
                + b"\n"
                for i in range(args.requests)
            )
            started = time.perf_counter()
            runner = subprocess.Popen(
                [
                    sys.executable, "-m", "hybridgpu.cli", "runner", "livepeer",
                    "--pipeline", "text-to-image", "--model", "m",
                    "--runner-url", f"http://127.0.0.1:{port}",
                    "--input-url", store.url("in.jsonl"), "--output-url", store.url("out.jsonl"),
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            # VmHWM, sampled: the runner's own peak since its exec. (ru_maxrss would not do:
            # Linux carries the forking parent's RSS, here the whole input, into the child's.)
            peak_kib = 0
            while runner.poll() is None:
                peak_kib = max(peak_kib, high_water_kib(runner.pid))
                time.sleep(0.1)
            code = runner.returncode
            elapsed = time.perf_counter() - started
            out = store.objects.get("out.jsonl", b"")
            lines = out.count(b"\n")
    finally:
        server.terminate()
        server.wait(10)
    print(f"exit code:          {code}")
    print(f"requests:           {args.requests} ({len(store.objects['in.jsonl'])} input bytes)")
    print(f"output lines:       {lines} ({len(out)} bytes)")
    print(f"throughput:         {args.requests / elapsed:.0f} requests/s ({elapsed:.1f} s)")
    print(f"runner peak RSS:    {peak_kib / 1024:.1f} MiB (VmHWM of the runner process)")
    return 0 if code == 0 and lines == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
