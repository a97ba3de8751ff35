"""RoutingPolicy handlers: the spend ledger and routing counts of the budget period in status."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
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

log = logging.getLogger(__name__)


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


ACCOUNT_EVERY = 10.0
"""Seconds between two passes over every policy's ledger."""


async def account_policies(memo: kopf.Memo, indexes: Mapping[str, Any]) -> None:
    """Keep every RoutingPolicy's ledger in its status, from the operator's own loop.

    Not a Kopf timer: Kopf puts a finalizer on every object a timer runs for, and a finalizer
    on a policy makes its namespace undeletable while no operator runs (after an uninstall).
    """
    runtime: JobRuntime = memo.jobs
    objects: kopf.Index[tuple[str, str], dict[str, Any]] = indexes["policy_objects"]
    targets: kopf.Index[tuple[str, str], str] = indexes["job_targets"]
    while True:
        await asyncio.sleep(ACCOUNT_EVERY)
        await runtime.gate.wait()
        for key, found in list(objects.items()):
            body = next(iter(found), None)
            if body is None:
                continue
            try:
                await account_policy(memo, runtime, key, body, Counter(targets.get(key, [])))
            except asyncio.CancelledError:
                raise
            except Exception:  # one policy's trouble never stops the others' ledgers
                log.exception("accounting RoutingPolicy %s/%s failed", *key)


async def account_policy(
    memo: kopf.Memo,
    runtime: JobRuntime,
    key: tuple[str, str],
    body: Mapping[str, Any],
    routed: Counter[str],
) -> None:
    namespace, name = key
    status: dict[str, Any] = dict(body.get("status") or {})
    now = datetime.now(UTC)
    generation = int(body.get("generation") or 0)
    version = str(body.get("resourceVersion") or "")
    conditions = [dict(c) for c in status.get("conditions") or []]
    try:
        policy = RoutingPolicySpec.model_validate(dict(body.get("spec") or {}))
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
        if conditions != status.get("conditions"):
            await memo.kube.patch_policy_status(namespace, name, {"conditions": conditions})
        return
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
        status=status,
        holdings=runtime.holdings(),
        key=key,
        start=start,
        gone=gone,
        routed=routed,
        generation=generation,
        now=now,
    )
    if patch:
        try:
            await memo.kube.patch_policy_status(namespace, name, patch, resource_version=version)
        except Conflict:
            return  # changed meanwhile (a job's spend was retired): the next pass recomputes
