"""One simulation: load the inputs, replay every policy and baseline, bound the cost, report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.simulate.inputs import (
    DEFAULT_JOBS,
    DEFAULT_NODES,
    DEFAULT_POLICIES,
    DEFAULT_PRICES,
    in_cluster_prices,
    load_nodes,
    load_prices,
)
from hybridgpu.simulate.lowerbound import LowerBound, attainable_bound
from hybridgpu.simulate.market import build_market
from hybridgpu.simulate.replay import Replay, Router, RunResult
from hybridgpu.simulate.routers import BASELINES, PolicyRouter, job_spec
from hybridgpu.simulate.workload import SimJob, TraceError, Workload, load_workload
from hybridgpu.units import format_money

DEFAULT_LS_START_WITHIN = 300.0
DEFAULT_CAPACITY_SCALE = 0.01
PREEMPTIBLE_CHOICES = ("best-effort", "none")
"""Which jobs get ``spec.preemptible: true``: those without a startWithin, or none. Only a
policy with ``spec.preemption`` evicts them."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to replay and against what."""

    jobs: Path = DEFAULT_JOBS
    nodes: Path = DEFAULT_NODES
    prices: Path = DEFAULT_PRICES
    policies: tuple[Path, ...] = DEFAULT_POLICIES
    hours: float | None = None
    capacity_scale: float = DEFAULT_CAPACITY_SCALE
    ls_start_within: float = DEFAULT_LS_START_WITHIN
    preemptible: str = PREEMPTIBLE_CHOICES[0]
    evict_on_networks: bool = True
    """Let policies that evict also evict work on networks that can cancel, as the operator
    does (``--no-evict-on-networks``: in-cluster only, as the operator did before)."""
    baselines: tuple[str, ...] = tuple(BASELINES)


@dataclass(frozen=True)
class SimulationReport:
    """Everything the command prints or plots."""

    workload: Workload
    gpus_in_cluster: int
    bound: LowerBound
    results: tuple[RunResult, ...]
    policy_names: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        """The ``--format json`` document; money as decimal strings per the project's rule."""
        w = self.workload
        return {
            "workload": {
                "source": w.source,
                "format": w.format,
                "rows": w.rows,
                "jobs": len(w.jobs),
                "skipped_cpu_only": w.skipped_cpu_only,
                "skipped_outside_horizon": w.skipped_outside_horizon,
                "latency_sensitive_jobs": sum(1 for j in w.jobs if j.latency_sensitive),
                "gpus_in_cluster": self.gpus_in_cluster,
            },
            "lower_bound_cost_usd": format_money(self.bound.cost_usd, 4),
            "lower_bound_status": self.bound.status,
            "slo_attainable": round(self.bound.slo_attainable, 6),
            "unservable_jobs": self.bound.unservable_jobs,
            "results": [
                {
                    "policy": r.policy,
                    "kind": "policy" if r.policy in self.policy_names else "baseline",
                    "total_cost_usd": format_money(r.total_cost, 4),
                    "external_cost_usd": format_money(r.external_cost, 4),
                    "jobs": r.jobs,
                    "jobs_external": r.jobs_external,
                    "slo_attainment": round(r.slo_attainment, 6),
                    "p95_start_seconds": round(r.p95_start_seconds, 3),
                    "unfinished": r.unfinished,
                    "cost_vs_lower_bound": _ratio(r.total_cost, self.bound.cost_usd),
                    "best_effort_p95_start_seconds": round(r.best_effort_p95_start_seconds, 3),
                    "preemptions": r.preemptions,
                    "preempted_jobs": r.preempted_jobs,
                    "lost_gpu_hours": round(r.lost_gpu_hours, 3),
                }
                for r in self.results
            ],
        }


def _ratio(cost: Decimal, bound: Decimal) -> float | None:
    return round(float(cost / bound), 4) if bound > 0 else None


def load_policy(path: Path) -> tuple[str, RoutingPolicySpec]:
    """A RoutingPolicy YAML (whole object or bare spec); errors name the file and place."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise TraceError(f"{path}:{where}: invalid YAML: {exc.problem}") from None
    if not isinstance(doc, dict):
        raise TraceError(f"{path}:1:1: expected a RoutingPolicy mapping")
    name = path.stem
    spec = doc
    if "spec" in doc or doc.get("kind") == "RoutingPolicy":
        if doc.get("kind", "RoutingPolicy") != "RoutingPolicy":
            raise TraceError(f"{path}: kind is {doc.get('kind')!r}, expected RoutingPolicy")
        name = str((doc.get("metadata") or {}).get("name") or name)
        spec = doc.get("spec") or {}
    try:
        return name, RoutingPolicySpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise TraceError(f"{path}: spec.{loc}: {first['msg']}") from None


def _with_prices(policy: RoutingPolicySpec, owned: dict[str, Decimal]) -> RoutingPolicySpec:
    # A policy without in-cluster prices would see free GPUs; give it the price book's.
    if policy.in_cluster.gpu_prices:
        return policy
    prices = [{"gpuProduct": p, "pricePerGPUHour": str(v)} for p, v in sorted(owned.items())]
    in_cluster = policy.in_cluster.model_copy(
        update={"gpu_prices": policy.in_cluster.model_validate({"gpuPrices": prices}).gpu_prices}
    )
    return policy.model_copy(update={"in_cluster": in_cluster})


def start_within_for(config: SimulationConfig) -> Callable[[SimJob], float | None]:
    """LS (and Guaranteed) jobs get the tight startWithin; BE and Burstable are cost-first."""

    def pick(job: SimJob) -> float | None:
        return config.ls_start_within if job.latency_sensitive else None

    return pick


def preemptible_for(config: SimulationConfig) -> Callable[[SimJob], bool]:
    """Best-effort jobs (no startWithin) may be evicted, or no job (``--preemptible none``)."""
    if config.preemptible not in PREEMPTIBLE_CHOICES:
        raise ValueError(
            f"unknown preemptible choice {config.preemptible!r}; known: "
            f"{', '.join(PREEMPTIBLE_CHOICES)}"
        )
    within = start_within_for(config)
    everyone_keeps_running = config.preemptible == "none"

    def pick(job: SimJob) -> bool:
        return not everyone_keeps_running and within(job) is None

    return pick


def simulate(
    config: SimulationConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> SimulationReport:
    """Replay the workload under every policy and baseline and bound the optimum."""
    workload = load_workload(config.jobs, hours=config.hours)
    nodes = load_nodes(config.nodes, scale=config.capacity_scale)
    prices = load_prices(config.prices)
    owned = in_cluster_prices(prices)
    market = build_market(prices)
    within = start_within_for(config)
    preemptible = preemptible_for(config)
    policies = [load_policy(p) for p in config.policies]
    names = [n for n, _ in policies]
    if len(set(names)) != len(names):
        raise TraceError(f"two policies share a name: {sorted(names)}")
    specs = [job_spec(j, within(j), preemptible(j)) for j in workload.jobs]
    routers: list[Router] = [
        PolicyRouter(n, _with_prices(p, owned), specs, evict_on_networks=config.evict_on_networks)
        for n, p in policies
    ]
    for name in config.baselines:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        routers.append(BASELINES[name]())
    results: list[RunResult] = []
    total = len(workload.jobs)
    for router in routers:
        replay = Replay(workload, nodes, market, owned, within, preemptible)

        def tick(done: int, name: str = router.name) -> None:
            if progress is not None:
                progress(name, done, total)

        results.append(replay.run(router, tick))
    bound = attainable_bound(
        workload.jobs, nodes, market, owned, [within(j) for j in workload.jobs]
    )
    return SimulationReport(
        workload,
        sum(n.gpus for n in nodes),
        bound,
        tuple(results),
        frozenset(names),
    )
