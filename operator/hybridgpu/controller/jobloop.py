"""The operator's job machinery: cache, work queue, admission and Events, wired together.

Kopf feeds it (watch events, indexes) and it does the rest in a few tasks, whatever the
number of jobs: an unfinished job is a cached body and a timer, not a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hybridgpu.api.inferencejob import AttemptOutcome, InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.backends.cluster_backend import InClusterBackend, Lookup
from hybridgpu.controller.admission import Admission, World
from hybridgpu.controller.claims import (
    ACTIVE_OUTCOMES,
    Charge,
    Holdings,
    Ledger,
    PolicyKey,
    job_charges,
)
from hybridgpu.controller.errors import PermanentJobError, TemporaryJobError, UnreadableStatus
from hybridgpu.controller.events import EventPoster
from hybridgpu.controller.eviction import preemption_view
from hybridgpu.controller.finalizers import holds, releasable, without
from hybridgpu.controller.jobcache import JobCache
from hybridgpu.controller.ledger_writes import retire_job_spend
from hybridgpu.controller.peering import PeeringGate
from hybridgpu.controller.periods import period_start
from hybridgpu.controller.reconcile import CANCEL_RETRY, Deps, JobStep
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.results import ResultsConfig
from hybridgpu.controller.workqueue import WorkQueue
from hybridgpu.inventory.pools import NodeRecord, PodRecord, pools_from
from hybridgpu.inventory.telemetry import GpuTelemetry, usable_telemetry
from hybridgpu.jobs import conditions as cond
from hybridgpu.kube import Conflict, Kube
from hybridgpu.networks.batch import BatchAdapter
from hybridgpu.networks.requests import load_request_items
from hybridgpu.routing.scarcity import sole_seen
from hybridgpu.routing.snapshot import Snapshot
from hybridgpu.settings import SETTINGS

log = logging.getLogger(__name__)

MAX_FAILURES = 8
"""Consecutive unexpected errors on one job before it is failed (backoff 10 s doubling to
5 min: about 20 minutes), so one job's bug never loops forever or takes others down."""
WORKERS = 16
DISPATCH_YIELD = 2.0
"""Seconds a dispatch waits at most for the admission loop to be idle."""
DELETED_GRACE = 120.0
SPENT_CACHE_SECONDS = 2.0
"""Running attempts are capped on spend this stale at most (polls are 5 s apart anyway)."""

_KEPT_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
)


def _dispatching(body: Mapping[str, Any]) -> bool:
    """Whether the job's next step creates its Job or submits its work."""
    attempts = (body.get("status") or {}).get("attempts") or []
    return bool(attempts) and attempts[-1].get("outcome") == "Dispatching"


def _where(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a job step reads of an InferenceJob: managedFields and Kopf's annotations (a
    copy of the spec) would double the cache for nothing."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_META if k in meta},
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


@dataclass
class Inventory:
    """Live views the operator's Kopf indexes and loops keep current."""

    nodes: Callable[[], Iterable[NodeRecord]]
    pods: Callable[[], Iterable[PodRecord]]
    policies: Callable[[str, str], tuple[Mapping[str, Any], str, Mapping[str, Any]] | None]
    """(namespace, name) -> (spec, creationTimestamp, status) of a RoutingPolicy."""
    all_policies: Callable[[], Iterable[tuple[PolicyKey, Mapping[str, Any]]]]
    """Every RoutingPolicy's key and status (for the ledgers)."""
    provider_exists: Callable[[str], bool]
    attempt_pods: Callable[[], Collection[str]]
    """``<uid>/<attempt>`` of every Pod of an in-cluster attempt, in any phase."""
    telemetry: Callable[[], GpuTelemetry | None]
    telemetry_problem: Callable[[], str]
    attempt_jobs: Lookup = lambda _key: ()
    """``<uid>/<attempt>`` -> the attempt's batch/v1 Job record (backends.cluster_backend)."""
    attempt_pod_records: Lookup = lambda _key: ()
    """``job:<Job uid>`` -> the records of that Job's Pods."""


class JobRuntime:
    def __init__(
        self,
        kube: Kube,
        registry: Registry,
        inventory: Inventory,
        results: ResultsConfig | None = None,
        gate: PeeringGate | None = None,
    ) -> None:
        self.gate = gate or PeeringGate(identity="", priority=0, read=None)
        self.gate.on_pause.append(self.stop_local_work)
        self.kube = kube
        self.results = results
        """The result stores (None: results are not kept)."""
        self.registry = registry
        self.inventory = inventory
        self.cache = JobCache()
        self.finished: dict[str, tuple[Charge, ...]] = {}
        """uid -> budget charges of finished jobs (their bodies are not kept)."""
        self.names: dict[tuple[str, str], str] = {}
        self.deleted: dict[str, tuple[float, tuple[Charge, ...]]] = {}
        """uid -> (when, charges) of jobs deleted in the last DELETED_GRACE seconds."""
        self.queue = WorkQueue(self.work, workers=WORKERS, gate=self.gate.wait)
        # The admission loop is built below, with the poster it emits through.
        self.events = EventPoster(kube.post_event, yield_to=lambda: self.admission.idle())  # noqa: PLW0108
        self.failures: dict[str, int] = {}
        self._parsed: dict[PolicyKey, tuple[str, RoutingPolicySpec]] = {}
        self._recent: tuple[float, Holdings | None] = (0.0, None)
        self.admission = Admission(
            deps=self.deps,
            bodies=self.cache.get,
            world=self.world,
            emit_for=self.events.emit_for,
            done=self.done,
            reread=self.reread,
            priority=self.priority,
            gate=self.gate.wait,
        )
        registry.wakeup.listeners.append(self.admission.wake)
        registry.wakeup.evictable_listeners.append(self.admission.wake_evictors)
        self.in_cluster = InClusterBackend(
            kube, inventory.attempt_jobs, inventory.attempt_pod_records
        )

    # -- feeding --------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> bool:
        """A newer body of a job (watch event or our own write); True when it is news."""
        job = slim(body)
        meta = job["metadata"]
        uid = str(meta.get("uid") or "")
        self.names[(str(meta.get("namespace")), str(meta.get("name")))] = uid
        if not holds(job) and (
            meta.get("deletionTimestamp")
            or (cond.is_terminal(job["status"]) and not job["status"].get("pendingCancels"))
        ):
            charges = job_charges(job)
            if charges:
                self.finished[uid] = charges
            self.cache.forget(uid)
            self.queue.cancel(uid)
            self.admission.forget(uid)
            self.registry.progress_written.pop(uid, None)
            for key in [k for k in self.registry.runner_urls if k.startswith(f"{uid}-")]:
                del self.registry.runner_urls[key]
            return False
        return self.cache.observe(job)

    def changed(self, uid: str) -> None:
        """Someone else changed the job: work on it now. A job that waits for a decision
        goes straight to the admission loop, not behind the workers' dispatch and tracking
        (a burst of arrivals is decided in a few cycles)."""
        body = self.cache.get(uid)
        if body is None:
            return
        status = body.get("status") or {}
        attempts = status.get("attempts") or []
        if (
            not (body.get("metadata") or {}).get("deletionTimestamp")
            and not cond.is_terminal(status)
            and not status.get("pendingCancels")
            and not (attempts and attempts[-1].get("outcome") in ACTIVE_OUTCOMES)
        ):
            self.admission.request(uid)  # what it cannot decide, it hands to the workers
        else:
            self.queue.schedule(uid, 0.0)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        """The job is gone from the API server.

        Its charges still count for a while: the policy's ledger entry for it (written before
        the finalizer was released) may reach the policy index after this deletion does.
        Once it has, ``Holdings`` counts the ledger entry instead (never both).
        """
        body = self.cache.get(uid)
        charges = job_charges(body) if body is not None else self.finished.get(uid, ())
        if charges:
            self.deleted[uid] = (time.monotonic(), charges)
        self.cache.forget(uid)
        self.finished.pop(uid, None)
        self.names.pop((namespace, name), None)
        self.registry.progress_written.pop(uid, None)
        self.queue.cancel(uid)
        self.admission.forget(uid)
        self.failures.pop(uid, None)

    def poke(self, namespace: str, name: str) -> None:
        """Something the job waits on changed (its Pod, its batch Job): work on it now."""
        uid = self.names.get((namespace, name))
        if uid is not None and uid in self.cache:
            self.queue.schedule(uid, 0.0)

    def poke_uid(self, uid: str) -> None:
        """As ``poke``, for a job known by its UID (its name may be no label value)."""
        if uid in self.cache:
            self.queue.schedule(uid, 0.0)

    def poke_namespace(self, namespace: str) -> None:
        """Work now on every unfinished job of ``namespace`` (its RoutingPolicy appeared)."""
        for (ns, _name), uid in list(self.names.items()):
            if ns == namespace and uid in self.cache:
                self.queue.schedule(uid, 0.0)

    # -- what a step may touch ------------------------------------------------------------

    def policy(self, namespace: str, name: str) -> RoutingPolicySpec | None:
        found = self.inventory.policies(namespace, name)
        if found is None:
            self._parsed.pop((namespace, name), None)
            return None
        text = json.dumps(found[0], sort_keys=True, default=str)
        cached = self._parsed.get((namespace, name))
        if cached is not None and cached[0] == text:
            return cached[1]
        parsed = RoutingPolicySpec.model_validate(dict(found[0]))
        self._parsed[(namespace, name)] = (text, parsed)
        return parsed

    def priority(self, namespace: str, name: str) -> int:
        policy = self.policy(namespace, name)
        return policy.priority if policy is not None else 0

    def period_start(self, key: PolicyKey, policy: RoutingPolicySpec, now: datetime) -> datetime:
        found = self.inventory.policies(*key)
        created = cond.parse_timestamp(found[1]) if found else None
        if policy.budget is None:
            return now
        return period_start(now, created or now, policy.budget.period)

    def holdings(self) -> Holdings:
        horizon = time.monotonic() - DELETED_GRACE
        for uid in [u for u, (when, _) in self.deleted.items() if when < horizon]:
            del self.deleted[uid]
        owners = self.inventory.attempt_pods()
        ledgers = {}
        for key, status in self.inventory.all_policies():
            found = self.inventory.policies(*key)
            created = cond.parse_timestamp(found[1]) if found else None
            ledgers[key] = Ledger.from_status(status, created)
        return Holdings.of(
            self.cache.values(),
            owners,
            finished=[
                *(c for group in self.finished.values() for c in group),
                *(c for _, group in self.deleted.values() for c in group),
            ],
            ledgers=ledgers,
        )

    def spent(self, namespace: str, name: str) -> Decimal | None:
        policy = self.policy(namespace, name)
        if policy is None:
            return None
        now = datetime.now(UTC)
        return self.recent_holdings().spent(
            (namespace, name), self.period_start((namespace, name), policy, now)
        )

    def recent_holdings(self) -> Holdings:
        """``holdings()`` at most SPENT_CACHE_SECONDS old. Every poll of a running external
        job checks its policy's spend; summing all jobs for each poll made that O(jobs²)."""
        at, held = self._recent
        if held is None or time.monotonic() - at > SPENT_CACHE_SECONDS:
            held = self.holdings()
            self._recent = (time.monotonic(), held)
        return held

    def world(self) -> World:
        now = datetime.now(UTC)
        nodes = list(self.inventory.nodes())
        pods = list(self.inventory.pods())
        telemetry, _ = self.fresh_telemetry()
        utilization = telemetry.utilization_by_product(nodes) if telemetry else None
        held = self.holdings()
        refreshed = {name: e.refreshed for name, e in self.registry.providers.items()}
        pools = held.pools(
            pools_from(
                nodes,
                pods,
                utilization,
                now=now,
                faults=telemetry.faults() if telemetry else None,
                busy_by_node=telemetry.busy_gpus_by_node() if telemetry else None,
            ),
            now,
        )
        offers = held.offers(self.registry.offers(now), refreshed)
        return World(
            now=now,
            pools=pools,
            offers=offers,
            sole_seen=sole_seen(
                gpu_demand(self.cache.values()), pools, (o.gpu_product for o in offers), now
            ),
            holdings=held,
            period_start=lambda key, policy: self.period_start(key, policy, now),
            telemetry_available=telemetry is not None,
            preemption=lambda: preemption_view(
                now=now,
                bodies=self.cache.values(),
                nodes=nodes,
                pods=pods,
                attempt_pod=self.inventory.attempt_pod_records,
                priority=self.priority,
                refreshed=refreshed,
                submitted=self.registry.submitted,
            ),
        )

    def fresh_telemetry(self) -> tuple[GpuTelemetry | None, str]:
        """The telemetry scraped recently enough to route on, or why there is none."""
        return usable_telemetry(
            self.inventory.telemetry(), time.time(), SETTINGS.telemetry_stale_after
        )

    def telemetry_problem(self) -> str:
        """Why routing runs on requests alone ('' when telemetry is fresh)."""
        return self.inventory.telemetry_problem() or self.fresh_telemetry()[1]

    def snapshot(self, namespace: str, name: str, policy: RoutingPolicySpec) -> Snapshot:
        """A one-off snapshot (outside admission, e.g. for quote-like reads)."""
        return self.world().snapshot(namespace, name, policy)

    async def load_requests(
        self, namespace: str, spec: InferenceJobSpec
    ) -> list[dict[str, Any]] | None:
        ref = spec.input.config_map_ref
        if ref is None:
            return None
        text = await self.kube.read_config_map_key(namespace, ref.name, ref.key)
        if text is None:
            raise TemporaryJobError(
                f"spec.input.configMapRef: ConfigMap {ref.name} has no key {ref.key}", delay=30
            )
        try:
            return load_request_items(text, "spec.input.configMapRef")
        except ValueError as exc:  # InputTooLarge too: the job can never be sent as it is
            raise PermanentJobError(str(exc)) from None

    def deps(self) -> Deps:
        return Deps(
            kube=self.kube,
            registry=self.registry,
            snapshot=self.snapshot,
            policy=self.policy,
            provider_exists=self.inventory.provider_exists,
            load_requests=self.load_requests,
            telemetry_problem=self.telemetry_problem,
            policy_spent=self.spent,
            results=self.results,
            in_cluster=self.in_cluster,
        )

    # -- the work -------------------------------------------------------------------------

    def done(self, uid: str, written: Mapping[str, Any] | None, delay: float | None) -> None:
        if written is not None:
            self.observe(written)
        if delay is None and releasable(self.cache.get(uid)):
            delay = 0.0
        if delay is not None and uid in self.cache:
            self.queue.schedule(uid, delay)

    async def settle_before_admission(self, step: JobStep) -> int:
        """Stop work still owed (an evicted attempt's Job, a failed cancel) before the job waits
        in the queue: a waiting job's step would otherwise not run until it is dispatched."""
        if not step.status.pending_cancels:
            return 0
        try:
            left = await step.settle_cancels()
            await step.save()
        except Conflict:
            await self.reread(step.namespace, step.name, step.uid)
            return 1
        except Exception:
            log.exception("%s/%s: settling owed cancels failed", step.namespace, step.name)
            return 1
        if step.written is not None:
            self.observe(step.written)
        return left

    async def reread(self, namespace: str, name: str, uid: str) -> None:
        fresh = await self.kube.get_job(namespace, name)
        if fresh is None:
            self.forget(namespace, name, uid)
        else:
            self.observe(fresh)

    async def work(self, uid: str) -> float | None:
        body = self.cache.get(uid)
        if body is None:
            return None
        if _dispatching(body):
            # Decisions first: in a burst the API server's time goes to the admission loop's
            # writes, and the dispatches follow once it is idle (or DISPATCH_YIELD later, so
            # that a continuous stream of arrivals cannot hold them back for long).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.admission.idle(), DISPATCH_YIELD)
            body = self.cache.get(uid)
            if body is None:
                return None
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return await self.clean_up(body) if holds(body) else None
        if releasable(body):
            return await self.release(body)
        try:
            step = JobStep(dict(body), self.deps(), self.events.emit_for(body))
        except UnreadableStatus as exc:
            await self.fail_unreadable(body, exc)
            return None
        if step.needs_admission() is not None:
            owed = await self.settle_before_admission(step)
            self.admission.request(uid)
            return CANCEL_RETRY if owed else None
        try:
            delay = await step.run()
        except Conflict:
            await self.reread(step.namespace, step.name, uid)
            return 0.0
        except TemporaryJobError as exc:
            log.warning("%s/%s: %s", step.namespace, step.name, exc)
            delay = exc.delay
        except PermanentJobError as exc:
            await self.fail(uid, exc.reason, str(exc))
            return 0.0 if releasable(self.cache.get(uid)) else None
        except Exception as exc:
            count = self.failures.get(uid, 0) + 1
            self.failures[uid] = count
            log.exception(
                "%s/%s: reconciling failed (%d in a row)", step.namespace, step.name, count
            )
            if count >= MAX_FAILURES:
                await self.fail(uid, "ReconcileError", f"{count} steps in a row failed: {exc}")
                return 0.0 if releasable(self.cache.get(uid)) else None
            delay = min(10.0 * 2 ** (count - 1), 300.0)
        else:
            self.failures.pop(uid, None)
        if step.written is not None:
            self.observe(step.written)
        if delay is None and releasable(self.cache.get(uid)):
            return 0.0  # ended: its spend goes to the ledger, then the finalizer goes
        return delay

    async def clean_up(self, body: dict[str, Any]) -> float | None:
        """A deleted job that holds the finalizer: stop its work, ledger its spend, let go.

        Done here rather than in a Kopf delete handler: Kopf calls those only for objects
        that carry its own finalizer, which it would then put on every job.
        """
        try:
            step = JobStep(dict(body), self.deps(), self.events.emit_for(body))
        except UnreadableStatus as exc:
            # What it ran cannot be read, so nothing can be cancelled by it: say so, let go.
            log.warning("%s/%s deleted with an unreadable status (%s)", *_where(body), exc)
            return await self.release(body)
        try:
            current = None if cond.model_terminal(step.conditions) else step.active_attempt()
            if current is not None:
                await step.cancel_attempt(current)
                log.info(
                    "%s/%s deleted: cancelling attempt %s on %s",
                    step.namespace,
                    step.name,
                    current.attempt,
                    current.provider,
                )
            if step.status.pending_cancels and await step.settle_cancels():
                # Kept until the remote work is stopped: a deleted job must not leave it billing.
                await step.save()
                if step.written is not None:
                    self.observe(step.written)
                return CANCEL_RETRY
        except Conflict:
            await self.reread(step.namespace, step.name, step.uid)
            return 0.0
        except Exception:
            log.exception("%s/%s: cleaning up after deletion failed", step.namespace, step.name)
            return 30.0
        return await self.release(body, step.rv)

    async def release(self, body: dict[str, Any], version: str | None = None) -> float | None:
        """An ended job owes nothing: its spend into its policy's ledger, then let it go.

        The ledger entry is keyed by the job's UID (written once, also when retried), and it
        is written first: a job released before its spend is recorded could be deleted and
        give its budget back.
        """
        meta = body["metadata"]
        try:
            await retire_job_spend(self.kube, body)
            written = await self.kube.set_job_finalizers(
                meta["namespace"],
                meta["name"],
                without(body),
                str(version or meta["resourceVersion"]),
            )
        except Conflict:
            await self.reread(meta["namespace"], meta["name"], str(meta["uid"]))
            return 0.0
        except Exception:
            log.exception("%s/%s: releasing the finalizer failed", meta["namespace"], meta["name"])
            return 30.0
        self.observe(written)
        return None

    async def fail(self, uid: str, reason: str, message: str) -> None:
        """End one job as Failed with its reason; its running work is cancelled first."""
        for _ in range(3):
            body = self.cache.get(uid)
            if body is None:
                return
            try:
                step = JobStep(dict(body), self.deps(), self.events.emit_for(body))
            except UnreadableStatus as exc:
                await self.fail_unreadable(body, exc)
                return
            try:
                current = step.active_attempt()
                if current is not None:
                    await step.cancel_attempt(current)
                    step.end_attempt(current, AttemptOutcome.FAILED, reason, message)
                await step.finish(False, reason, message)
                if step.status.pending_cancels:
                    await step.settle_cancels()
                    await step.save()
            except Conflict:
                await self.reread(step.namespace, step.name, uid)
                continue
            if step.written is not None:
                self.observe(step.written)
            return

    async def fail_unreadable(self, body: Mapping[str, Any], exc: UnreadableStatus) -> None:
        """Fail a job whose status does not parse, naming the field, by a plain patch of its
        conditions (the typed step cannot load it); a job changed meanwhile is re-read."""
        meta = body.get("metadata") or {}
        status = dict(body.get("status") or {})
        conditions = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
        generation = int(meta.get("generation") or 0)
        now = datetime.now(UTC)
        for type_, ok in ((cond.FAILED, True), (cond.RUNNING, False)):
            cond.set_condition(
                conditions, type_, ok, exc.reason, str(exc), generation=generation, now=now
            )
        patch = {
            "conditions": conditions,
            "phase": cond.derive_phase(conditions).value,
            "completionTime": cond.timestamp(now),
        }
        log.error("%s/%s: %s", *_where(body), exc)
        try:
            written = await self.kube.patch_job_status(
                str(meta["namespace"]), str(meta["name"]), patch, str(meta["resourceVersion"])
            )
        except Conflict:
            await self.reread(str(meta["namespace"]), str(meta["name"]), str(meta.get("uid")))
            return
        self.events.emit_for(body)("Warning", exc.reason, str(exc))
        self.observe(written)

    async def run(self) -> None:
        await asyncio.gather(
            self.queue.run(), self.admission.run(), self.events.run(), self.gate.run()
        )

    async def stop_local_work(self) -> None:
        """This process was paused for a peer: stop the batches it sends itself.

        The peer that now acts resubmits them from their checkpoints; forgetting the keys
        makes this process do the same should it act again.
        """
        for entry in list(self.registry.providers.values()):
            if isinstance(entry.adapter, BatchAdapter):
                await entry.adapter.stop_all()
        self.registry.submitted.clear()


def gpu_demand(
    bodies: Iterable[Mapping[str, Any]],
) -> Iterable[tuple[list[str] | None, int, datetime | None]]:
    """(gpu.products, gpu.count, completion time) of each cached job, for the scarcity rule
    (raw bodies, not validated: this runs over every job). Jobs deleted are forgotten, so a
    pool's sole demand is remembered only as long as its jobs are kept."""
    for body in bodies:
        gpu = (body.get("spec") or {}).get("gpu") or {}
        products = gpu.get("products") or None
        completed = cond.parse_timestamp((body.get("status") or {}).get("completionTime"))
        yield (
            [str(p) for p in products] if isinstance(products, list) else None,
            int(gpu.get("count") or 1),
            completed,
        )
