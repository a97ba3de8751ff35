"""Operator throughput and memory on the local control plane (issue 10's targets).

    .venv/bin/python tests/bench/bench_operator.py [--jobs 1000] [--idle-jobs 10000]

1. Creates ``--jobs`` InferenceJobs at once (8 client threads) that fit on one fake node with
   1,000 GPUs, and watches them until every one has Routed=True: prints jobs/s, the
   creation-to-routed latency (client clock: create call issued -> watch event seen) and how
   many were ever told to wait (Routed=False) although the GPUs were free.
2. Creates ``--idle-jobs`` suspended InferenceJobs and prints the operator's resident memory once
   it has seen them all (an unfinished job is a cached body and a timer, no daemon).

Needs the local cluster (`make cluster-up`) and starts its own operator; cleans up after itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.cluster import ensure_cluster, kubectl
from tests.e2e.harness import Process, operator_process

GROUP, VERSION, PLURAL = "hybridgpu.dev", "v1alpha1", "inferencejobs"
PRODUCT = "NVIDIA-BENCH-1000"
NODE = "bench-gpu-node"


def bench_node() -> dict[str, Any]:
    capacity = {"cpu": "1000", "memory": "4000Gi", "nvidia.com/gpu": "1000", "pods": "2000"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "nvidia.com/gpu.product": PRODUCT,
                "nvidia.com/gpu.memory": "81920",
                "nvidia.com/gpu.count": "1000",
                "kubernetes.io/hostname": NODE,
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def job(name: str, ns: str, suspend: bool) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "task": "container",
            "image": "busybox",
            "input": {"requests": 1},
            "gpu": {"count": 1, "products": [PRODUCT]},
            "estimatedDuration": "10m",
            "placement": "InCluster",
            "suspend": suspend,
        },
    }


def namespace_with_policy(ns: str) -> None:
    kubectl("create", "namespace", ns, check=False)
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {
            "external": {"enabled": False},
            "inCluster": {"gpuPrices": [{"gpuProduct": "default", "pricePerGPUHour": "0.10"}]},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy))


def create_all(
    api: client.CustomObjectsApi, ns: str, count: int, suspend: bool, created: dict[str, float]
) -> None:
    def one(i: int) -> None:
        name = f"b{i:05d}"
        created[name] = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job(name, ns, suspend))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def _create_in_child(kubeconfig: str, ns: str, count: int, out: str) -> None:
    config.load_kube_config(config_file=kubeconfig)
    created: dict[str, float] = {}
    create_all(client.CustomObjectsApi(), ns, count, False, created)
    Path(out).write_text(json.dumps(created))


def create_elsewhere(kubeconfig: Path, ns: str, count: int) -> dict[str, float]:
    """``create_all`` in a process of its own: its threads would otherwise hold the GIL that
    the watcher needs to see each job when it is routed (CLOCK_MONOTONIC is system-wide)."""
    out = Path(f"/tmp/bench-operator-created-{os.getpid()}.json")
    child = multiprocessing.get_context("spawn").Process(
        target=_create_in_child, args=(str(kubeconfig), ns, count, str(out))
    )
    child.start()
    child.join()
    created: dict[str, float] = json.loads(out.read_text())
    out.unlink()
    return created


def watch_until(
    api: client.CustomObjectsApi,
    ns: str,
    count: int,
    wanted: str,
    seen: dict[str, float],
    timeout: float,
) -> None:
    """Record when each job is first seen with condition ``wanted``; re-watch until done."""
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        w = watch.Watch()
        stream = w.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, timeout_seconds=60
        )
        try:
            events = list_events(stream)
        except client.exceptions.ApiException:  # e.g. 504 "too large resource version"
            time.sleep(1)
            continue
        for event in events:
            obj = event["object"]
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c["type"] == wanted and c["status"] == "True" for c in conditions):
                seen.setdefault(obj["metadata"]["name"], time.monotonic())
            else:
                for c in conditions:
                    if c["type"] == wanted and c["status"] == "False":
                        if obj["metadata"]["name"] not in WAITED:
                            WAIT_REASONS[c.get("reason", "")] += 1
                        WAITED.add(obj["metadata"]["name"])
            if len(seen) >= count or time.monotonic() > deadline:
                w.stop()


def list_events(stream: Any) -> Any:
    """The watch's events as they come; a watch that fails at once raises here."""
    first = next(stream, None)
    if first is None:
        return iter(())

    def rest() -> Any:
        yield first
        try:
            yield from stream
        except client.exceptions.ApiException:
            return

    return rest()


WAITED: set[str] = set()
WAIT_REASONS: Counter[str] = Counter()
"""Jobs seen with the watched condition False before it became True."""


def wait_node_ready() -> None:
    kubectl("wait", "--for=condition=Ready", f"node/{NODE}", "--timeout=60s")


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(operator_pid: int) -> dict[str, int]:
    """The operator and the local control plane's daemons, by name."""
    found = {"operator": operator_pid}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if name in CONTROL_PLANE:
            found[name] = int(proc.name)
    return found


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):  # the process has ended
            out[name] = cpu_seconds(pid)
    return out


def api_requests() -> Counter[str]:
    """The API server's request counts by verb and resource (every client's together)."""
    text = kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        resource = labels.get("resource") or labels.get("subresource", "")
        if labels.get("resource") and labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb')} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_cluster() -> tuple[Path, client.CustomObjectsApi]:
    """The local control plane with the CRDs and the fake node of 1,000 GPUs."""
    kubeconfig = ensure_cluster()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "crds/")
    kubectl("apply", "-f", "-", input=json.dumps(bench_node()))
    wait_node_ready()
    config.load_kube_config(config_file=str(kubeconfig))
    return kubeconfig, client.CustomObjectsApi()


@contextlib.contextmanager
def operator_running() -> Iterator[Process]:
    """An operator of this checkout, settled; killed and the fake node removed after."""
    operator: Process = operator_process()
    operator.start()
    time.sleep(10)
    try:
        yield operator
    finally:
        operator.kill()
        kubectl("delete", "node", NODE, "--ignore-not-found")


def floor(kubeconfig: Path, count: int) -> int:
    """The burst's lower bound on this machine: the API server taking the creations alone."""
    ns = f"bench-floor-{time.strftime('%H%M%S')}"
    kubectl("create", "namespace", ns)
    pids = processes(os.getpid())
    del pids["operator"]  # none runs: the control plane's daemons only
    before = cpu_of(pids)
    start = time.monotonic()
    create_elsewhere(kubeconfig, ns, count)
    took = time.monotonic() - start
    used = {n: round(c - before[n], 1) for n, c in cpu_of(pids).items() if n in before}
    print(f"no operator: {count} jobs created in {took:.1f}s ({count / took:.1f}/s)")
    print(f"CPU seconds: {used}")
    kubectl("delete", "namespace", ns, "--timeout=600s", check=False, timeout=700)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--idle-jobs", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the operator's stacks during the burst with py-spy (collapsed format)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="only create the jobs, with no operator: how fast this API server takes them",
    )
    args = parser.parse_args()

    kubeconfig, api = bench_cluster()
    if args.floor:
        return floor(kubeconfig, args.jobs)
    with operator_running() as operator:
        suffix = time.strftime("%H%M%S")
        ns = f"bench-routing-{suffix}"
        namespace_with_policy(ns)
        created: dict[str, float] = {}
        routed: dict[str, float] = {}
        watcher = threading.Thread(
            target=watch_until, args=(api, ns, args.jobs, "Routed", routed, args.timeout)
        )
        watcher.start()
        pids = processes(operator.proc.pid)  # type: ignore[union-attr]
        cpu_before = cpu_of(pids)
        requests_before = api_requests()
        profiler = None
        if args.profile:
            profiler = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pids["operator"]),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    args.profile,
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
            )
        start = time.monotonic()
        created = create_elsewhere(kubeconfig, ns, args.jobs)
        created_in = time.monotonic() - start
        watcher.join()
        cpu_after = cpu_of(pids)
        requests = api_requests() - requests_before
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        elapsed = max(routed.values()) - start if routed else float("nan")
        latencies = sorted(routed[n] - created[n] for n in routed)
        print(f"jobs created at once: {args.jobs}; routed: {len(routed)}")
        print(f"told to wait on the way: {len(WAITED & set(routed))} {dict(WAIT_REASONS)}")
        print(f"all routed after {elapsed:.1f}s: {len(routed) / elapsed:.1f} jobs/s")
        print(
            f"creation->routed p50 {statistics.median(latencies):.2f}s "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f}s "
            f"max {latencies[-1]:.2f}s"
        )
        print(f"the client created them in {created_in:.1f}s")
        used = {n: round(cpu_after[n] - cpu_before[n], 1) for n in cpu_after if n in cpu_before}
        print(f"CPU seconds during the burst: {used}")
        per_job = {k: round(n / args.jobs, 2) for k, n in requests.most_common(12)}
        print(f"API requests per job (all clients), most frequent: {per_job}")

        idle = f"bench-idle-{suffix}"
        namespace_with_policy(idle)
        suspended: dict[str, float] = {}
        watcher = threading.Thread(
            target=watch_until,
            args=(api, idle, args.idle_jobs, "Suspended", suspended, args.timeout),
        )
        watcher.start()
        before = rss_mib(operator.proc.pid)  # type: ignore[union-attr]
        create_all(api, idle, args.idle_jobs, True, {})
        watcher.join()
        time.sleep(10)
        print(
            f"operator RSS: {before:.0f} MiB before, {rss_mib(operator.proc.pid):.0f} MiB "  # type: ignore[union-attr]
            f"with {len(suspended)} of {args.idle_jobs} idle jobs present and handled"
        )
        # While the operator runs, so that its finalizers are honoured and nothing is left.
        kubectl("delete", "namespace", ns, idle, "--timeout=1800s", check=False, timeout=1900)
    return 0


if __name__ == "__main__":
    sys.exit(main())
