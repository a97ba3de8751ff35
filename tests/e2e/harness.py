"""Processes for end-to-end tests: the stand-in networks and the operator, as users run them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hybridgpu.results.store import StoreConfig
from tests.cluster import REPO_ROOT, kubeconfig_path, kubectl

NETWORKS = ("livepeer", "akash", "openai", "nosana", "vastai")
BASE_PORT = int(os.environ.get("HYBRIDGPU_E2E_BASE_PORT", "28081"))
LOGS = REPO_ROOT / ".local" / "logs"
CREDENTIAL = "e2e-standin-key"
METRICS_PORT = BASE_PORT + 9
LIVENESS_PORT = BASE_PORT + 8


def endpoint(network: str, base_port: int = BASE_PORT) -> str:
    port = base_port + NETWORKS.index(network)
    return f"http://127.0.0.1:{port}" + ("/v1" if network == "openai" else "")


def control(network: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a stand-in's control API (/_faults, /_stats, /_reset)."""
    url = f"http://127.0.0.1:{BASE_PORT + NETWORKS.index(network)}{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def finished(namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    """The InferenceJob once it is Succeeded or Failed."""

    def done() -> dict[str, Any] | None:
        job = get("ij", name, namespace)
        phase = (job.get("status") or {}).get("phase")
        return job if phase in ("Succeeded", "Failed") else None

    return dict(wait_for(f"{name} to finish", done, timeout=timeout))


def result_store_env(store: StoreConfig) -> dict[str, str]:
    """The operator's environment for ``store`` as its default result store."""
    return {
        "HYBRIDGPU_RESULTS_ENDPOINT": store.endpoint,
        "HYBRIDGPU_RESULTS_BUCKET": store.bucket,
        "HYBRIDGPU_RESULTS_PREFIX": store.prefix,
        "HYBRIDGPU_RESULTS_ACCESS_KEY_ID": store.access_key_id,
        "HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY": store.secret_access_key,
    }


class Process:
    """A background process with its output in .local/logs/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{name}.log"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=REPO_ROOT,
        )

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def standin_config(path: Path) -> Path:
    """Offers the tests reason about, independent of the engine: cheapest 4090 is nosana."""
    config = {
        "timeScale": 240,
        "seed": 7,
        "requestLatencySeconds": 0.002,
        "startLatencySeconds": {"akash": 20, "nosana": 20, "vastai": 20},
        "apiKeys": dict.fromkeys(NETWORKS, CREDENTIAL),
        "offers": [
            {
                "network": "nosana",
                "gpuProduct": "NVIDIA-GeForce-RTX-4090",
                "memoryGiB": 24,
                "usdPerGpuHour": "0.29",
                "available": 8,
                "region": "eu-central",
            },
            {
                "network": "vastai",
                "gpuProduct": "NVIDIA-GeForce-RTX-4090",
                "memoryGiB": 24,
                "usdPerGpuHour": "0.34",
                "available": 8,
                "region": "us-east",
            },
            {
                "network": "akash",
                "gpuProduct": "NVIDIA-GeForce-RTX-4090",
                "memoryGiB": 24,
                "usdPerGpuHour": "0.39",
                "available": 8,
                "region": "us-west",
            },
            {
                "network": "akash",
                "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                "memoryGiB": 80,
                "usdPerGpuHour": "2.71",
                "available": 8,
                "region": "us-west",
            },
            {
                "network": "vastai",
                "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                "memoryGiB": 80,
                "usdPerGpuHour": "2.67",
                "available": 8,
                "region": "us-east",
            },
            {
                "network": "livepeer",
                "gpuProduct": "NVIDIA-GeForce-RTX-4090",
                "memoryGiB": 24,
                "usdPerGpuHour": "0.45",
                "available": 8,
                "region": "us-east",
            },
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def ports_free(base_port: int = BASE_PORT) -> list[int]:
    """Ports of the stand-ins that something already listens on (e.g. a stray earlier run)."""
    busy = []
    for offset in range(len(NETWORKS)):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", base_port + offset)) == 0:
                busy.append(base_port + offset)
    return busy


def standins_process(config: Path) -> Process:
    busy = ports_free()
    if busy:
        raise RuntimeError(
            f"ports {busy} are taken (a stray stand-in? `pgrep -fa 'networks serve'`); "
            "set HYBRIDGPU_E2E_BASE_PORT to use others"
        )
    return Process(
        "e2e-standins",
        [
            sys.executable,
            "-m",
            "hybridgpu.cli",
            "networks",
            "serve",
            "--config",
            str(config),
            "--base-port",
            str(BASE_PORT),
        ],
    )


def answers(network: str) -> bool:
    """Whether the stand-in of ``network`` is up."""
    try:
        control(network, "/_stats")
    except OSError:
        return False
    return True


@contextmanager
def running_stack(config: Path, prefix: str, operator: Process | None = None) -> Iterator[Process]:
    """Stand-ins from ``config``, ComputeProviders named ``prefix<network>`` and an operator
    (``operator_process()`` unless given), ready once it has refreshed the container
    markets' offers; everything is stopped on the way out."""
    standins = standins_process(config)
    standins.start()
    try:
        wait_for("stand-ins", lambda: answers("nosana"), timeout=30)
        install_providers(prefix)
        operator = operator or operator_process()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        operator.start()
        try:
            wait_for(
                "providers refreshed by this operator",
                lambda: all(
                    (get("cp", f"{prefix}{n}").get("status") or {}).get("lastRefreshTime", "")
                    >= started
                    for n in ("nosana", "vastai", "akash")
                ),
                timeout=60,
            )
            yield operator
        finally:
            remove_providers(prefix, operator)
            operator.kill()
    finally:
        standins.kill()


def remove_providers(prefix: str, operator: Process) -> None:
    """Delete the providers ``install_providers(prefix)`` made, while ``operator`` still runs
    to release their finalizers: providers left behind serve every later operator on this
    cluster (``make demo``'s jobs failed over to a test's stand-in whose circuit was open)."""
    names = [doc["metadata"]["name"] for doc in provider_manifests(prefix)]
    kubectl("delete", "cp", *names, "--ignore-not-found", "--wait=false", check=False)
    if not operator.alive():
        for name in names:
            clear_terminating("cp", name)
        return
    try:
        wait_for(
            f"the {prefix}* providers to be gone",
            lambda: not any(get("cp", name) for name in names),
            timeout=30,
        )
    except AssertionError:
        for name in names:
            clear_terminating("cp", name)


def operator_process(
    kubeconfig: Path | None = None,
    *extra: str,
    name: str = "e2e-operator",
    metrics_port: int = METRICS_PORT,
    liveness_port: int = LIVENESS_PORT,
) -> Process:
    """The operator as users run it; ``kubeconfig`` defaults to the cluster admin's."""
    return Process(
        name,
        [
            sys.executable,
            "-m",
            "hybridgpu.cli",
            "run",
            "--kubeconfig",
            str(kubeconfig or kubeconfig_path()),
            "--metrics-port",
            str(metrics_port),
            "--liveness",
            f"http://127.0.0.1:{liveness_port}/healthz",
            "--log-format",
            "plain",
            *extra,
        ],
    )


def provider_manifests(prefix: str) -> list[dict[str, Any]]:
    regions = {
        "livepeer": "us-east",
        "akash": "us-west",
        "openai": "global",
        "nosana": "eu-central",
        "vastai": "us-east",
    }
    docs: list[dict[str, Any]] = []
    for network in NETWORKS:
        spec: dict[str, Any] = {
            "type": network,
            "endpoint": endpoint(network),
            "region": regions[network],
            "trustTier": "verified",
            "priceRefreshInterval": "2s",
            "credentialsSecretRef": {
                "namespace": "hybridgpu-e2e",
                "name": "standin-key",
                "key": "apiKey",
            },
        }
        docs.append(
            {
                "apiVersion": "hybridgpu.dev/v1alpha1",
                "kind": "ComputeProvider",
                "metadata": {"name": f"{prefix}{network}"},
                "spec": spec,
            }
        )
    return docs


def install_providers(prefix: str) -> None:
    kubectl("create", "namespace", "hybridgpu-e2e", check=False)
    kubectl(
        "create",
        "secret",
        "generic",
        "standin-key",
        "-n",
        "hybridgpu-e2e",
        f"--from-literal=apiKey={CREDENTIAL}",
        check=False,
    )
    manifests = provider_manifests(prefix)
    for doc in manifests:
        clear_terminating("cp", doc["metadata"]["name"])
    text = "\n---\n".join(json.dumps(d) for d in manifests)
    kubectl("apply", "-f", "-", input=text)


def clear_terminating(kind: str, name: str, namespace: str | None = None) -> None:
    """Let a leftover object that is being deleted go, so that applying it creates it anew.

    An apply onto an object with a deletionTimestamp succeeds and changes nothing: the next
    operator then releases the finalizer and the object vanishes under the test (the chaos
    benchmark lost every ComputeProvider this way after a run that ended with its operator
    already stopped).
    """
    obj = get(kind, name, namespace)
    if not (obj.get("metadata") or {}).get("deletionTimestamp"):
        return
    where = ["-n", namespace] if namespace else []
    kubectl(
        "patch",
        kind,
        name,
        *where,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        check=False,
    )
    wait_for(f"{kind}/{name} gone", lambda: not get(kind, name, namespace), timeout=30)


def get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    result = kubectl(*args, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def event_reasons(namespace: str, name: str) -> list[str]:
    """The reasons of the Events about object ``name``, oldest first."""
    out = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    ).stdout
    return [str(e.get("reason")) for e in json.loads(out)["items"]]
