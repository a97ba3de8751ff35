"""ComputeProvider handlers: a daemon per provider keeps its adapter and offers fresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller.claims import owes_work_on
from hybridgpu.controller.jobloop import JobRuntime
from hybridgpu.controller.providers import (
    CredentialMissing,
    ensure_adapter,
    provider_status,
    refresh,
    wake_for_refresh,
)
from hybridgpu.controller.registry import Registry
from hybridgpu.networks.bounds import DroppedOffer
from hybridgpu.settings import SETTINGS


@kopf.daemon(GROUP, VERSION, "computeproviders", cancellation_timeout=5.0)
async def keep_provider(
    stopped: kopf.DaemonStopped,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    registry: Registry = memo.registry
    while not stopped:
        now = datetime.now(UTC)
        meta = body.get("metadata", {})
        generation = int(meta.get("generation") or 0)
        conditions = list((body.get("status") or {}).get("conditions") or [])
        entry = None
        dropped: tuple[DroppedOffer, ...] = ()
        interval = 15.0
        try:
            spec = ComputeProviderSpec.model_validate(dict(body.get("spec") or {}))
            interval = spec.price_refresh_interval.total_seconds()
            entry = await ensure_adapter(
                registry, memo.kube, name, spec, dict(meta.get("labels") or {})
            )
            # A rebuilt entry (new spec: unpaused, a higher concurrency limit...) starts with
            # no offers, so all its offers count as new.
            before = entry.offers if entry.ready else ()
            refreshed = await refresh(entry, now)
            ready, message, dropped = refreshed.ready, refreshed.message, refreshed.dropped
            if ready:
                wake_for_refresh(registry.wakeup, before, entry.offers)
        except ValidationError as exc:
            first = exc.errors()[0]
            ready, interval = False, 60.0
            message = "spec." + ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
        except CredentialMissing as exc:
            ready, message, interval = False, str(exc), 15.0
        except Exception as exc:
            # Whatever went wrong, this loop is the provider's only upkeep: it must go on.
            logger.exception("refreshing provider %s failed", name)
            ready, message = False, f"refresh failed: {type(exc).__name__}"
        try:
            status = provider_status(entry, ready, message, generation, conditions, now, dropped)
            await memo.kube.patch_provider_status(name, status)
        except Exception:
            logger.exception("writing the status of provider %s failed", name)
        await stopped.wait(min(interval, 5.0) if not ready else interval)


@kopf.on.delete(GROUP, VERSION, "computeproviders")
async def drain_provider(
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Fail active jobs over and settle the cancels owed there, then forget the provider.

    A provider deleted while no operator ran has no adapter yet (Kopf starts no daemon for an
    object in deletion), so it is built here: without it the work still running on the
    network could never be stopped. The jobs are read from the API server, not the cache,
    which at start-up may not hold them all yet."""
    registry: Registry = memo.registry
    entry = registry.providers.get(name)
    if entry is None:
        try:
            parsed = ComputeProviderSpec.model_validate(dict(spec))
            entry = await ensure_adapter(
                registry, memo.kube, name, parsed, dict(meta.get("labels") or {})
            )
        except (ValidationError, CredentialMissing) as exc:
            # Nothing can reach the network: the jobs fail over and say what may be left.
            logger.warning("deleted provider %s cannot be reached: %s", name, exc)
    if entry is not None:
        entry.draining = True
    runtime: JobRuntime = memo.jobs
    waiting = await _owing(memo, name)
    if waiting and entry is not None:
        for namespace, job in waiting:
            runtime.poke(namespace, job)
        raise kopf.TemporaryError(
            f"waiting for {len(waiting)} jobs to fail over or settle their cancels", delay=3.0
        )
    memo.draining.pop(name, None)
    if entry is not None:
        registry.providers.pop(name, None)
        await entry.adapter.aclose()
    logger.info("provider %s drained and removed", name)


async def _owing(memo: kopf.Memo, provider: str) -> set[tuple[str, str]]:
    """(namespace, name) of the jobs with work or an owed cancel on a draining provider.

    Every job is listed from the API server once per drain (at start-up the cache may not
    hold them all); a retry re-reads only the jobs found then, as no new work goes to a
    draining provider. Listing every job every 3 s was heavy with 10,000 jobs."""
    runtime: JobRuntime = memo.jobs
    known: set[tuple[str, str]] | None = memo.draining.get(provider)
    if known is None:
        bodies = await memo.kube.list_jobs(SETTINGS.namespaces)
    else:
        bodies = []
        for namespace, job in known:
            uid = runtime.names.get((namespace, job))
            body = runtime.cache.get(uid) if uid is not None else None
            if body is None:
                body = await memo.kube.get_job(namespace, job)
            if body is not None:
                bodies.append(body)
    owing = {
        (str(b["metadata"].get("namespace") or ""), str(b["metadata"].get("name") or ""))
        for b in bodies
        if owes_work_on(b, provider)
    }
    memo.draining[provider] = owing
    return owing
