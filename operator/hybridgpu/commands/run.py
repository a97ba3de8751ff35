"""``hybridgpu run``: the operator itself (Kopf)."""

from __future__ import annotations

import argparse
import os
from typing import Any, cast

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
        help="Kopf peering name, required to exist (default: peering 'hybridgpu' when Kopf's "
        "peering CRDs are installed, else standalone)",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="act without peering: only when no other replica can run",
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
    from hybridgpu.handlers import quiet

    quiet.install()
    from hybridgpu.controller.peering import DEFAULT_PEERING, own_identity

    if args.standalone and args.peering:
        raise SystemExit("hybridgpu run: --standalone and --peering exclude each other")
    settings = kopf.OperatorSettings()
    # Peering by default: Kopf uses it when its peering CRDs are installed (two replicas then
    # pause one another), and runs standalone with a warning when they are not.
    settings.peering.name = args.peering or DEFAULT_PEERING
    settings.peering.mandatory = args.peering is not None
    settings.peering.standalone = args.standalone
    settings.peering.priority = args.priority
    identity = own_identity()
    # The operator's own loops pause with Kopf (controller/peering.py): they need to know
    # which peer they are and by which rule to stand by.
    SETTINGS.peer_identity = identity
    SETTINGS.peering_name = None if args.standalone else settings.peering.name
    SETTINGS.peering_priority = args.priority
    kopf.run(
        settings=settings,
        identity=cast(Any, identity),  # Kopf's Identity is a NewType of str
        clusterwide=not SETTINGS.namespaces,
        namespaces=SETTINGS.namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0
