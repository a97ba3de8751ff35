"""An offline lower bound on the cost of a workload: a linear programme solved by HiGHS.

The relaxation knows every job in advance and may split a job across places. Constraints:

* each job is placed once: on allowed in-cluster pools (product allowed, a node big enough) or
  externally (on offers of an allowed product);
* work cannot run before it arrives: for each arrival bucket k, the GPU-hours of jobs arriving
  at or after its start fit on each pool (and each external offer) between that start and the
  latest time any of those jobs could end in the replay (the external part is a small flow
  problem over jobs grouped by allowed products and bucket, not one variable per job and offer);
* latency-sensitive jobs must meet startWithin, so they are certainly running between
  ``arrival + startWithin`` and ``arrival + duration``: at the last span start before each
  span end (where that load has its local maxima, so this is as tight as every instant; see
  ``_peak_instants``), each pool and each external offer carries at most its GPUs.
  Best-effort jobs may move in time (forward only).
* optionally (``ServiceTargets``) a share of latency-sensitive jobs may be late, and
  best-effort jobs get a start target met by all but a share of them: each such job's on-time
  part ``y <= x`` is what the instants are charged with, and the late parts of a class sum to
  at most its budget (``late_budget``). An integral schedule meeting the targets sets ``y = x``
  for on-time jobs and ``y = 0`` for the late ones, so it is feasible here.

Every schedule the replay can produce that meets the targets (by default: every startWithin
met) satisfies these, so the optimum is a lower bound on its cost. The solver works in floating
point; the bound is turned into a Decimal rounded down to 1/100 of a cent at the edge.

When no schedule can meet every startWithin (GPU types offered nowhere, or too few GPUs of a
required type at a peak), ``attainable_bound`` first solves the same programme for the most
latency-sensitive jobs that can be on time (``slo_attainable``; an upper bound on what any
schedule attains, since the relaxation only widens the choice), then for the cheapest cost of
a schedule with that many on time. Jobs that no pool or offer can take (``unservable``) are left
out of both: no schedule runs them.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from hybridgpu.simulate.inputs import Node
from hybridgpu.simulate.market import MarketOffer
from hybridgpu.simulate.replay import GIVE_UP_AFTER_SECONDS
from hybridgpu.simulate.workload import SimJob

PEAK_INSTANTS = 20_000
"""At most this many local maxima of the surely-running load (the highest) get capacity rows."""
SOLVER_TOLERANCE = 1e-7
ON_TIME_TOLERANCE = 1e-6
"""Late jobs the solver may report above the true minimum (its feasibility tolerance); taken
off before rounding up, so that the attainable count is never understated into a loose bound
nor overstated past what the relaxation allows by more than this."""
BUCKETS = 64
"""Arrival-time buckets for the "work arriving later runs later" constraints."""


@dataclass(frozen=True, slots=True)
class LowerBound:
    """The bound and how it was obtained."""

    cost_usd: Decimal
    jobs_bounded: int
    jobs_without_any_option: int
    status: str
    gpu_hours_by_place: dict[str, float]
    """GPU-hours the optimum puts on each pool or external offer."""
    ls_jobs: int = 0
    """Jobs with a startWithin."""
    ls_on_time: int = 0
    """Of them, how many the bounded schedules start in time: every servable one by default;
    for ``attainable_bound`` the most that any schedule can."""
    ls_unservable: int = 0
    """Latency-sensitive jobs that no pool or offer can take (never on time)."""

    @property
    def unservable_jobs(self) -> int:
        """Jobs no pool or offer can take (no place offers their GPU type, or a node too small)."""
        return self.jobs_without_any_option

    @property
    def slo_attainable(self) -> float:
        """The best share of latency-sensitive jobs any schedule starts in time (1.0 if none)."""
        return self.ls_on_time / self.ls_jobs if self.ls_jobs else 1.0


@dataclass(frozen=True, slots=True)
class ServiceTargets:
    """The service levels a schedule must meet to count as feasible.

    ``ls_late_share`` of the jobs with a startWithin may start late; if ``be_start_within`` is
    set, at most ``be_late_share`` of the other (best-effort) jobs may start more than that
    after arriving (a p95 start-delay target). The defaults are the replay's hard rule: every
    startWithin met, best-effort jobs free to wait.
    """

    ls_late_share: float = 0.0
    be_start_within: float | None = None
    be_late_share: float = 0.05
    ls_min_on_time: int | None = None
    """If set (instead of ``ls_late_share``): at least this many latency-sensitive jobs, of all
    of them, unservable ones included, start within their startWithin."""


def late_budget(jobs: int, share: float) -> int:
    """The most jobs out of ``jobs`` that may miss a target met by ``1 - share`` of them.

    The replay's percentile is the element at index ``int(jobs * (1 - share))`` of the sorted
    delays, so at most ``jobs - int(jobs * (1 - share)) - 1`` are late; one more is allowed
    here against float rounding (a larger budget only loosens the bound).
    """
    if jobs <= 0:
        return 0
    return max(jobs - int(jobs * (1 - share)), 0)


def lower_bound(
    jobs: tuple[SimJob, ...],
    nodes: tuple[Node, ...],
    market: tuple[MarketOffer, ...],
    owned_prices: dict[str, Decimal],
    start_within: list[float | None],
    targets: ServiceTargets | None = None,
) -> LowerBound:
    """Solve the relaxation for ``jobs`` (``start_within[i]`` belongs to ``jobs[i]``).

    ``targets`` (default: every startWithin met, nothing asked of best-effort jobs) says which
    schedules are feasible; the result bounds the cost of each of them from below.
    """
    return _solve(jobs, nodes, market, owned_prices, start_within, targets or ServiceTargets())


def attainable_bound(
    jobs: tuple[SimJob, ...],
    nodes: tuple[Node, ...],
    market: tuple[MarketOffer, ...],
    owned_prices: dict[str, Decimal],
    start_within: list[float | None],
) -> LowerBound:
    """The cost bound at the best attainable share of on-time latency-sensitive jobs.

    If every startWithin can be met this is ``lower_bound`` itself. Otherwise it solves for the
    most latency-sensitive jobs on time (rounded down to whole jobs: a relaxation's optimum is
    at least any schedule's count, which is whole), then bounds the cost of every schedule
    that starts that many in time. A schedule that starts fewer in time may cost less; compare
    it with ``lower_bound(..., ServiceTargets(ls_min_on_time=its count))``.
    """
    strict = lower_bound(jobs, nodes, market, owned_prices, start_within)
    if strict.status in ("optimal", "empty"):
        return strict  # every servable latency-sensitive job can be on time
    best = _solve(
        jobs, nodes, market, owned_prices, start_within, ServiceTargets(), maximise_on_time=True
    )
    if best.status != "optimal":
        return best
    targets = ServiceTargets(ls_min_on_time=best.ls_on_time)
    bound = _solve(jobs, nodes, market, owned_prices, start_within, targets)
    if bound.status == "optimal":
        return replace(bound, status="optimal at attainable SLO")
    return bound


def _solve(
    jobs: tuple[SimJob, ...],
    nodes: tuple[Node, ...],
    market: tuple[MarketOffer, ...],
    owned_prices: dict[str, Decimal],
    start_within: list[float | None],
    targets: ServiceTargets,
    *,
    maximise_on_time: bool = False,
) -> LowerBound:
    """Build and solve the programme; ``maximise_on_time`` minimises late LS jobs instead."""
    windows: list[float | None] = [
        w if w is not None else targets.be_start_within for w in start_within
    ]
    is_ls = [w is not None for w in start_within]
    capacity: dict[str, int] = defaultdict(int)
    largest: dict[str, int] = defaultdict(int)
    for node in nodes:
        capacity[node.gpu_product] += node.gpus
        largest[node.gpu_product] = max(largest[node.gpu_product], node.gpus)
    pools = sorted(capacity)

    def allowed_pools(job: SimJob) -> list[str]:
        return [
            p
            for p in pools
            if (job.products is None or p in job.products) and largest[p] >= job.gpus
        ]

    def allowed_offers(job: SimJob) -> list[MarketOffer]:
        return [o for o in market if job.products is None or o.gpu_product in job.products]

    servable = [bool(allowed_pools(j) or allowed_offers(j)) for j in jobs]
    n_ls = sum(is_ls)
    ls_servable = sum(1 for ls, ok in zip(is_ls, servable, strict=True) if ls and ok)
    ls_unservable = n_ls - ls_servable
    if maximise_on_time:
        ls_budget = ls_servable  # any number may be late; the objective counts them
    elif targets.ls_min_on_time is not None:
        ls_budget = ls_servable - targets.ls_min_on_time
    elif targets.ls_late_share > 0:
        ls_budget = late_budget(n_ls, targets.ls_late_share)
    else:
        ls_budget = 0
    if ls_budget < 0:
        return LowerBound(
            Decimal(0),
            0,
            len(jobs) - sum(servable),
            f"infeasible: only {ls_servable} latency-sensitive jobs can run at all",
            {},
            n_ls,
            ls_servable,
            ls_unservable,
        )
    budgets = {True: ls_budget, False: late_budget(len(jobs) - n_ls, targets.be_late_share)}
    hard = {True: budgets[True] == 0, False: False}
    bounds, horizons = _arrival_buckets(jobs)
    _, covers = _peak_instants(jobs, windows)
    lp = _LP()
    # Rows filled as jobs are added; the suffix and instant rows are written at the end.
    z_row: dict[tuple[str, int], int] = {}  # GPU-hours on a resource from one arrival bucket
    group_rows: dict[tuple[tuple[str, ...] | None, int], int] = {}
    instant_rows: dict[tuple[str, int], int] = {}
    limits = dict(capacity) | {o.name: o.capacity for o in market}
    budget_rows = {cls: lp.ub_row(float(b)) for cls, b in budgets.items()}
    late_columns: list[int] = []  # latency-sensitive jobs' late shares
    bounded = unplaceable = 0

    def bucket_row(resource: str, bucket: int) -> int:
        key = (resource, bucket)
        if key not in z_row:
            z_row[key] = lp.eq_row(0.0)
        return z_row[key]

    def instant_row(resource: str, k: int) -> int:
        key = (resource, k)
        if key not in instant_rows:
            instant_rows[key] = lp.ub_row(float(limits[resource]))
        return instant_rows[key]

    for i, job in enumerate(jobs):
        gh = job.gpus * job.duration / 3600
        allowed = allowed_pools(job)
        offers = allowed_offers(job)
        if not servable[i]:
            unplaceable += 1
            continue
        bounded += 1
        bucket = bisect.bisect_right(bounds, job.arrival) - 1
        row = lp.eq_row(1.0)
        peaks = covers.get(i, ())
        # Places a latency-sensitive job running at a peak instant get their own column, so
        # the instant's capacity can be charged; other jobs' external share is a pooled flow.
        places: list[tuple[str, float]] = [
            (f"in-cluster/{p}", float(owned_prices[p])) for p in allowed
        ]
        resources = list(allowed)
        if peaks:
            places += [(o.name, float(o.usd_per_gpu_hour)) for o in offers]
            resources += [o.name for o in offers]
        # A job that may be late (within its class's budget) charges the instants only with
        # its on-time share y <= x; the late share ends in the class's budget row.
        soft = bool(peaks) and not hard[is_ls[i]]
        on_time_row = lp.eq_row(1.0) if soft else -1
        if soft:
            late = lp.column(0.0)
            lp.eq(on_time_row, late, 1.0)
            lp.ub(budget_rows[is_ls[i]], late, 1.0)
            if is_ls[i]:
                late_columns.append(late)
        for (label, price), resource in zip(places, resources, strict=True):
            c = lp.column(price * gh, label, gh)
            lp.eq(row, c, 1.0)
            lp.eq(bucket_row(resource, bucket), c, gh)
            charged = c
            if soft:
                charged = lp.column(0.0)
                lp.eq(on_time_row, charged, 1.0)
                link = lp.ub_row(0.0)
                lp.ub(link, charged, 1.0)
                lp.ub(link, c, -1.0)
            for k in peaks:
                lp.ub(instant_row(resource, k), charged, float(job.gpus))
        if offers and not peaks:
            e = lp.column(0.0)
            lp.eq(row, e, 1.0)
            gkey = (job.products, bucket)
            if gkey not in group_rows:
                group_rows[gkey] = lp.eq_row(0.0)
            lp.eq(group_rows[gkey], e, gh)

    def result(cost: Decimal, status: str, usage: dict[str, float], on_time: int) -> LowerBound:
        return LowerBound(cost, bounded, unplaceable, status, usage, n_ls, on_time, ls_unservable)

    if not lp.cost:
        return result(Decimal(0), "empty", {}, ls_servable)

    for (products, b), grow in sorted(group_rows.items(), key=lambda g: (str(g[0][0]), g[0][1])):
        for o in market:
            if products is not None and o.gpu_product not in products:
                continue
            y = lp.column(float(o.usd_per_gpu_hour), o.name, 1.0)
            lp.eq(grow, y, -1.0)
            lp.eq(bucket_row(o.name, b), y, 1.0)

    # Work arriving at or after bound k runs after it, and is done by horizons[k].
    for resource in [*pools, *(o.name for o in market)]:
        zs = {b: lp.column(0.0) for b in range(len(bounds)) if (resource, b) in z_row}
        for b, col in zs.items():
            lp.eq(z_row[(resource, b)], col, -1.0)
        for k in range(len(bounds)):
            cols = [col for b, col in zs.items() if b >= k]
            if cols:
                row = lp.ub_row(limits[resource] * (horizons[k] - bounds[k]) / 3600)
                for col in cols:
                    lp.ub(row, col, 1.0)

    objective = None
    if maximise_on_time:
        objective = [0.0] * len(lp.cost)
        for col in late_columns:
            objective[col] = 1.0
    res = lp.solve(objective)
    on_time_floor = ls_servable - budgets[True]
    if res.status != 0:
        return result(Decimal(0), f"solver: {res.message}", {}, on_time_floor)
    if maximise_on_time:
        # Whole jobs: no schedule has more on time than the relaxation's (fractional) optimum.
        on_time = ls_servable - math.ceil(float(res.fun) - ON_TIME_TOLERANCE)
        return result(Decimal(0), "optimal", {}, max(on_time, 0))
    # Round down past the solver's relative optimality tolerance: a bound must not exceed
    # the true optimum, and the float answer may overshoot it by that much.
    fun = float(res.fun) * (1 - SOLVER_TOLERANCE)
    value = Decimal(repr(fun)).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)
    usage: dict[str, float] = defaultdict(float)
    for (label, gh), x in zip(lp.labels, res.x, strict=True):
        if label and x > 1e-9:
            usage[label] += gh * float(x)
    return result(max(value, Decimal(0)), "optimal", dict(usage), on_time_floor)


def _arrival_buckets(jobs: tuple[SimJob, ...]) -> tuple[list[float], list[float]]:
    """Bucket starts at arrival quantiles, and by when each suffix of jobs must be done.

    A job arriving at or after bound k starts no earlier than it and, if the replay runs it at
    all, no later than the last arrival plus the give-up time, so it ends by that plus its
    duration: the latest such end over the suffix is the suffix's horizon.
    """
    arrivals = sorted(j.arrival for j in jobs)
    if not arrivals:
        return [0.0], [0.0]
    bounds = sorted({0.0} | {arrivals[len(arrivals) * q // BUCKETS] for q in range(BUCKETS)})
    latest_start = arrivals[-1] + GIVE_UP_AFTER_SECONDS
    horizons = []
    for bound in bounds:
        longest = max((j.duration for j in jobs if j.arrival >= bound), default=0.0)
        horizons.append(max(latest_start + longest, bound))
    return bounds, horizons


class _LP:
    """Sparse rows and columns of the programme, built incrementally."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.labels: list[tuple[str, float]] = []
        self.eq_rhs: list[float] = []
        self.ub_rhs: list[float] = []
        self._eq: tuple[list[int], list[int], list[float]] = ([], [], [])
        self._ub: tuple[list[int], list[int], list[float]] = ([], [], [])

    def column(self, price: float, label: str = "", gh: float = 0.0) -> int:
        self.cost.append(price)
        self.labels.append((label, gh))
        return len(self.cost) - 1

    def eq_row(self, rhs: float) -> int:
        self.eq_rhs.append(rhs)
        return len(self.eq_rhs) - 1

    def ub_row(self, rhs: float) -> int:
        self.ub_rhs.append(rhs)
        return len(self.ub_rhs) - 1

    def eq(self, row: int, col: int, value: float) -> None:
        self._eq[0].append(row)
        self._eq[1].append(col)
        self._eq[2].append(value)

    def ub(self, row: int, col: int, value: float) -> None:
        self._ub[0].append(row)
        self._ub[1].append(col)
        self._ub[2].append(value)

    def solve(self, objective: list[float] | None = None) -> Any:
        n = len(self.cost)
        a_eq = coo_matrix((self._eq[2], (self._eq[0], self._eq[1])), shape=(len(self.eq_rhs), n))
        a_ub = coo_matrix((self._ub[2], (self._ub[0], self._ub[1])), shape=(len(self.ub_rhs), n))
        return linprog(
            c=self.cost if objective is None else objective,
            A_ub=a_ub.tocsr() if self.ub_rhs else None,
            b_ub=self.ub_rhs or None,
            A_eq=a_eq.tocsr(),
            b_eq=self.eq_rhs,
            bounds=(0, None),
            method="highs",
        )


def _peak_instants(
    jobs: tuple[SimJob, ...], start_within: list[float | None]
) -> tuple[list[float], dict[int, tuple[int, ...]]]:
    """The instants at which capacity is enforced, and which jobs surely run at each.

    A job that must start within w of arrival a and runs d seconds is certainly running during
    [a + w, a + d). The load of such spans is a step function that only rises at a span's
    start, so its maximum over any interval is reached at a start; and a start followed by
    another start with no end between them covers a subset of the later one's spans. Enforcing
    capacity at the last start before each end is therefore the same as enforcing it at every
    instant (exact for this relaxation). Beyond ``PEAK_INSTANTS`` such starts, only those where
    the load peaks are kept (still valid, looser).
    """
    spans = [
        (i, j.arrival + w, j.arrival + j.duration)
        for i, (j, w) in enumerate(zip(jobs, start_within, strict=True))
        if w is not None and j.duration > w
    ]
    # Ends sort before starts at the same instant: a span is half-open.
    events = sorted(
        [(e, -jobs[i].gpus) for i, _, e in spans] + [(b, jobs[i].gpus) for i, b, _ in spans]
    )
    load: list[tuple[float, float]] = []
    level = 0
    rising: tuple[float, float] | None = None
    for when, delta in events:
        level += delta
        if delta > 0:
            rising = (level, when)
        elif rising is not None:
            load.append(rising)
            rising = None
    if rising is not None:
        load.append(rising)
    chosen = sorted({when for _, when in sorted(load, reverse=True)[:PEAK_INSTANTS]})
    covers: dict[int, tuple[int, ...]] = {}
    for i, begin, end in spans:
        lo = bisect.bisect_left(chosen, begin)
        hi = bisect.bisect_left(chosen, end)
        if hi > lo:
            covers[i] = tuple(range(lo, hi))
    return chosen, covers
