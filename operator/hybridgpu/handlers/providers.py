"""ComputeProvider handlers: a daemon per provider keeps its adapter and offers fresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.computeprovider import ComputeProviderSpec
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
async def drain_provider(name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Fail active jobs over to other backends first, then forget the provider."""
    registry: Registry = memo.registry
    entry = registry.providers.get(name)
    if entry is None:
        return
    entry.draining = True
    runtime: JobRuntime = memo.jobs
    active = runtime.jobs_on(name)
    if active:
        for uid in active:
            runtime.queue.schedule(uid, 0.0)
        raise kopf.TemporaryError(f"waiting for {len(active)} jobs to fail over", delay=2.0)
    del registry.providers[name]
    await entry.adapter.aclose()
    logger.info("provider %s drained and removed", name)
