"""The operator's memory over a long run with jobs arriving and finishing (issue 10's soak).

    .venv/bin/python tests/bench/bench_soak.py [--minutes 60] [--rate 2] [--idle-jobs 2000]

Creates ``--idle-jobs`` suspended InferenceJobs (unfinished jobs that stay), then for
``--minutes`` creates ``--rate`` in-cluster jobs a second on a fake node with 1,000 GPUs;
KWOK completes their Pods after a few seconds, the jobs succeed, and the script deletes
finished jobs a minute after they end, as a platform's clean-up would. Prints the operator's
resident memory once a minute and, at the end, the curve's spread against its level after
the warm-up (target: flat, within 10 %).

Needs the local cluster (`make cluster-up`) and starts its own operator; cleans up after itself.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.bench_operator import (
    GROUP,
    PLURAL,
    VERSION,
    bench_cluster,
    job,
    namespace_with_policy,
    operator_running,
    rss_mib,
)
from tests.cluster import kubectl

WARM_UP_MINUTES = 5
"""Samples before this are the operator filling its caches, not the level to hold."""


def create_at_rate(
    api: client.CustomObjectsApi, ns: str, rate: float, until: float, created: Counter[str]
) -> None:
    interval = 1.0 / rate
    next_at = time.monotonic()
    pool = ThreadPoolExecutor(4)
    i = 0
    while time.monotonic() < until:
        name = f"s{i:06d}"
        i += 1
        pool.submit(
            api.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, job(name, ns, False)
        )
        created["jobs"] += 1
        next_at += interval
        time.sleep(max(next_at - time.monotonic(), 0.0))
    pool.shutdown(wait=True)


def sweep(
    api: client.CustomObjectsApi, ns: str, ended: dict[str, float], tally: Counter[str]
) -> None:
    """Delete jobs that ended over a minute ago; count phases."""
    found = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    phases: Counter[str] = Counter()
    now = time.monotonic()
    for obj in found.get("items") or []:
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        phases[phase] += 1
        if phase in ("Succeeded", "Failed"):
            first = ended.setdefault(name, now)
            if now - first > 60:
                with contextlib.suppress(client.exceptions.ApiException):  # already gone
                    api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                    tally[f"deleted {phase}"] += 1
    tally["unfinished now"] = sum(n for p, n in phases.items() if p not in ("Succeeded", "Failed"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="jobs created per second")
    parser.add_argument("--idle-jobs", type=int, default=2000)
    args = parser.parse_args()

    _, api = bench_cluster()
    suffix = time.strftime("%H%M%S")
    idle, ns = f"soak-idle-{suffix}", f"soak-{suffix}"
    with operator_running() as operator:
        pid = operator.proc.pid  # type: ignore[union-attr]
        namespace_with_policy(idle)
        namespace_with_policy(ns)
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: api.create_namespaced_custom_object(
                        GROUP, VERSION, idle, PLURAL, job(f"i{i:05d}", idle, True)
                    ),
                    range(args.idle_jobs),
                )
            )
        start = time.monotonic()
        until = start + args.minutes * 60
        created: Counter[str] = Counter()
        tally: Counter[str] = Counter()
        ended: dict[str, float] = {}
        creator = threading.Thread(target=create_at_rate, args=(api, ns, args.rate, until, created))
        creator.start()
        samples: list[tuple[float, float]] = []
        print("minute  rss_MiB  created  deleted  unfinished", flush=True)
        while time.monotonic() < until:
            time.sleep(60)
            sweep(api, ns, ended, tally)
            minute = (time.monotonic() - start) / 60
            rss = rss_mib(pid)
            samples.append((minute, rss))
            deleted = tally["deleted Succeeded"] + tally["deleted Failed"]
            print(
                f"{minute:6.1f}  {rss:7.0f}  {created['jobs']:7d}  {deleted:7d}  "
                f"{tally['unfinished now']:10d}",
                flush=True,
            )
        creator.join()
        steady = [rss for minute, rss in samples if minute >= WARM_UP_MINUTES]
        if steady:
            level = statistics.median(steady)
            spread = (max(steady) - min(steady)) / level * 100
            print(
                f"after {WARM_UP_MINUTES} min: median {level:.0f} MiB, min {min(steady):.0f}, "
                f"max {max(steady):.0f}, spread {spread:.1f} % of the median; "
                f"first {steady[0]:.0f}, last {steady[-1]:.0f}"
            )
        print(f"jobs created {created['jobs']}; {dict(tally)}")
        kubectl("delete", "namespace", ns, idle, "--timeout=1800s", check=False, timeout=1900)
    return 0


if __name__ == "__main__":
    sys.exit(main())
