"""Rendering a simulation: a terminal table and PNG charts."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridgpu.simulate.run import SimulationReport
from hybridgpu.units import format_money

HOUR = 3600.0


def render_table(report: SimulationReport, console: Console) -> None:
    """Print one row per policy and baseline, with the lower bound in the title."""
    w = report.workload
    bound = report.bound.cost_usd
    table = Table(
        title=(
            f"{len(w.jobs)} jobs from {Path(w.source).name} ({w.format}), "
            f"{report.gpus_in_cluster} in-cluster GPUs; "
            f"cost lower bound ${format_money(bound, 2)} ({report.bound.status}) "
            f"at {report.bound.slo_attainable:.2%} SLO attainable; "
            f"{report.bound.unservable_jobs} jobs unservable (no place offers their GPU type)"
        )
    )
    for header, justify in [
        ("policy", "left"),
        ("kind", "left"),
        ("total $", "right"),
        ("external $", "right"),
        ("x bound", "right"),
        ("external jobs", "right"),
        ("SLO met", "right"),
        ("p95 start", "right"),
        ("BE p95 start", "right"),
        ("preemptions", "right"),
        ("lost GPU-h", "right"),
        ("unfinished", "right"),
    ]:
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for r in report.results:
        ratio = f"{float(r.total_cost / bound):.3f}" if bound > 0 else "-"
        table.add_row(
            r.policy,
            "policy" if r.policy in report.policy_names else "baseline",
            format_money(r.total_cost, 2),
            format_money(r.external_cost, 2),
            ratio,
            str(r.jobs_external),
            f"{r.slo_attainment:.2%}",
            f"{r.p95_start_seconds:.0f}s",
            f"{r.best_effort_p95_start_seconds:.0f}s",
            str(r.preemptions),
            f"{r.lost_gpu_hours:.1f}",
            str(r.unfinished),
        )
    console.print(table)


def write_plots(report: SimulationReport, directory: Path) -> list[Path]:
    """Write cost-vs-SLO, spend-over-time and utilisation-over-time charts as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in report.results:
        marker = "o" if r.policy in report.policy_names else "s"
        # A legend, not annotations: policies often land on the same SLO and overlap.
        ax.scatter(float(r.total_cost), r.slo_attainment * 100, marker=marker, s=60, label=r.policy)
    if report.bound.cost_usd > 0:
        ax.axvline(float(report.bound.cost_usd), linestyle="--", color="grey", label="lower bound")
    # No schedule starts more latency-sensitive jobs in time than this.
    ax.axhline(
        report.bound.slo_attainable * 100,
        linestyle=":",
        color="black",
        label=f"SLO attainable ({report.bound.unservable_jobs} jobs unservable)",
    )
    ax.legend(fontsize=8)
    ax.set_xlabel("total cost (USD)")
    ax.set_ylabel("startWithin met (%)")
    ax.set_title("Cost vs SLO attainment (circles: policies, squares: baselines)")
    written.append(_save(fig, directory / "cost-vs-slo.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in report.results:
        if r.spend_series:
            ax.plot(
                [t / HOUR for t, _ in r.spend_series],
                [c for _, c in r.spend_series],
                label=r.policy,
            )
    ax.set_xlabel("hours since trace start")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Spend over time")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "spend-over-time.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in report.results:
        if r.utilisation_series:
            ax.step(
                [t / HOUR for t, _ in r.utilisation_series],
                [u * 100 for _, u in r.utilisation_series],
                where="post",
                label=r.policy,
            )
    ax.set_xlabel("hours since trace start")
    ax.set_ylabel("in-cluster GPUs in use (%)")
    ax.set_title("In-cluster utilisation over time")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "utilisation-over-time.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return path
