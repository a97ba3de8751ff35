"""InferenceJob handlers: one daemon per unfinished job drives it; the finalizer cleans up."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kopf
import yaml

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.controller.reconcile import Deps, JobStep
from hybridgpu.controller.snapshots import build_snapshot
from hybridgpu.controller.spend import SpendItem
from hybridgpu.inventory.pools import index_values
from hybridgpu.jobs.conditions import is_terminal, parse_timestamp
from hybridgpu.routing.snapshot import Snapshot

ERROR_DELAY = 10.0
WAKE_SETTLE = 5.0
"""A job deferred for price decides again at most this often on wake-ups: a burst of freed
capacity (many pods ending at once) costs one decision and one status write, not one each."""


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return not is_terminal(dict(status))


def make_deps(memo: kopf.Memo, indexes: dict[str, Any]) -> Deps:
    """Wire the reconcile step to the indexes and caches of this operator process."""
    policies: kopf.Index[tuple[str, str], tuple[dict[str, Any], str]] = indexes["routing_policies"]
    spend: kopf.Index[tuple[str, str], tuple[SpendItem, ...]] = indexes["job_spend"]

    def policy(namespace: str, name: str) -> RoutingPolicySpec | None:
        found = policies.get((namespace, name))
        if not found:
            return None
        spec, _created = next(iter(found))
        return RoutingPolicySpec.model_validate(spec)

    def snapshot(namespace: str, name: str, spec: RoutingPolicySpec) -> Snapshot:
        found = policies.get((namespace, name))
        created = parse_timestamp(next(iter(found))[1]) if found else None
        items = [i for group in spend.get((namespace, name), []) for i in group]
        return build_snapshot(
            now=datetime.now(UTC),
            nodes=index_values(indexes["gpu_nodes"]),
            pods=index_values(indexes["gpu_pods"]),
            telemetry=memo.utilization,
            registry=memo.registry,
            policy=spec,
            policy_created=created,
            spend=items,
        )

    async def load_requests(namespace: str, spec: InferenceJobSpec) -> list[dict[str, Any]] | None:
        ref = spec.input.config_map_ref
        if ref is None:
            return None
        text = await memo.kube.read_config_map_key(namespace, ref.name, ref.key)
        if text is None:
            raise kopf.TemporaryError(
                f"spec.input.configMapRef: ConfigMap {ref.name} has no key {ref.key}", delay=30
            )
        loaded = yaml.safe_load(text) if not text.lstrip().startswith("[") else json.loads(text)
        if not isinstance(loaded, list):
            raise kopf.PermanentError(
                f"spec.input.configMapRef: {ref.name}/{ref.key} is not a list"
            )
        return [dict(item) for item in loaded]

    return Deps(
        kube=memo.kube,
        registry=memo.registry,
        snapshot=snapshot,
        policy=policy,
        provider_exists=lambda name: name in indexes["compute_providers"],
        load_requests=load_requests,
        telemetry_problem=lambda: str(memo.telemetry_error),
    )


@kopf.daemon(GROUP, VERSION, "inferencejobs", when=_unfinished, cancellation_timeout=10.0)
async def drive_job(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    deps = make_deps(memo, kwargs)
    wakeup = deps.registry.wakeup
    superseded: set[str] = set()
    written: dict[str, Any] | None = None
    while not stopped:
        current = dict(body)
        # Our own last patch may not have come back through the watch yet: never act on a
        # status older than the one we wrote, or an attempt could be dispatched twice.
        if written is not None and current["metadata"].get("resourceVersion") in superseded:
            current = written
        step = JobStep(current, deps, lambda t, r, m: kopf.event(body, type=t, reason=r, message=m))
        # Capacity freed while the step runs must still wake the job when it sleeps.
        generation = wakeup.generation
        before = current["metadata"].get("resourceVersion")
        try:
            delay = await step.run()
        except kopf.PermanentError:
            raise
        except kopf.TemporaryError as exc:
            logger.warning("%s", exc)
            delay = exc.delay or ERROR_DELAY
        except Exception:
            logger.exception("reconciling the job failed; retrying in %ss", ERROR_DELAY)
            delay = ERROR_DELAY
        if step.written is not None:
            superseded.add(str(before))
            superseded.update(step.versions[:-1])
            written = step.written
        if delay is None:
            return
        await wakeup.sleep(stopped, delay, step.wake_on, since=generation, settle=WAKE_SETTLE)


@kopf.on.delete(GROUP, VERSION, "inferencejobs")
async def cleanup_job(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Cancel remote work or delete the in-cluster Job, then let the object go."""
    fresh = await memo.kube.get_job(namespace or "", name) or dict(body)
    status = fresh.get("status") or {}
    if is_terminal(status):
        return
    step = JobStep(fresh, make_deps(memo, kwargs), lambda *_: None)
    current = step.active_attempt()
    if current is None:
        return
    await step.cancel_attempt(current)
    logger.info("cancelled attempt %s on %s", current.get("attempt"), current.get("provider"))


@kopf.on.event(GROUP, VERSION, "inferencejobs")
def count_phase(
    event: kopf.RawEvent, uid: str, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    """Feed the hybridgpu_jobs{phase} gauge."""
    gone = event.get("type") == "DELETED"
    memo.phases.update(uid, None if gone else str(status.get("phase") or "Pending"))
