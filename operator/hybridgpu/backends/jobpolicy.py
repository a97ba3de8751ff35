"""What the operator allows an in-cluster Job to be: the limits a job author cannot lift.

The Job runs with the job author's image and command but the operator's authority to create
it, so its Pod passes Pod Security ``restricted`` (non-root, RuntimeDefault seccomp, no
capabilities, no privilege escalation), carries no ServiceAccount token, cannot choose which
of the node's GPUs it sees, tolerates only the taints the admin names exactly, and runs only
images the admin allows (when an allowlist is set).

Admin settings (the Helm chart sets them, see docs/incluster.md):
- ``HYBRIDGPU_IMAGE_ALLOWLIST``: JSON list of image patterns (``fnmatch``: ``*`` matches any
  text, ``/`` included), e.g. ``["ghcr.io/acme/*", "vllm/vllm-openai:*"]``; empty or unset
  means any image. It applies to ``spec.image``; the runtime images are the admin's own.
- ``HYBRIDGPU_GPU_TOLERATION``: the GPU nodes' taint in ``kubectl taint`` syntax,
  ``key[=value]:Effect`` (default ``nvidia.com/gpu=present:NoSchedule``, GKE's); empty for none.
- ``HYBRIDGPU_JOB_TOLERATIONS``: JSON list of further tolerations, each naming key and effect.
- ``HYBRIDGPU_GPU_NODE_SELECTOR``: JSON object of node labels, e.g. ``{"pool": "inference"}``:
  only nodes carrying all of them are the operator's GPU pool. The inventory counts no other
  node, and the Jobs' Pods must land on such a node; empty or unset means every GPU node.
- ``HYBRIDGPU_JOB_RUN_AS_USER``: the uid the Job's containers run as (default 1000): images
  built to run as root (vLLM's, the ai-runner's) would otherwise be refused by runAsNonRoot.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import timedelta
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends.runtimes import Unsupported

GPU_VISIBILITY_ENV = frozenset(
    {
        # nvidia-container-runtime / the device plugin decide these from the allocated GPUs.
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_MIG_CONFIG_DEVICES",
        "NVIDIA_MIG_MONITOR_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
    }
)
RESERVED_ENV_PREFIX = "HYBRIDGPU_"
"""The operator's own variables (the input and output URLs among them)."""
DEFAULT_GPU_TOLERATION = "nvidia.com/gpu=present:NoSchedule"
DEFAULT_RUN_AS_USER = 1000
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_TAINT = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>[A-Za-z]+)$")


class Misconfigured(Unsupported):
    """An operator setting is invalid: the admin's to fix, named in the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="OperatorMisconfigured")


def check_env(spec: InferenceJobSpec) -> None:
    """Refuse env that would pick the node's GPUs or override the operator's variables."""
    for index, var in enumerate(spec.env or []):
        upper = var.name.upper()
        if upper in GPU_VISIBILITY_ENV:
            raise Unsupported(
                f"spec.env[{index}].name: {var.name} may not be set: which GPUs a job sees is "
                "decided by the GPUs Kubernetes allocates to it",
                reason="InvalidInput",
            )
        if upper.startswith(RESERVED_ENV_PREFIX):
            raise Unsupported(
                f"spec.env[{index}].name: {var.name} may not be set: names starting with "
                f"{RESERVED_ENV_PREFIX} are the operator's",
                reason="InvalidInput",
            )


def image_allowlist() -> list[str]:
    raw = os.environ.get("HYBRIDGPU_IMAGE_ALLOWLIST", "").strip()
    if not raw:
        return []
    try:
        patterns = json.loads(raw)
    except json.JSONDecodeError:
        raise Misconfigured("HYBRIDGPU_IMAGE_ALLOWLIST is not a JSON list of strings") from None
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise Misconfigured("HYBRIDGPU_IMAGE_ALLOWLIST is not a JSON list of strings")
    return patterns


def check_image(spec: InferenceJobSpec) -> None:
    patterns = image_allowlist()
    if not patterns or not spec.image:
        return
    if not any(fnmatchcase(spec.image, p) for p in patterns):
        raise Unsupported(
            f"spec.image: {spec.image} is not allowed in-cluster by this cluster's image "
            f"allowlist ({', '.join(patterns)})",
            reason="ImageNotAllowed",
        )


def parse_taint(text: str) -> dict[str, Any]:
    """``key[=value]:Effect`` as the toleration that matches exactly that taint."""
    match = _TAINT.match(text.strip())
    if match is None or match["effect"] not in _EFFECTS:
        raise Misconfigured(
            f"HYBRIDGPU_GPU_TOLERATION: {text!r} is not key[=value]:Effect with Effect one of "
            f"{', '.join(_EFFECTS)}"
        )
    return {
        "key": match["key"],
        "operator": "Equal",
        "value": match["value"] or "",
        "effect": match["effect"],
    }


def tolerations() -> list[dict[str, Any]]:
    """The GPU taint's exact toleration plus the admin's, none of them blanket."""
    raw = os.environ.get("HYBRIDGPU_GPU_TOLERATION", DEFAULT_GPU_TOLERATION).strip()
    out = [parse_taint(raw)] if raw else []
    extra_raw = os.environ.get("HYBRIDGPU_JOB_TOLERATIONS", "").strip()
    try:
        extra = json.loads(extra_raw) if extra_raw else []
    except json.JSONDecodeError:
        raise Misconfigured("HYBRIDGPU_JOB_TOLERATIONS is not a JSON list") from None
    if not isinstance(extra, list):
        raise Misconfigured("HYBRIDGPU_JOB_TOLERATIONS is not a JSON list")
    for index, item in enumerate(extra):
        # Without a key a toleration matches every taint; without an effect, every effect.
        if not isinstance(item, dict) or not item.get("key") or not item.get("effect"):
            raise Misconfigured(
                f"HYBRIDGPU_JOB_TOLERATIONS[{index}]: a toleration needs a key and an effect "
                "(blanket tolerations are refused)"
            )
        out.append(dict(item))
    return out


def run_as_user() -> int:
    raw = os.environ.get("HYBRIDGPU_JOB_RUN_AS_USER", "").strip()
    if not raw:
        return DEFAULT_RUN_AS_USER
    if not raw.isdigit() or int(raw) == 0:
        raise Misconfigured("HYBRIDGPU_JOB_RUN_AS_USER must be a uid above 0")
    return int(raw)


def pod_security_context() -> dict[str, Any]:
    uid = run_as_user()
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def active_deadline_seconds(
    estimated: timedelta, max_run_time_factor: float, max_queue_time: timedelta
) -> int:
    """The Job's own deadline: a backstop for when the operator is not there to cancel.

    The operator cancels an attempt running longer than estimatedDuration × the policy's
    maxRunTimeFactor; the Job's clock starts at creation, so its queue time is added."""
    seconds = estimated.total_seconds() * max_run_time_factor + max_queue_time.total_seconds()
    return max(math.ceil(seconds), 1)


def gpu_node_selector() -> dict[str, str]:
    """The labels a node must carry to be in the operator's GPU pool; {} means every node."""
    return dict(_parse_node_selector(os.environ.get("HYBRIDGPU_GPU_NODE_SELECTOR", "").strip()))


@lru_cache(maxsize=4)
def _parse_node_selector(raw: str) -> tuple[tuple[str, str], ...]:
    # Cached: the node index asks on every Node event.
    name = "HYBRIDGPU_GPU_NODE_SELECTOR"
    try:
        parsed = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise Misconfigured(f"{name} is not a JSON object of node labels") from None
    if not isinstance(parsed, dict):
        raise Misconfigured(f"{name} is not a JSON object of node labels")
    for key, value in parsed.items():
        if not _LABEL_KEY.match(key) or len(key.rpartition("/")[0]) > 253:
            raise Misconfigured(f"{name}: {key!r} is not a label key")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise Misconfigured(f"{name}[{key!r}]: {value!r} is not a label value")
    return tuple(sorted(parsed.items()))
