"""``hybridgpu explain NAME``: the job's routing decision as a table, for humans."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from hybridgpu.api.inferencejob import InferenceJobStatus


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("explain", help="show why a job went where it went")
    parser.add_argument("name", help="InferenceJob name")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    parser.set_defaults(func=run)


def render(name: str, namespace: str, body: dict[str, Any], out: TextIO) -> None:
    """Write the decision table of one job's status."""
    status = InferenceJobStatus.model_validate(body.get("status") or {})
    out.write(f"InferenceJob {namespace}/{name}: {status.phase or 'Pending'}\n")
    if status.output is not None and status.output.uri:
        out.write(
            f"Output: {status.output.uri} ({status.output.summary or '?'} records, "
            f"{status.output.failed} failed, {status.output.bytes} bytes"
            + (f", {status.output.checksum}" if status.output.checksum else "")
            + f"); read it with: hybridgpu results {name} -n {namespace}\n"
        )
    decision = status.decision
    if decision is None:
        out.write("No routing decision yet.\n")
        return
    when = decision.time.isoformat() if decision.time else "?"
    out.write(f"Decision at {when} by policy {decision.policy!r}: {decision.outcome}\n")
    out.write(f"  {decision.message}\n")
    if decision.awaiting:
        out.write(f"  waiting for capacity at: {', '.join(decision.awaiting)}\n")
    out.write("\n")
    header = (
        "#",
        "CANDIDATE",
        "FEASIBLE",
        "EST. COST",
        "$/GPU-H",
        "START(s)",
        "SCORE",
        "ESTIMATE",
        "REASON",
    )
    rows = [header]
    for i, c in enumerate(decision.candidates, 1):
        rows.append(
            (
                str(i),
                c.name + (" *" if c.name == decision.target else ""),
                "yes" if c.feasible else "no",
                "" if c.estimated_cost is None else f"{c.estimated_cost:.4f}",
                "" if c.price_per_gpu_hour is None else f"{c.price_per_gpu_hour:.4f}",
                "" if c.expected_start_seconds is None else f"{c.expected_start_seconds:.0f}",
                "" if c.score is None else f"{c.score:.3f}",
                c.estimate,
                c.reason,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    if status.attempts:
        out.write("\nAttempts:\n")
        for a in status.attempts:
            out.write(
                f"  {a.attempt}. {a.provider} {a.gpu_product} -> {a.outcome}"
                + (f" ({a.reason}: {a.message})" if a.reason else "")
                + (f", cost {a.cost} USD" if a.cost is not None else "")
                + (f", evicted for {a.preempted_by}" if a.preempted_by else "")
                + "\n"
            )
        if status.preemptions:
            out.write(f"  preempted {status.preemptions} time(s)\n")


def run(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        print(
            f"cannot reach the cluster: {exc} (pass --kubeconfig FILE or set KUBECONFIG)",
            file=sys.stderr,
        )
        return 2
    api = client.CustomObjectsApi()
    try:
        body = api.get_namespaced_custom_object(
            "hybridgpu.dev", "v1alpha1", args.namespace, "inferencejobs", args.name
        )
    except ApiException as exc:
        if exc.status == 404:
            print(f"InferenceJob {args.namespace}/{args.name} not found", file=sys.stderr)
            return 1
        raise
    render(args.name, args.namespace, dict(body), sys.stdout)  # type: ignore[call-overload]
    return 0
