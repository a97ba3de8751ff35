"""A test-side node agent: the kubelet of one fake GPU node, running containers as processes.

In the spirit of virtual-kubelet's process providers: it registers a Node (GPU capacity, GPU
Feature Discovery labels, the GPU taint) that KWOK does not manage (KWOK manages only Nodes
annotated ``kwok.x-k8s.io/node=fake``, hack/kwok-stages/kwok.yaml, so none of its Stages
complete this node's Pods), keeps its Lease and Ready condition fresh, watches the Pods bound
to it, and runs each container's command as a local process for the images the test maps to
local programs. It reports what a kubelet reports through the ``pods/status`` subresource:
phase, start time, conditions and container statuses with the real exit codes.

What a process provider cannot do it does openly:
- an image is a table entry (:class:`Image`): its default command, and local programs for the
  executables the Job may name (``vllm`` -> the vLLM stand-in);
- a volume mount is a per-Pod directory: an argument or env value that is a mount path (or
  below one) is rewritten to that directory, as a bind mount would show it;
- the Pod's network namespace is the host's loopback (a sidecar's port 8000 is 127.0.0.1:8000).
Commands and args are expanded as the kubelet does (``$(VAR)`` from the container's env,
``$$`` for a literal ``$``); env ``valueFrom`` is not supported (the Jobs here use none).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.cluster import REPO_ROOT, kubeconfig_path

log = logging.getLogger(__name__)
LOGS = REPO_ROOT / ".local" / "logs"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
"""The taint of this node's GPUs: the operator's default exact toleration matches it."""
GRACE_CAP = 30.0
"""The longest termination grace the agent gives a main container (tests wait on it)."""
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class Image:
    """What an image runs here: its default command, and programs for executables in it."""

    entrypoint: tuple[str, ...] = ()
    executables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def standin_images(python: str) -> dict[str, Image]:
    """The runtimes' images as the stand-ins here: vLLM's ``vllm`` runs the ``run-batch``
    stand-in, the ai-runner its stand-in, the operator's image this package's CLI."""
    return {
        "vllm/vllm-openai": Image(
            executables={"vllm": (python, "-m", "tests.incluster.vllm_standin")}
        ),
        "livepeer/ai-runner": Image(entrypoint=(python, "-m", "tests.incluster.ai_runner_standin")),
        "ghcr.io/hybridgpu/hybridgpu": Image(
            executables={"hybridgpu": (python, "-m", "hybridgpu.cli")}
        ),
    }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command and args (``$$`` escapes a ``$``)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(one, text)


def repository(image: str) -> str:
    """``vllm/vllm-openai:v0.11.0`` -> ``vllm/vllm-openai`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass
class _Running:
    pod: dict[str, Any]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)


class NodeAgent:
    """Registers ``name`` as a GPU node and runs the Pods bound to it."""

    def __init__(
        self,
        name: str,
        gpu_product: str,
        images: Mapping[str, Image],
        gpus: int = 1,
        memory_mib: int = 24576,
    ) -> None:
        self.name = name
        self.gpu_product = gpu_product
        self.images = dict(images)
        self.gpus = gpus
        self.memory_mib = memory_mib
        api = config.new_client_from_config(str(kubeconfig_path()))  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.running: dict[str, _Running] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        """Pod UID -> the status last reported for a finished Pod."""
        self.argv: dict[str, dict[str, list[str]]] = {}
        """Pod name -> container -> the argv it ran (after expansion and mount rewriting)."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping: set[str] = set()
        """UIDs of deleted Pods whose processes are being stopped: the Pod stays until they are
        gone, as the kubelet removes a Pod only once its containers have stopped."""

    # -- the node -------------------------------------------------------------------------

    def node_body(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "process-agent",
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": self.gpu_product,
                    "nvidia.com/gpu.memory": str(self.memory_mib),
                    "nvidia.com/gpu.count": str(self.gpus),
                },
            },
            "spec": {"taints": [GPU_TAINT]},
        }

    def node_status(self) -> dict[str, Any]:
        resources = {"cpu": "16", "memory": "64Gi", "pods": "32", "nvidia.com/gpu": str(self.gpus)}
        stamp = now()
        return {
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process agent is posting ready status",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "v1.35.4",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "process://hybridgpu-test",
                    "kernelVersion": "",
                    "osImage": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }

    def _heartbeat(self) -> None:
        lease_ns = "kube-node-lease"
        while not self._stop.is_set():
            try:
                self.core.patch_node_status(self.name, self.node_status())
                micro = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                body = {
                    "metadata": {"name": self.name, "namespace": lease_ns},
                    "spec": {
                        "holderIdentity": self.name,
                        "leaseDurationSeconds": 40,
                        "renewTime": micro,
                    },
                }
                try:
                    self.coordination.patch_namespaced_lease(self.name, lease_ns, body)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    self.coordination.create_namespaced_lease(lease_ns, body)  # type: ignore[arg-type]
            except Exception:
                log.exception("node heartbeat failed")
            self._stop.wait(10)

    # -- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        try:
            self.core.delete_node(self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.core.create_node(self.node_body())  # type: ignore[arg-type]
        self.core.patch_node_status(self.name, self.node_status())
        for target in (self._heartbeat, self._watch):
            thread = threading.Thread(target=target, daemon=True, name=f"agent-{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            running = list(self.running.values())
        for run in running:
            self._kill(run)
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    # -- pods -----------------------------------------------------------------------------

    def _watch(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    timeout_seconds=20,
                    _request_timeout=30,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    pod = self.core.api_client.sanitize_for_serialization(event["object"])
                    self._on_pod(event["type"], pod)
            except Exception:
                if not self._stop.is_set():
                    log.exception("pod watch failed; restarting")
                    time.sleep(1)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if kind == "DELETED":
            with self._lock:
                run = self.running.pop(uid, None)
            if run is not None:
                self._kill(run)
            return
        if meta.get("deletionTimestamp"):
            with self._lock:
                if uid in self._stopping:
                    # Later events of a Pod being stopped (its finalizers going, status) leave
                    # it to the thread stopping it: removing the Pod before its processes are
                    # gone would let a new Pod's sidecar find their port taken.
                    return
                run = self.running.pop(uid, None)
                self._stopping.add(uid)
            # Off the watch thread: a main container may take its grace period to stop.
            threading.Thread(target=self._stop_deleted, args=(meta, run), daemon=True).start()
            return
        phase = (pod.get("status") or {}).get("phase")
        with self._lock:
            if uid in self.running or uid in self.finished or phase in ("Succeeded", "Failed"):
                return
            run = _Running(pod=pod)
            self.running[uid] = run
        threading.Thread(target=self._run_pod, args=(run,), daemon=True).start()

    def _stop_deleted(self, meta: dict[str, Any], run: _Running | None) -> None:
        try:
            if run is not None:
                self._kill(run)
            # The kubelet's last word on a deleted Pod: remove it now that nothing runs.
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("deleting pod %s failed: %s", meta["name"], exc)
        finally:
            with self._lock:
                self._stopping.discard(meta["uid"])

    def _kill(self, run: _Running) -> None:
        """As the kubelet stops a deleted Pod: SIGTERM to the main containers, which get the
        Pod's terminationGracePeriodSeconds (at most GRACE_CAP here) before SIGKILL, and only
        then to the native sidecars (KEP-753), which serve the mains until they are done."""
        run.stopped.set()
        spec = run.pod.get("spec") or {}
        grace = min(float(spec.get("terminationGracePeriodSeconds") or 30), GRACE_CAP)
        mains = {c["name"] for c in spec.get("containers") or []}
        for name, proc in run.processes.items():
            if name in mains:
                _terminate(proc, grace)
        for name, proc in run.processes.items():
            if name not in mains:
                _terminate(proc)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # a Pod deleted meanwhile has nothing left to report
                raise

    def _run_pod(self, run: _Running) -> None:
        pod = run.pod
        meta, spec = pod["metadata"], pod["spec"]
        started = now()
        workdir = Path(tempfile.mkdtemp(prefix=f"agent-{meta['name'][:40]}-"))
        volumes = {v["name"]: workdir / "volumes" / v["name"] for v in spec.get("volumes") or []}
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        sidecars = [
            c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
        ]
        mains = list(spec.get("containers") or [])
        try:
            for container in sidecars + mains:
                run.processes[container["name"]] = self._start(meta, container, volumes, workdir)
        except Exception as exc:
            log.exception("starting %s failed", meta["name"])
            self._report_failed_start(run, started, str(exc))
            return
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("Initialized", "ContainersReady", "Ready")
                ],
                "initContainerStatuses": [_running(c, started) for c in sidecars],
                "containerStatuses": [_running(c, started) for c in mains],
            },
        )
        codes = {c["name"]: run.processes[c["name"]].wait() for c in mains}
        finished = now()
        for container in sidecars:  # native sidecars stop once the main containers are done
            _terminate(run.processes[container["name"]])
        if run.stopped.is_set():
            return
        ok = all(code == 0 for code in codes.values())
        status = {
            "phase": "Succeeded" if ok else "Failed",
            "conditions": [
                {
                    "type": t,
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished,
                }
                for t in ("ContainersReady", "Ready")
            ],
            "initContainerStatuses": [
                _terminated(c, run.processes[c["name"]].returncode, started, finished)
                for c in sidecars
            ],
            "containerStatuses": [
                _terminated(c, codes[c["name"]], started, finished) for c in mains
            ],
        }
        with self._lock:
            self.running.pop(meta["uid"], None)
            self.finished[meta["uid"]] = status
        self._patch_status(pod, status)

    def _report_failed_start(self, run: _Running, started: str, message: str) -> None:
        for proc in run.processes.values():
            _terminate(proc)
        status = {
            "phase": "Failed",
            "startTime": started,
            "message": message[:1000],
            "reason": "ProcessStartFailed",
        }
        with self._lock:
            self.running.pop(run.pod["metadata"]["uid"], None)
            self.finished[run.pod["metadata"]["uid"]] = status
        self._patch_status(run.pod, status)

    def _start(
        self,
        meta: dict[str, Any],
        container: dict[str, Any],
        volumes: dict[str, Path],
        workdir: Path,
    ) -> subprocess.Popen[bytes]:
        mounts = {
            m["mountPath"].rstrip("/"): volumes[m["name"]]
            for m in container.get("volumeMounts") or []
            if m["name"] in volumes
        }
        declared = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
        env = {k: _rewrite(v, mounts) for k, v in declared.items()}
        argv = [_rewrite(expand(a, declared), mounts) for a in self._argv(container)]
        self.argv.setdefault(meta["name"], {})[container["name"]] = argv
        log_path = LOGS / f"agent-{meta['name']}-{container['name']}.log"
        out = log_path.open("ab")
        process_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "operator")]),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=process_env,
            cwd=workdir,
            start_new_session=True,
        )

    def _argv(self, container: dict[str, Any]) -> list[str]:
        image = self.images.get(repository(container["image"]))
        if image is None:
            raise RuntimeError(f"image {container['image']} is not mapped to a local program")
        command = list(container.get("command") or [])
        args = list(container.get("args") or [])
        if not command:
            return [*image.entrypoint, *args]
        head = command[0]
        if head in image.executables:
            return [*image.executables[head], *command[1:], *args]
        if shutil.which(head) is None:
            raise RuntimeError(f"{head} (in image {container['image']}) is not mapped here")
        return command + args

    def wait_finished(self, pod_name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                running = any(r.pod["metadata"]["name"] == pod_name for r in self.running.values())
            if not running and pod_name in self.argv:
                return
            time.sleep(0.2)
        raise AssertionError(f"pod {pod_name} did not finish within {timeout}s")


def _rewrite(value: str, mounts: Mapping[str, Path]) -> str:
    for path, local in mounts.items():
        if value == path or value.startswith(path + "/"):
            return str(local) + value[len(path) :]
    return value


def _running(container: dict[str, Any], started: str) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": True,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": started}},
    }


def _terminated(
    container: dict[str, Any], code: int | None, started: str, finished: str
) -> dict[str, Any]:
    exit_code = code if code is not None and code >= 0 else 128 + abs(code or 9)
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": started,
                "finishedAt": finished,
            }
        },
    }


def _terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
