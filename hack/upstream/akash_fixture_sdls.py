"""SDLs the Akash adapter writes for a spread of jobs, as a JSON list (for the fixtures)."""

from __future__ import annotations

import json
from decimal import Decimal

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.akash import build_sdl

JOBS = [
    (
        {
            "task": "container",
            "image": "ghcr.io/example/batch:1",
            "input": {"requests": 100},
            "estimatedDuration": "10m",
            "gpu": {"count": 1},
        },
        "k1",
        "NVIDIA-GeForce-RTX-4090",
        None,
    ),
    (
        {
            "task": "llm",
            "model": "meta-llama/Llama-3.3-70B-Instruct",
            "image": "vllm/vllm-openai:v0.6",
            "command": ["python3", "-m", "batch"],
            "args": ["--in", "a&b<c>.jsonl", "--note", "naïve ✓"],
            "env": [{"name": "A_B", "value": "x=y & z"}],
            "input": {"requests": 7},
            "estimatedDuration": "2h30m",
            "gpu": {"count": 8},
        },
        "ns/job-2/1",
        "NVIDIA-H100-80GB-HBM3",
        Decimal("2.71"),
    ),
    (
        {
            "task": "container",
            "image": "img:1",
            "input": {"requests": 1},
            "estimatedDuration": "90s",
            "gpu": {"count": 2, "minMemory": "40Gi"},
        },
        "k3",
        "Tesla-T4",
        Decimal("0.3"),
    ),
]


def main() -> None:
    sdls = [
        build_sdl(InferenceJobSpec.model_validate(job), key, product, cap)
        for job, key, product, cap in JOBS
    ]
    print(json.dumps(sdls))


if __name__ == "__main__":
    main()
