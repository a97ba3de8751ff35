"""RoutingPolicy handlers: the spend ledger and routing counts of the budget period in status."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.jobloop import JobRuntime
from hybridgpu.controller.ledger import account
from hybridgpu.jobs import conditions as cond
from hybridgpu.kube import Conflict


@kopf.on.event(GROUP, VERSION, "routingpolicies")
async def wake_deferred_jobs(
    namespace: str | None, name: str, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A changed policy (a larger budget, a larger premium, a shorter maxWait) may let waiting
    jobs in now. An event handler, not on.update: it keeps no state in the object (the operator
    may not patch RoutingPolicies, only their status). Status patches do not change the
    generation."""
    seen: dict[tuple[str, str], int] = memo.policy_generations
    key = (namespace or "", name)
    generation = int(meta.get("generation") or 0)
    if kwargs.get("type") == "DELETED":
        seen.pop(key, None)
        return
    previous = seen.get(key)
    seen[key] = generation
    if previous is None:
        # New (or first seen since a restart): jobs that waited for it go now.
        runtime: JobRuntime = memo.jobs
        runtime.poke_namespace(namespace or "")
    elif previous != generation:
        memo.registry.wakeup.notify_all()


@kopf.timer(GROUP, VERSION, "routingpolicies", interval=10.0, initial_delay=1.0)
async def account_policy(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    runtime: JobRuntime = memo.jobs
    job_targets: kopf.Index[tuple[str, str], str] = kwargs["job_targets"]
    namespace = namespace or ""
    now = datetime.now(UTC)
    generation = int(meta.get("generation") or 0)
    version = str(meta.get("resourceVersion"))
    conditions = [dict(c) for c in status.get("conditions") or []]
    try:
        policy = RoutingPolicySpec.model_validate(dict(spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["spec", *(str(p) for p in first["loc"])])
        cond.set_condition(
            conditions,
            "Valid",
            False,
            "InvalidSpec",
            f"{where}: {first['msg']}",
            generation=generation,
            now=now,
        )
        await memo.kube.patch_policy_status(namespace, name, {"conditions": conditions})
        return
    key = (namespace, name)
    start = runtime.period_start(key, policy, now)
    gone = set()
    for uid, entry in (status.get("retired") or {}).items():
        if uid in runtime.cache or uid in runtime.finished:
            continue
        found = await memo.kube.get_job(namespace, str((entry or {}).get("job") or ""))
        if found is None or found["metadata"].get("uid") != uid:
            gone.add(uid)
    patch = account(
        policy=policy,
        status=dict(status),
        holdings=runtime.holdings(),
        key=key,
        start=start,
        gone=gone,
        routed=Counter(job_targets.get(key, [])),
        generation=generation,
        now=now,
    )
    if patch:
        try:
            await memo.kube.patch_policy_status(namespace, name, patch, resource_version=version)
        except Conflict:
            return  # changed meanwhile (a job's spend was retired): the next tick recomputes
