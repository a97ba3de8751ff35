"""What an in-cluster Job runs for each task, given the job's input and output URLs.

- ``llm``: vLLM's batch runner, ``vllm run-batch -i <input> -o <output> --model M``
  (``vllm/entrypoints/cli/run_batch.py``, arguments from ``vllm/entrypoints/openai/run_batch.py``
  ``make_arg_parser``: "If a URL is specified, the file should be available via HTTP GET" /
  "via HTTP PUT"; the output is uploaded with one PUT that must answer 200, as presigned S3
  PUTs do).
- ``text-to-image``, ``text-to-speech``: the Livepeer ai-runner serves the pipeline in the Pod
  (a native sidecar: an init container with ``restartPolicy: Always``, started with
  ``PIPELINE`` and ``MODEL_ID`` and listening on port 8000 as go-livepeer's AI worker starts it,
  ``ai/worker/docker.go``), and ``hybridgpu runner livepeer`` (operator/hybridgpu/runner/) feeds
  it the input lines and PUTs one output JSONL; the Pod ends when the runner exits.
- The pipelines whose requests are multipart media uploads (image-to-image, image-to-video,
  upscale, audio-to-text) have no in-cluster runner: in-cluster they run only as
  ``task: container`` (an :class:`Unsupported` error otherwise).
- ``container``: the user's image and command, with ``HYBRIDGPU_INPUT_URL`` and
  ``HYBRIDGPU_OUTPUT_URL`` in its environment.

The checkpoint's URLs (``HYBRIDGPU_CHECKPOINT_URL``, a PUT, and ``HYBRIDGPU_RESUME_URL``, a
GET, of one object per job) go to the programs that can resume: the hybridgpu runner and a
user's own command. vLLM's ``run-batch`` cannot (it always sends its whole input), so the llm
container running it does not get them: a credential no program reads is only one to leak.

The URLs travel in the container's environment only; commands refer to them as
``$(HYBRIDGPU_INPUT_URL)``, which the kubelet expands, so they are never part of a message the
operator writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hybridgpu import __version__
from hybridgpu.api.inferencejob import InferenceJobSpec, Task

INPUT_URL_ENV = "HYBRIDGPU_INPUT_URL"
OUTPUT_URL_ENV = "HYBRIDGPU_OUTPUT_URL"
CHECKPOINT_URL_ENV = "HYBRIDGPU_CHECKPOINT_URL"
RESUME_URL_ENV = "HYBRIDGPU_RESUME_URL"
INPUT_REF = f"$({INPUT_URL_ENV})"
OUTPUT_REF = f"$({OUTPUT_URL_ENV})"
CHECKPOINT_REF = f"$({CHECKPOINT_URL_ENV})"
RESUME_REF = f"$({RESUME_URL_ENV})"
CHECKPOINT_ENV = frozenset({CHECKPOINT_URL_ENV, RESUME_URL_ENV})
URL_ENV = frozenset({INPUT_URL_ENV, OUTPUT_URL_ENV}) | CHECKPOINT_ENV
"""The presigned URLs: credentials, given only to the container that reads them."""
SCRATCH = "/scratch"
"""An emptyDir every Job gets: HOME, model caches and temporary files of non-root runtimes."""
AI_RUNNER_PORT = 8000
AI_RUNNER_MODELS = "/models"
"""Where go-livepeer mounts the model directory into an ai-runner container."""

DEFAULT_RUNTIME_IMAGES = {
    Task.LLM: "vllm/vllm-openai:v0.11.0",
    # go-livepeer's pipelineToImage (ai/worker/docker.go): one image per pipeline, else :latest.
    Task.TEXT_TO_IMAGE: "livepeer/ai-runner:latest",
    Task.IMAGE_TO_IMAGE: "livepeer/ai-runner:latest",
    Task.IMAGE_TO_VIDEO: "livepeer/ai-runner:latest",
    Task.AUDIO_TO_TEXT: "livepeer/ai-runner:audio-to-text",
    Task.TEXT_TO_SPEECH: "livepeer/ai-runner:text-to-speech",
    Task.UPSCALE: "livepeer/ai-runner:latest",
}
"""Runtimes for tasks that name a model rather than an image; overridable per task with
HYBRIDGPU_RUNTIME_IMAGE_<TASK> (e.g. HYBRIDGPU_RUNTIME_IMAGE_LLM)."""
RUNNER_PIPELINES = frozenset({Task.TEXT_TO_IMAGE, Task.TEXT_TO_SPEECH})
"""Pipelines whose requests are JSON bodies, which ``hybridgpu runner livepeer`` can send."""
DEFAULT_RUNNER_IMAGE = f"ghcr.io/hybridgpu/hybridgpu:{__version__}"


class Unsupported(ValueError):
    """The job cannot run in-cluster as it is written (the message names the field)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Runtime:
    """The containers of one Job's Pod: ``main`` ends the Pod; ``sidecars`` serve it."""

    main: dict[str, Any]
    sidecars: list[dict[str, Any]] = field(default_factory=list)
    gpu_container: str = "inference"
    """The container that holds the job's GPUs."""


def runtime_image(spec: InferenceJobSpec) -> str:
    if spec.image:
        return spec.image
    override = os.environ.get(f"HYBRIDGPU_RUNTIME_IMAGE_{spec.task.name}")
    return override or DEFAULT_RUNTIME_IMAGES[spec.task]


def runner_image() -> str:
    """The image with the ``hybridgpu`` command (the chart sets it to the operator's own)."""
    return os.environ.get("HYBRIDGPU_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def runs_own_program(spec: InferenceJobSpec) -> bool:
    """Whether the container runs the user's own program (``task: container``, or an image and
    command that replace the task's runtime): the one a container network runs that may
    implement the checkpoint contract (docs/results.md). vLLM's ``run-batch``, the default
    there, cannot resume."""
    return spec.task is Task.CONTAINER or bool(spec.image and spec.command)


def build_runtime(spec: InferenceJobSpec, env: list[dict[str, Any]], has_urls: bool) -> Runtime:
    """The containers for ``spec``; ``env`` is what every container gets (user env + ours)."""
    if spec.task is Task.CONTAINER:
        return Runtime(main=_container(spec, env))
    if not has_urls:
        raise Unsupported(
            f"spec.input: task {spec.task.value} runs in-cluster only with an input and an "
            "output object (spec.input.source / the result store); without them its runtime "
            "would serve forever and read no request. Run it as task: container, or give it "
            "an input object",
            reason="NoInputObject",
        )
    if spec.task is Task.LLM:
        return Runtime(main=_vllm_batch(spec, env))
    if spec.task in RUNNER_PIPELINES:
        return _livepeer(spec, env)
    raise Unsupported(
        f"spec.task: {spec.task.value} takes media uploads, which no in-cluster runner sends "
        f"yet; in-cluster it runs only as task: container (runners exist for llm, "
        f"{', '.join(sorted(t.value for t in RUNNER_PIPELINES))})",
        reason="InClusterUnsupported",
    )


def _container(spec: InferenceJobSpec, env: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "inference", "image": runtime_image(spec), "env": env}
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    return container


def _vllm_batch(spec: InferenceJobSpec, env: list[dict[str, Any]]) -> dict[str, Any]:
    # A user's command replaces ours only with their own image; their args are extra
    # engine arguments (e.g. --max-model-len 8192).
    command = ["vllm", "run-batch", "-i", INPUT_REF, "-o", OUTPUT_REF]
    command += ["--output-tmp-dir", SCRATCH, "--model", spec.model or ""]
    own = list(spec.command or []) if runs_own_program(spec) else []
    if not own:  # run-batch cannot resume; a user's own program may
        env = [e for e in env if e["name"] not in CHECKPOINT_ENV]
    container: dict[str, Any] = {
        "name": "inference",
        "image": runtime_image(spec),
        "command": own or command,
        "env": env + _cache_env(),
    }
    if spec.args:
        container["args"] = list(spec.args)
    return container


def _livepeer(spec: InferenceJobSpec, env: list[dict[str, Any]]) -> Runtime:
    pipeline = spec.task.value
    server = {
        "name": "ai-runner",
        "image": runtime_image(spec),
        # A native sidecar: started before the runner, stopped when it exits.
        "restartPolicy": "Always",
        "env": [e for e in env if e["name"] not in URL_ENV]
        + [_env("PIPELINE", pipeline), _env("MODEL_ID", spec.model or "")]
        + _cache_env(),
        "ports": [{"name": "ai-runner", "containerPort": AI_RUNNER_PORT}],
        "volumeMounts": [{"name": "models", "mountPath": AI_RUNNER_MODELS}],
        "startupProbe": {
            # Loading a model takes minutes; the runner itself waits for /health too.
            "httpGet": {"path": "/health", "port": AI_RUNNER_PORT},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
    }
    urls = [e for e in env if e["name"] in URL_ENV]
    runner = {
        "name": "runner",
        "image": runner_image(),
        "command": ["hybridgpu", "runner", "livepeer"],
        "args": [
            "--pipeline",
            pipeline,
            "--model",
            spec.model or "",
            "--runner-url",
            f"http://127.0.0.1:{AI_RUNNER_PORT}",
            "--input-url",
            INPUT_REF,
            "--output-url",
            OUTPUT_REF,
            *_checkpoint_args({e["name"] for e in urls}),
        ],
        # The output is spooled to a file: TMPDIR on the scratch volume.
        "env": urls + _cache_env(),
    }
    return Runtime(main=runner, sidecars=[server], gpu_container="ai-runner")


def _checkpoint_args(names: set[str]) -> list[str]:
    # The kubelet leaves a $(VAR) of an unset variable as it is: name only those that are set.
    if not CHECKPOINT_ENV.issubset(names):
        return []
    return ["--checkpoint-url", CHECKPOINT_REF, "--resume-url", RESUME_REF]


def _cache_env() -> list[dict[str, str]]:
    # Runtimes run as a non-root user whose image HOME may not be writable.
    return [
        _env("HOME", SCRATCH),
        _env("HF_HOME", f"{SCRATCH}/huggingface"),
        _env("TMPDIR", SCRATCH),
    ]
