"""``hybridgpu run``: the operator itself (Kopf)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hybridgpu.settings import SETTINGS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the operator against the current cluster")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus with DCGM exporter series (env HYBRIDGPU_PROMETHEUS_URL)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port for /metrics, 0 to disable (env HYBRIDGPU_METRICS_PORT)",
    )
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="Kopf liveness endpoint URL"
    )
    parser.add_argument(
        "--peering",
        default=None,
        help="Kopf peering name for several replicas (default: standalone)",
    )
    parser.add_argument("--priority", type=int, default=0, help="Kopf peering priority")
    parser.add_argument("--log-format", choices=["json", "plain"], default=None)
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
        SETTINGS.kubeconfig = args.kubeconfig
    if args.prometheus_url is not None:
        SETTINGS.prometheus_url = args.prometheus_url
    if args.metrics_port is not None:
        SETTINGS.metrics_port = args.metrics_port
    if args.namespace:
        SETTINGS.namespaces = list(args.namespace)
    log_format = args.log_format or SETTINGS.log_format
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    import hybridgpu.handlers  # noqa: F401 - registers the handlers with Kopf

    kopf.run(
        clusterwide=not SETTINGS.namespaces,
        namespaces=SETTINGS.namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0
