"""Whether DCGM telemetry changed a decision, for the job's TelemetryAvailable condition.

Telemetry enters a decision in two ways: nodes with faulty GPUs are left out of their pool
(``InClusterPool.unhealthy_gpus``), and a policy with ``busyFrom: Telemetry`` counts pools busy
by what DCGM measures (``measured_busy``). To say truthfully whether it mattered, the decision
is taken again on the same snapshot as if there were no telemetry (the faulty nodes back in,
busy counted by requests); only when the target or outcome differs did telemetry decide.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import BusyFrom, RoutingPolicySpec
from hybridgpu.routing.decision import RoutingDecision
from hybridgpu.routing.engine import decide
from hybridgpu.routing.snapshot import InClusterPool, Snapshot

CHANGED = "ChangedDecision"
NO_EFFECT = "NoEffect"
REQUESTS_ONLY = "RequestsOnly"


def requests_only(snapshot: Snapshot) -> Snapshot:
    """The snapshot as it would be without telemetry: faulty nodes kept, no measured busy."""
    return replace(snapshot, pools=tuple(_without(p) for p in snapshot.pools))


def _without(pool: InClusterPool) -> InClusterPool:
    if not pool.unhealthy_gpus and pool.measured_busy is None:
        return pool
    max_free = pool.max_free_per_node
    if max_free is not None:
        max_free = max(max_free, pool.unhealthy_max_free)
    return replace(
        pool,
        allocatable=pool.allocatable + pool.unhealthy_gpus,
        in_use=pool.in_use + pool.unhealthy_in_use,
        max_free_per_node=max_free,
        unhealthy_gpus=0,
        unhealthy_reason="",
        unhealthy_in_use=0,
        unhealthy_max_free=0,
        measured_busy=None,
    )


def what_telemetry_did(
    job: InferenceJobSpec, policy: RoutingPolicySpec, snapshot: Snapshot
) -> list[str]:
    """What telemetry put into this snapshot that could bear on ``job``."""
    products = frozenset(job.gpu.products) if job.gpu.products else None
    done: list[str] = []
    for pool in snapshot.pools:
        if pool.unhealthy_gpus and (products is None or pool.gpu_product in products):
            done.append(
                f"left out {pool.unhealthy_gpus} {pool.gpu_product} GPUs ({pool.unhealthy_reason})"
            )
    if policy.in_cluster.busy_from is BusyFrom.TELEMETRY and any(
        p.measured_busy is not None for p in snapshot.pools
    ):
        done.append("counted pools busy by measured utilisation and framebuffer use")
    return done


def telemetry_condition(
    job: InferenceJobSpec,
    policy: RoutingPolicySpec,
    snapshot: Snapshot,
    decision: RoutingDecision,
    problem: str,
    *,
    created_at: datetime | None = None,
    excluded: frozenset[str] = frozenset(),
) -> tuple[bool, str, str]:
    """(status, reason, message) of the TelemetryAvailable condition for this decision."""
    if not snapshot.telemetry_available:
        why = problem or "no GPU utilisation series"
        return False, REQUESTS_ONLY, f"decided on GPU requests alone: {why}"
    done = what_telemetry_did(job, policy, snapshot)
    if not done:
        return True, NO_EFFECT, "DCGM telemetry is fresh; nothing in it bore on this job"
    other = decide(job, policy, requests_only(snapshot), created_at=created_at, excluded=excluded)
    if _target(other) == _target(decision):
        return (
            True,
            NO_EFFECT,
            f"DCGM telemetry {'; '.join(done)}, but requests alone give the same decision",
        )
    return (
        True,
        CHANGED,
        f"DCGM telemetry decided: {'; '.join(done)}; on requests alone: {_target(other)}",
    )


def _target(decision: RoutingDecision) -> str:
    if decision.target is not None:
        return f"{decision.outcome} to {decision.target.name}"
    return f"{decision.outcome} ({decision.reason})"
