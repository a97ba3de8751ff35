"""``hybridgpu dcgm-exporter serve``: the dcgm-exporter stand-in for fake (KWOK) GPU nodes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hybridgpu.telemetry.dcgm_exporter import DEFAULT_DRIVER_VERSION, load_counters
from hybridgpu.telemetry.server import DcgmExporterServer
from hybridgpu.telemetry.sources import KubernetesSource, Source, SourceError, StaticSource


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dcgm-exporter", help="serve fake NVIDIA dcgm-exporter metrics for the cluster's GPU nodes"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="serve /metrics on 127.0.0.1")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--kubeconfig", type=Path, help="read Nodes and Pods from this cluster")
    source.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help='read Nodes and Pods from FILE ({"nodes": [...], "pods": [...]} or a kubectl List)',
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--port", type=int, default=9400, help="port (default %(default)s)")
    serve.add_argument(
        "--interval", type=float, default=5.0, help="seconds between reads (default %(default)s)"
    )
    serve.add_argument("--collectors", "-f", type=Path, help="counters CSV (dcgm-exporter -f)")
    serve.add_argument("--driver-version", default=DEFAULT_DRIVER_VERSION)
    serve.add_argument(
        "--noise", type=float, default=3.0, help="utilisation jitter in percent points (0: none)"
    )
    serve.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help="inject DCGM field values, re-read when FILE changes: "
        '{"NODE[/GPU]": {"DCGM_FI_DEV_XID_ERRORS": 79}}',
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not 0 <= args.port <= 65535:
        print(f"--port: {args.port} is not a TCP port", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("--interval: must be positive", file=sys.stderr)
        return 2
    try:
        counters = load_counters(args.collectors)
        source: Source
        if args.kubeconfig:
            # A cluster may be briefly unreachable; the server keeps retrying it.
            source = KubernetesSource(args.kubeconfig)
        else:
            source = StaticSource(args.from_json)
            source.read()  # a file that cannot be read now will not fix itself: fail fast
        server = DcgmExporterServer(
            source,
            host=args.host,
            port=args.port,
            refresh_s=args.interval,
            counters=counters,
            driver_version=args.driver_version,
            noise=args.noise,
            faults_path=args.faults,
        )
    except (SourceError, ValueError, OSError) as exc:
        print(f"dcgm-exporter: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    server.start()
    logging.info("dcgm-exporter stand-in serving http://%s:%d/metrics", args.host, server.port)
    stopped.wait()
    server.stop()
    return 0
