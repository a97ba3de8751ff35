#!/usr/bin/env python3
"""The demo's GPU nodes whose Pods really run: process agents (tests/incluster/agent.py).

The local cluster's KWOK nodes (hack/load-gpu-nodes.py) are capacity on paper: KWOK marks
their Pods Succeeded and nothing runs, so no output object is ever written and a job placed
there fails over with OutputMissing. The demo's operator counts only these nodes
(HYBRIDGPU_GPU_NODE_SELECTOR={"type": "process-agent"}, the label every agent node has); on
them the Jobs' runtimes are local programs: vLLM's batch runner and the ai-runner are the
e2e tests' stand-ins, and the example embedder image is tests/incluster/embedder_standin.py.
Each Job reads and writes the demo's SeaweedFS through the presigned URLs the operator gives.

    .venv/bin/python hack/demo-nodes.py     # until SIGTERM; then the nodes are deleted
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.incluster.agent import Image, NodeAgent, standin_images  # noqa: E402

PY = sys.executable
IMAGES = {
    **standin_images(PY),
    "ghcr.io/example/embedder": Image(entrypoint=(PY, "-m", "tests.incluster.embedder_standin")),
}
NODES = (
    # name, GFD product, GPUs, MiB per GPU
    ("demo-gpu-a10", "NVIDIA-A10", 4, 24576),
    ("demo-gpu-a100", "NVIDIA-A100-SXM4-80GB", 8, 81920),
)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agents = [NodeAgent(name, product, IMAGES, gpus, mib) for name, product, gpus, mib in NODES]
    for agent in agents:
        agent.start()
        logging.info("node %s (%s x%d) is up", agent.name, agent.gpu_product, agent.gpus)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for agent in agents:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
