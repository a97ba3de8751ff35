"""Wall time of a full replay of the bundled default trace (all policies and baselines).

Run: .venv/bin/python tests/bench/bench_simulate.py
Prints the time of each stage and the headline results; asserts nothing.
"""

from __future__ import annotations

import time

from hybridgpu.simulate.run import SimulationConfig, simulate


def main() -> None:
    start = time.perf_counter()
    report = simulate(SimulationConfig())
    elapsed = time.perf_counter() - start
    doc = report.to_json()
    decisions = len(report.workload.jobs) * len(report.results)
    print(f"jobs: {doc['workload']['jobs']} (of {doc['workload']['rows']} rows)")
    print(f"replays: {len(report.results)}, ~{decisions} routing calls at least")
    print(f"full replay incl. loading and lower bound: {elapsed:.2f}s")
    print(f"lower bound: ${doc['lower_bound_cost_usd']}")
    for r in doc["results"]:
        print(
            f"  {r['policy']:<20} ${r['total_cost_usd']:>12}  x{r['cost_vs_lower_bound']}"
            f"  SLO {r['slo_attainment']:.4f}  p95 start {r['p95_start_seconds']}s"
            f"  external {r['jobs_external']}  unfinished {r['unfinished']}"
        )


if __name__ == "__main__":
    main()
