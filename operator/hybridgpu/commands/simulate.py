"""``hybridgpu simulate``: replay a workload through the routing engine and compare policies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridgpu.simulate.inputs import DEFAULT_JOBS, DEFAULT_NODES, DEFAULT_POLICIES, DEFAULT_PRICES
from hybridgpu.simulate.routers import BASELINES
from hybridgpu.simulate.run import (
    DEFAULT_CAPACITY_SCALE,
    PREEMPTIBLE_CHOICES,
    SimulationConfig,
    simulate,
)
from hybridgpu.simulate.workload import TraceError
from hybridgpu.units import parse_duration


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a workload trace through the routing engine and compare policies",
        description=(
            "Replay a workload (Alibaba GPU pod list or Azure LLM trace) with a virtual clock "
            "under each RoutingPolicy and three baselines; report cost and start-time SLOs "
            "against an offline lower bound. Every input has a bundled default."
        ),
    )
    parser.add_argument(
        "--jobs",
        type=Path,
        default=DEFAULT_JOBS,
        metavar="FILE",
        help="workload CSV, either trace format (default: bundled Alibaba trace)",
    )
    parser.add_argument(
        "--nodes",
        type=Path,
        default=DEFAULT_NODES,
        metavar="FILE",
        help="in-cluster nodes in the Alibaba node-list format",
    )
    parser.add_argument(
        "--capacity-scale",
        type=float,
        default=DEFAULT_CAPACITY_SCALE,
        metavar="F",
        help=f"keep this share of each GPU product's nodes (default {DEFAULT_CAPACITY_SCALE})",
    )
    parser.add_argument(
        "--prices",
        type=Path,
        default=DEFAULT_PRICES,
        metavar="FILE",
        help="price book CSV (default: bundled, with sources)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        action="append",
        metavar="FILE",
        help="RoutingPolicy YAML; repeatable (default: the bundled policies)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        choices=sorted(BASELINES),
        help="baselines to run beside the policies (default: all)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        metavar="H",
        help="only jobs arriving in the first H hours of the trace",
    )
    parser.add_argument(
        "--ls-start-within",
        default="5m",
        metavar="DURATION",
        help="startWithin given to latency-sensitive (LS) jobs (default 5m)",
    )
    parser.add_argument(
        "--preemptible",
        choices=PREEMPTIBLE_CHOICES,
        default=PREEMPTIBLE_CHOICES[0],
        help=(
            "jobs a policy with spec.preemption may evict: best-effort (no startWithin, the "
            "default) or none"
        ),
    )
    parser.add_argument(
        "--evict-on-networks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "let policies with spec.preemption also evict preemptible work on networks that "
            "can cancel, as the operator does (the default; --no-evict-on-networks evicts "
            "in-cluster work only, as the operator did before)"
        ),
    )
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write PNG charts into DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation; exit 2 on bad input with a message naming the file and place."""
    err = Console(stderr=True)
    try:
        ls_within = parse_duration(args.ls_start_within).total_seconds()
        if ls_within <= 0:
            raise ValueError(f"--ls-start-within must be above 0, got {args.ls_start_within!r}")
        if args.hours is not None and args.hours <= 0:
            raise ValueError(f"--hours must be above 0, got {args.hours}")
        config = SimulationConfig(
            jobs=args.jobs,
            nodes=args.nodes,
            prices=args.prices,
            policies=tuple(args.policy) if args.policy else DEFAULT_POLICIES,
            hours=args.hours,
            capacity_scale=args.capacity_scale,
            ls_start_within=ls_within,
            preemptible=args.preemptible,
            evict_on_networks=args.evict_on_networks,
            baselines=tuple(args.baseline) if args.baseline else tuple(BASELINES),
        )
        if args.format == "json":
            report = simulate(config)
        else:
            with Progress(
                TextColumn("{task.description:<20}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar:
                tasks: dict[str, Any] = {}

                def progress(name: str, done: int, total: int) -> None:
                    if name not in tasks:
                        tasks[name] = bar.add_task(name, total=total)
                    bar.update(tasks[name], completed=done)

                report = simulate(config, progress)
    except (TraceError, ValueError) as exc:
        # Plain stderr, unwrapped: the message carries file:line:column for editors and grep.
        sys.stderr.write(f"hybridgpu simulate: error: {exc}\n")
        return 2
    if args.format == "json":
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from hybridgpu.simulate.report import render_table

        out = Console()
        if not out.is_terminal:
            out = Console(width=160)  # piped: do not squeeze the table to 80 columns
        render_table(report, out)
    if args.plot:
        from hybridgpu.simulate.report import write_plots

        for path in write_plots(report, args.plot):
            err.print(f"wrote {path}")
    return 0
