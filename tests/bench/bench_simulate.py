"""Wall time and headline results of a full replay (all policies and baselines).

Run: .venv/bin/python tests/bench/bench_simulate.py [--jobs TRACE.csv]
Default: the bundled trace. With a product-constrained trace (for example
/work/shared/data/alibaba-gpu-v2023/openb_pod_list_gpuspec33.csv) it also prints, for the best
policy, the bound at that policy's own attainment. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hybridgpu.simulate.inputs import DEFAULT_JOBS, in_cluster_prices, load_nodes, load_prices
from hybridgpu.simulate.lowerbound import ServiceTargets, lower_bound
from hybridgpu.simulate.market import build_market
from hybridgpu.simulate.run import SimulationConfig, simulate, start_within_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=Path, default=DEFAULT_JOBS)
    args = parser.parse_args()
    config = SimulationConfig(jobs=args.jobs)
    start = time.perf_counter()
    report = simulate(config)
    elapsed = time.perf_counter() - start
    doc = report.to_json()
    decisions = len(report.workload.jobs) * len(report.results)
    print(f"jobs: {doc['workload']['jobs']} (of {doc['workload']['rows']} rows)")
    print(f"replays: {len(report.results)}, ~{decisions} routing calls at least")
    print(f"full replay incl. loading and lower bound: {elapsed:.2f}s")
    print(
        f"lower bound: ${doc['lower_bound_cost_usd']} ({doc['lower_bound_status']}), "
        f"slo_attainable {doc['slo_attainable']:.4f}, unservable_jobs {doc['unservable_jobs']}"
    )
    for r in doc["results"]:
        print(
            f"  {r['policy']:<20} ${r['total_cost_usd']:>12}  x{r['cost_vs_lower_bound']}"
            f"  SLO {r['slo_attainment']:.4f}  p95 start {r['p95_start_seconds']}s"
            f"  external {r['jobs_external']}  unfinished {r['unfinished']}"
        )
    if report.bound.slo_attainable < 1.0:
        policies = [r for r in report.results if r.policy in report.policy_names]
        best = min(policies, key=lambda r: r.total_cost)
        within = start_within_for(config)
        prices = load_prices(config.prices)
        own = lower_bound(
            report.workload.jobs,
            load_nodes(config.nodes, scale=config.capacity_scale),
            build_market(prices),
            in_cluster_prices(prices),
            [within(j) for j in report.workload.jobs],
            ServiceTargets(ls_min_on_time=best.slo_met),
        )
        print(
            f"bound at {best.policy}'s own attainment ({best.slo_met} of {best.slo_jobs} on "
            f"time): ${own.cost_usd} ({own.status}), x{float(best.total_cost / own.cost_usd):.4f}"
        )


if __name__ == "__main__":
    main()
