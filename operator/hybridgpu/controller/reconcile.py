"""One step of an InferenceJob's life: route, dispatch, track, fail over, finish.

Called in a loop by the job's Kopf daemon. Every step reads the job's status (the truth),
does at most one outward action, and writes what it did to status *before* the next action:
the intent (attempt number, idempotency key) is written before a submission, so a crash at
any moment neither loses the job nor submits it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import ValidationError

from hybridgpu.api.inferencejob import (
    Attempt,
    AttemptOutcome,
    Backend,
    CostStatus,
    Decision,
    EnvVar,
    ExternalRef,
    InferenceJobSpec,
    InferenceJobStatus,
    OutputStatus,
    PendingCancel,
    Placement,
    PlacementStatus,
    Progress,
)
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.backends import incluster
from hybridgpu.backends.cluster_backend import PROVIDER as IN_CLUSTER_PROVIDER
from hybridgpu.backends.cluster_backend import InClusterBackend, NameTaken, attempt_ref
from hybridgpu.backends.runtimes import (
    CHECKPOINT_URL_ENV,
    INPUT_URL_ENV,
    OUTPUT_URL_ENV,
    RESUME_URL_ENV,
    runs_own_program,
)
from hybridgpu.controller import metrics
from hybridgpu.controller import results as jobresults
from hybridgpu.controller.claims import ACTIVE_OUTCOMES
from hybridgpu.controller.errors import PermanentJobError, TemporaryJobError, UnreadableStatus
from hybridgpu.controller.finalizers import WORK_FINALIZER
from hybridgpu.controller.registry import Registry
from hybridgpu.jobs import conditions as cond
from hybridgpu.kube import Kube, Rejected
from hybridgpu.networks import errors as neterr
from hybridgpu.networks.base import RemoteRef
from hybridgpu.networks.batch import BatchAdapter
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.http import bypassing_breaker
from hybridgpu.results.output import OutputSummary, summarize
from hybridgpu.results.store import StoreError
from hybridgpu.routing.admission import (
    dearer_places,
    evicted_recheck_seconds,
    evicted_would_queue,
    wake_places,
)
from hybridgpu.routing.decision import RoutingDecision, ScoredCandidate, to_status
from hybridgpu.routing.engine import DEFERRED, decide
from hybridgpu.routing.preemption import Eviction
from hybridgpu.routing.requeue import requeue_after_seconds
from hybridgpu.routing.snapshot import Snapshot
from hybridgpu.routing.telemetry import telemetry_condition
from hybridgpu.units import format_money, parse_money

log = logging.getLogger(__name__)

ACTIVE = frozenset(AttemptOutcome(o) for o in ACTIVE_OUTCOMES)
POLL_PENDING = 2.0
POLL_RUNNING = 5.0
POLL_IN_CLUSTER = 30.0
"""In-cluster attempts are tracked on their Pod and batch/v1 Job watch events; this poll is a
backstop only."""
RETRY_SOON = 5.0
RUNNER_URLS_REUSE = 6 * 3600.0
"""Seconds an attempt's presigned URLs are reused for its resubmissions (they live longer)."""
URL_ORDER = (INPUT_URL_ENV, OUTPUT_URL_ENV, CHECKPOINT_URL_ENV, RESUME_URL_ENV)
PROGRESS_STEP = 0.01
PROGRESS_EVERY = 30.0
CANCEL_RETRY = 30.0
"""Seconds between tries of owed cancels (``status.pendingCancels``)."""
PREEMPTING = "Preempting"
PREEMPTED = "Preempted"
PREEMPTING_RECHECK = 30.0
"""Seconds a job waiting for the GPUs it evicted is decided again at the latest (the Pods'
deletion wakes it sooner)."""

Emit = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message) -> posts an Event on the job."""


@dataclass
class Deps:
    """What a reconcile step may touch, injected so tests can run it without Kopf."""

    kube: Kube
    registry: Registry
    snapshot: Callable[[str, str, RoutingPolicySpec], Snapshot]
    """(namespace, policy name, policy) -> the snapshot to decide on."""
    policy: Callable[[str, str], RoutingPolicySpec | None]
    """(namespace, name) -> the RoutingPolicy spec, or None when it does not exist."""
    provider_exists: Callable[[str], bool]
    load_requests: Callable[[str, InferenceJobSpec], Awaitable[list[dict[str, Any]] | None]]
    telemetry_problem: Callable[[], str] = lambda: ""
    """Why GPU utilisation is not available from Prometheus ("" when it is)."""
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    policy_spent: Callable[[str, str], Decimal | None] = lambda _ns, _name: None
    """(namespace, policy) -> accrued external spend of its current budget period, as last
    accounted; running attempts are cancelled once it passes the limit."""
    results: jobresults.ResultsConfig | None = None
    """The result stores; None: results are not kept (an operator without a store)."""
    in_cluster: InClusterBackend | None = None
    """In-cluster attempts, tracked from the operator's Job and Pod indexes (None: no
    indexes, every status is read from the API server)."""
    evict: (
        Callable[
            [str, InferenceJobSpec, RoutingPolicySpec, RoutingDecision, datetime | None],
            tuple[Eviction, str] | None,
        ]
        | None
    ) = None
    """The admission loop's preemption: (``namespace/name``, spec, policy, the engine's
    decision, created) -> what to evict for the job and how to say it, or None (outside
    admission: never)."""
    dispatch_inline: bool = True
    """Submit right after writing the intent. The admission loop turns this off: it writes
    the intent and leaves the submission to the job's next step, off the admission path."""


class Plan(Enum):
    """What a routing step decided to do, before its status is written."""

    FINISH = "finish"
    BACKOFF = "backoff"
    WAIT = "wait"
    DISPATCH = "dispatch"
    REJECT = "reject"


@dataclass
class RoutePlan:
    kind: Plan
    delay: float | None = None
    decision: RoutingDecision | None = None
    target: ScoredCandidate | None = None
    reason: str = ""
    message: str = ""
    eviction: Eviction | None = None
    """Work to evict before the job can start (it waits for the GPUs that frees)."""


def candidate_name(attempt: Attempt) -> str:
    """The routing candidate an attempt ran on, so failover can exclude it."""
    if attempt.backend is Backend.IN_CLUSTER:
        return f"in-cluster/{attempt.gpu_product}"
    return f"{attempt.provider}/{attempt.gpu_product}"


def freed_place(attempt: Attempt) -> str:
    """Where an attempt that ends or is cancelled may leave capacity free.

    An external attempt frees a slot of the provider's concurrency limit, whatever the product,
    hence the bare provider name (see controller/wakeup.py).
    """
    if attempt.backend is Backend.IN_CLUSTER:
        return candidate_name(attempt)
    return attempt.provider


def _money(value: Decimal) -> str:
    return format_money(value, 6)


def _usd(value: Decimal) -> Decimal:
    """Money as status keeps it: six places."""
    return parse_money(_money(value))


def _dump(status: InferenceJobStatus) -> dict[str, Any]:
    """The status as it is written to the API (and compared, to patch only what changed).

    No ``pendingCancels`` once none is owed: its presence is what holds the job's finalizer
    and what ``kubectl get -o jsonpath`` users test for."""
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not status.pending_cancels:
        dumped.pop("pendingCancels", None)
    return dumped


class JobStep:
    """The status of one job being worked on, and the step that moves it on."""

    def __init__(self, body: dict[str, Any], deps: Deps, emit: Emit) -> None:
        self.deps = deps
        self.emit = emit
        self.meta = body.get("metadata") or {}
        self.rv: str | None = self.meta.get("resourceVersion")
        """The version this status was read at: every write is conditional on it."""
        self.name: str = self.meta["name"]
        self.namespace: str = self.meta["namespace"]
        self.uid: str = self.meta.get("uid", "")
        self.generation: int = int(self.meta.get("generation") or 0)
        self.raw_spec: dict[str, Any] = dict(body.get("spec") or {})
        try:
            self.status = InferenceJobStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["status", *(str(p) for p in first["loc"])])
            raise UnreadableStatus(f"{where}: {first['msg']}") from None
        """The status read and written as the API's model (``api/inferencejob.py``)."""
        self.original = _dump(self.status)
        self.now = deps.now()
        self.stamp = self.now.replace(microsecond=0)
        """``now`` as status records times (to the second, as Kubernetes writes them)."""
        self.written: dict[str, Any] | None = None
        """The object as our last status patch left it (the watch may not have caught up)."""
        self.conditions = self.status.conditions
        self.attempts = self.status.attempts
        self.wake_on: tuple[str, ...] = ()
        """Places this step's decision waits for (deferred for price); capacity freed at one
        of them is a reason to run the next step before the delay ``run`` returned."""

    # -- status helpers -------------------------------------------------------------------

    def set(self, type_: str, ok: bool, reason: str, message: str) -> None:
        cond.set_model(
            self.conditions, type_, ok, reason, message, generation=self.generation, now=self.now
        )

    def patch(self) -> dict[str, Any]:
        """The status fields that changed, for a merge patch."""
        self.status.phase = cond.model_phase(self.conditions)
        self.status.observed_generation = self.generation
        self._sum_cost()
        current = _dump(self.status)
        changed = {k: v for k, v in current.items() if self.original.get(k) != v}
        for key in self.original.keys() - current.keys():
            changed[key] = None
        return changed

    async def save(self) -> None:
        """Write what changed, only onto the version it was computed from (else Conflict).

        The status is checked against the API model first: a field or outcome the CRD does
        not document fails here, in this job's step, not silently in the API server's pruning.
        """
        changed = self.patch()
        if changed:
            # Assignments are not validated; what goes out is (an outcome the CRD does not
            # document fails here, in this job's step, not in the API server's pruning).
            InferenceJobStatus.model_validate(_dump(self.status))
            self.written = await self.deps.kube.patch_job_status(
                self.namespace, self.name, changed, resource_version=self.rv
            )
            self.rv = self.written["metadata"].get("resourceVersion")
            self.original = _dump(self.status)

    async def save_progress(self) -> None:
        """Save a routine poll, unless all it changed is progress and cost, by little.

        Progress and cost are written when requests done moved by at least
        ``PROGRESS_STEP`` of the batch or ``PROGRESS_EVERY`` seconds after the last write of
        this job; anything else (an outcome, a condition, a new attempt) is written at once.
        A restart loses at most that much of a checkpoint, which resends no request twice
        to a network that honours the per-request idempotency keys.
        """
        changed = self.patch()
        if not changed:
            return
        written = self.deps.registry.progress_written
        last = written.get(self.uid)
        if last is not None and _progress_only(self.original, _dump(self.status)):
            progress = self.status.progress or Progress()
            total = max(progress.total, 1)
            done = progress.completed
            before = int((self.original.get("progress") or {}).get("completed") or 0)
            moved = (done - before) / total
            if moved < PROGRESS_STEP and time.monotonic() - last < PROGRESS_EVERY:
                return
        await self.save()
        written[self.uid] = time.monotonic()

    def _sum_cost(self) -> None:
        costs = [a.cost for a in self.attempts if a.cost is not None]
        if costs or self.status.cost is not None:
            cost = self.status.cost = self.status.cost or CostStatus()
            cost.accrued = _usd(sum(costs, Decimal(0)))

    def active_attempt(self) -> Attempt | None:
        if self.attempts and self.attempts[-1].outcome in ACTIVE:
            return self.attempts[-1]
        return None

    # -- the step -------------------------------------------------------------------------

    async def run(self) -> float | None:
        """Do one step; return seconds until the next, or None when the job is final.

        A job is final only once no cancel is owed: until then it is retried every
        ``CANCEL_RETRY`` seconds, even after it ended.
        """
        if self.status.pending_cancels or self.active_attempt() is not None:
            # Work is out: the job may not vanish (jobs dispatched by an older operator,
            # under Kopf's finalizer, get this one here).
            await self.hold_finalizer()
        if self.status.pending_cancels:
            await self.settle_cancels()
            await self.save()
        delay = await self.step()
        if not self.status.pending_cancels:
            return delay
        # The step ended work and saved that first (the cancels are owed in status): now
        # stop it, and record what could not be stopped yet.
        if any(not p.tries for p in self.status.pending_cancels):
            await self.settle_cancels(only_new=True)
            await self.save()
        if not self.status.pending_cancels:
            return delay
        return CANCEL_RETRY if delay is None else min(delay, CANCEL_RETRY)

    async def step(self) -> float | None:
        if cond.model_terminal(self.conditions):
            return None
        try:
            spec = InferenceJobSpec.model_validate(self.raw_spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["spec", *(str(p) for p in first["loc"])])
            await self.finish(False, "InvalidSpec", f"{where}: {first['msg']}")
            return None
        if spec.suspend:
            return await self.suspend()
        if cond.model_true(self.conditions, cond.SUSPENDED):
            self.set(cond.SUSPENDED, False, "Resumed", "spec.suspend is false: routing again")
            self.emit("Normal", "Resumed", "spec.suspend is false: routing again")
        current = self.active_attempt()
        policy = self.deps.policy(self.namespace, spec.policy_ref)
        if current is None:
            if policy is None:
                return await self.wait_for_policy(spec)
            if self.needs_results(spec):
                return await self.prepare_results(spec, policy)
            return await self.route(spec, policy)
        if current.backend is Backend.IN_CLUSTER:
            return await self.track_in_cluster(spec, policy, current)
        return await self.track_external(spec, policy, current)

    async def wait_for_policy(self, spec: InferenceJobSpec) -> float:
        message = f"RoutingPolicy {self.namespace}/{spec.policy_ref} does not exist"
        self.set(cond.ROUTED, False, "PolicyNotFound", message)
        await self.save()
        return 10.0

    async def suspend(self) -> float:
        current = self.active_attempt()
        if current is not None:
            await self.cancel_attempt(current)
            self.end_attempt(current, AttemptOutcome.CANCELLED, "Suspended", "spec.suspend is true")
        if not cond.model_true(self.conditions, cond.SUSPENDED):
            self.emit("Normal", "Suspended", "spec.suspend is true: nothing runs")
        self.set(cond.SUSPENDED, True, "Suspended", "spec.suspend is true: nothing runs")
        self.set(cond.RUNNING, False, "Suspended", "spec.suspend is true")
        self.set(cond.ROUTED, False, "Suspended", "spec.suspend is true")
        self.status.placement = None
        self.status.external_ref = None
        await self.save()
        return 10.0

    def needs_admission(self) -> tuple[InferenceJobSpec, RoutingPolicySpec] | None:
        """The job's spec and policy when its next step is a routing decision, else None."""
        if cond.model_terminal(self.conditions) or self.active_attempt() is not None:
            return None
        try:
            spec = InferenceJobSpec.model_validate(self.raw_spec)
        except ValidationError:
            return None
        if spec.suspend or self.needs_results(spec):
            return None  # the output location and the input are checked first, by run()
        policy = self.deps.policy(self.namespace, spec.policy_ref)
        return None if policy is None else (spec, policy)

    async def route(self, spec: InferenceJobSpec, policy: RoutingPolicySpec) -> float | None:
        return await self.commit_route(spec, self.plan_route(spec, policy))

    def plan_route(self, spec: InferenceJobSpec, policy: RoutingPolicySpec) -> RoutePlan:
        """Decide where the job goes and put it in status, without writing anything yet."""
        if cond.model_true(self.conditions, cond.SUSPENDED):
            self.set(cond.SUSPENDED, False, "Resumed", "spec.suspend is false: routing again")
            self.emit("Normal", "Resumed", "spec.suspend is false: routing again")
        ended_badly = (AttemptOutcome.FAILED, AttemptOutcome.REQUEUED)
        failed = [a for a in self.attempts if a.outcome in ended_badly]
        counted = [a for a in self.attempts if a.outcome is AttemptOutcome.FAILED]
        if len(counted) >= policy.failover.max_attempts:
            last = counted[-1]
            return RoutePlan(
                Plan.FINISH,
                reason="MaxAttemptsReached",
                message=f"{len(counted)} attempts failed; last: {last.message or last.reason}",
            )
        if self.attempts:
            ended = self.attempts[-1].end_time
            wait = policy.failover.backoff.total_seconds()
            if ended and (self.now - ended).total_seconds() < wait:
                return RoutePlan(Plan.BACKOFF, delay=wait - (self.now - ended).total_seconds())
        excluded = frozenset(candidate_name(a) for a in failed)
        snapshot = self.deps.snapshot(self.namespace, spec.policy_ref, policy)
        if any(a.reason in incluster.ELSEWHERE for a in failed):
            excluded |= {f"in-cluster/{pool.gpu_product}" for pool in snapshot.pools}
        created_at = cond.parse_timestamp(self.meta.get("creationTimestamp"))
        started = time.perf_counter()
        decision = decide(spec, policy, snapshot, created_at=created_at, excluded=excluded)
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        # Says "DCGM telemetry decided" only when deciding without it gives another answer.
        self.set(
            cond.TELEMETRY,
            *telemetry_condition(
                spec,
                policy,
                snapshot,
                decision,
                self.deps.telemetry_problem(),
                created_at=created_at,
                excluded=excluded,
            ),
        )
        target_label = decision.target.provider if decision.target else "none"
        metrics.DECISIONS.labels(
            outcome=decision.outcome, target=target_label, reason=decision.reason
        ).inc()
        self.record_decision(to_status(decision, spec.policy_ref, self.now))
        if decision.outcome == "Wait" and decision.reason == DEFERRED:
            self.wake_on = tuple(sorted(wake_places(decision) | dearer_places(decision)))
        if decision.outcome == "Rejected":
            return RoutePlan(
                Plan.REJECT, decision=decision, reason=decision.reason, message=decision.message
            )
        if self.deps.evict is not None:
            found = self.deps.evict(
                f"{self.namespace}/{self.name}", spec, policy, decision, created_at
            )
            if found is not None:
                eviction, message = found
                self.prepare_preempting(message)
                self.wake_on = (eviction.place,)
                return RoutePlan(
                    Plan.WAIT, decision=decision, delay=PREEMPTING_RECHECK, eviction=eviction
                )
        if decision.outcome == "Wait" or decision.target is None:
            self.prepare_wait(decision)
            return RoutePlan(Plan.WAIT, decision=decision, delay=decision.retry_after_seconds)
        if self._evicted_would_queue(decision.target):
            message = (
                f"evicted for higher-ranked work: waits for a free {decision.target.gpu_product} "
                "GPU rather than queue a Pod for the ones it gave up"
            )
            self.set(cond.ROUTED, False, PREEMPTED, message)
            return RoutePlan(
                Plan.WAIT, decision=decision, delay=evicted_recheck_seconds(decision.target)
            )
        self.prepare_dispatch(spec, decision, decision.target)
        return RoutePlan(Plan.DISPATCH, decision=decision, target=decision.target)

    def _evicted_would_queue(self, target: ScoredCandidate) -> bool:
        last = self.attempts[-1] if self.attempts else None
        evicted = last is not None and last.outcome is AttemptOutcome.PREEMPTED
        return evicted_would_queue(evicted, target)

    # -- results --------------------------------------------------------------------------

    def needs_results(self, spec: InferenceJobSpec) -> bool:
        """Whether the output location and the input are still to be checked."""
        results = self.deps.results
        return (
            results is not None
            and results.applies(spec)
            and not (self.status.output is not None and self.status.output.uri)
        )

    def total(self, spec: InferenceJobSpec) -> int:
        """Requests in the batch: as counted from the input, else spec.input.requests."""
        progress = self.status.progress
        return progress.total if progress is not None and progress.total else spec.input.requests

    async def prepare_results(
        self, spec: InferenceJobSpec, policy: RoutingPolicySpec
    ) -> float | None:
        """Before any money is spent: probe the output location, read and check the input;
        record where the output will be. A problem fails the job, or makes it wait."""
        assert self.deps.results is not None
        try:
            items = await self.deps.load_requests(self.namespace, spec)
            job = await self.deps.results.resolve(self.namespace, self.name, self.uid, spec)
            total = await jobresults.prepare(job, spec, policy, items)
        except jobresults.ResultsProblem as problem:
            if problem.final:
                await self.finish(False, problem.reason, problem.message)
                return None
            previous = cond.find_model(self.conditions, cond.ROUTED)
            if previous is None or previous.reason != problem.reason:
                self.emit("Warning", problem.reason, problem.message)
            self.set(cond.ROUTED, False, problem.reason, problem.message)
            await self.save()
            return 30.0
        self.status.output = OutputStatus(uri=str(job.output_url), summary=f"0/{total}")
        self.status.progress = Progress(completed=0, total=total)
        await self.save()
        return 0.0

    async def job_results(self, spec: InferenceJobSpec) -> jobresults.JobResults | None:
        """The job's stores and keys, when its results are kept."""
        results = self.deps.results
        if results is None or not (self.status.output is not None and self.status.output.uri):
            return None
        try:
            return await results.resolve(self.namespace, self.name, self.uid, spec)
        except jobresults.ResultsProblem as problem:
            raise TemporaryJobError(f"{problem.reason}: {problem.message}") from None

    async def record_output(self, spec: InferenceJobSpec, summary: OutputSummary | None) -> str:
        """Put what the output object holds into status; why not, when it is missing."""
        job = await self.job_results(spec)
        if job is None:
            return ""
        if summary is None:
            summary = await summarize(job.store, job.output_url)
        if summary is None:
            return f"the work ended but its output object {job.output_url} is missing"
        self.status.output = OutputStatus.model_validate(summary.to_status(self.total(spec)))
        return ""

    async def output_written(self, spec: InferenceJobSpec, adapter: Any) -> bool:
        """Whether a container network's job has written its output object yet."""
        if isinstance(adapter, BatchAdapter):
            return False
        job = await self.job_results(spec)
        if job is None:
            return False
        try:
            return await job.store.head(job.output_url) is not None
        except StoreError as exc:
            log.warning("%s/%s: %s", self.namespace, self.name, exc.message)
            return False

    async def runner_spec(
        self, spec: InferenceJobSpec, job: jobresults.JobResults, key: str
    ) -> InferenceJobSpec:
        """The spec with HYBRIDGPU_INPUT_URL / HYBRIDGPU_OUTPUT_URL in its env (presigned), and
        the checkpoint's HYBRIDGPU_CHECKPOINT_URL / HYBRIDGPU_RESUME_URL when the container
        runs the user's own program and has an input to resume: an attempt evicted or failed
        over from one network resumes on the next from what it saved.

        The URLs of one attempt are signed once per process and reused: a resubmission under
        the same key must send the same spec, since some networks find earlier work by what
        was sent (Akash by its manifest's hash, which covers the env).
        """
        cached = self.deps.registry.runner_urls.get(key)
        if cached is not None and time.monotonic() - cached[1] < RUNNER_URLS_REUSE:
            urls = cached[0]
        else:
            policy = self.deps.policy(self.namespace, spec.policy_ref)
            items = await self.deps.load_requests(self.namespace, spec)
            input_url, output_url = await jobresults.runner_urls(job, spec, policy, items)
            urls = {OUTPUT_URL_ENV: output_url}
            if input_url:
                urls[INPUT_URL_ENV] = input_url
                if runs_own_program(spec):
                    put, get = jobresults.checkpoint_urls(job, spec, policy)
                    urls |= {CHECKPOINT_URL_ENV: put, RESUME_URL_ENV: get}
            self.deps.registry.runner_urls[key] = (urls, time.monotonic())
        env = [e for e in spec.env or [] if not e.name.startswith("HYBRIDGPU_")]
        env += [EnvVar(name=name, value=urls[name]) for name in URL_ORDER if name in urls]
        return spec.model_copy(update={"env": env})

    def record_decision(self, decision: Decision) -> None:
        """Keep the previous decision's time when nothing else changed: a job decided again
        and again while it waits costs no status write."""
        previous = self.status.decision
        if previous is not None and previous.model_copy(update={"time": None}) == (
            decision.model_copy(update={"time": None})
        ):
            decision.time = previous.time
        self.status.decision = decision

    async def commit_route(self, spec: InferenceJobSpec, plan: RoutePlan) -> float | None:
        """Write what ``plan_route`` put in status, then act on it."""
        if plan.kind is Plan.BACKOFF:
            return plan.delay
        if plan.kind in (Plan.FINISH, Plan.REJECT):
            await self.finish(False, plan.reason, plan.message)
            return None
        if plan.kind is Plan.WAIT:
            await self.save()
            return plan.delay or 30.0
        assert plan.target is not None
        if not self.deps.dispatch_inline:
            # The admission loop writes the intent alone: nothing is out yet, so the job may
            # still vanish. The step that dispatches holds the finalizer first (``run``), with
            # the same version check: one write fewer per decision in a burst.
            await self.save()
            return 0.0
        await self.hold_finalizer()
        await self.save()  # the intent first: a crash from here on resumes this attempt
        attempt = self.attempts[-1]
        if attempt.backend is Backend.EXTERNAL:
            return await self.submit_external(spec, attempt)
        policy = self.deps.policy(self.namespace, spec.policy_ref)
        return await self.track_in_cluster(spec, policy, attempt)

    async def hold_finalizer(self) -> None:
        """Before the first dispatch: the job may not vanish while work or spend is out.

        Conditional on the version this step read, like every intent write: a job changed
        meanwhile is re-read and decided again.
        """
        if WORK_FINALIZER in (self.meta.get("finalizers") or []):
            return
        assert self.rv is not None
        written = await self.deps.kube.set_job_finalizers(
            self.namespace,
            self.name,
            [*(self.meta.get("finalizers") or []), WORK_FINALIZER],
            self.rv,
        )
        self.meta = written["metadata"]
        self.rv = self.meta.get("resourceVersion")
        self.written = written  # the cache learns the new version even if the step fails

    def prepare_wait(self, decision: RoutingDecision) -> None:
        previous = cond.find_model(self.conditions, cond.ROUTED)
        if previous is None or previous.reason != decision.reason:
            self.emit("Normal", "Waiting", decision.message)
        self.set(cond.ROUTED, False, decision.reason, decision.message)

    def prepare_preempting(self, message: str) -> None:
        previous = cond.find_model(self.conditions, cond.ROUTED)
        if previous is None or previous.reason != PREEMPTING:
            self.emit("Normal", PREEMPTING, message)
        self.set(cond.ROUTED, False, PREEMPTING, message)

    def preempt(self, by: str) -> Attempt | None:
        """End the active attempt for higher-ranked work: billed to now (in-cluster; a
        network's attempt keeps what the network last reported), the stop of its work owed
        (the Job's delete, or the network's cancel, done once this status is saved and
        retried until confirmed), the job queued again. None when there is no such attempt
        any more (it ended, or moved on, since the view was read, or its Job finished and the
        step has not recorded it yet), or when it is still being submitted: a cancel could go
        out before the work exists."""
        attempt = self.active_attempt()
        if attempt is None or (
            attempt.backend is Backend.EXTERNAL and attempt.outcome is AttemptOutcome.DISPATCHING
        ):
            return None
        if attempt.backend is Backend.IN_CLUSTER and self.cluster().ended(
            f"{self.uid}/{attempt.attempt}"
        ):
            # Its Job finished since the view was read: evicting it now would throw away
            # work that is done (and run it again); its own step records the end.
            return None
        where = self._owe_stop(attempt)
        message = (
            f"attempt {attempt.attempt} on {where} evicted for {by} (higher rank);"
            " queued again, resuming from its checkpoint"
        )
        self.end_attempt(attempt, AttemptOutcome.PREEMPTED, PREEMPTED, message)
        attempt.preempted_by = by
        self.status.placement = None
        self.status.external_ref = None
        self.status.preemptions = (self.status.preemptions or 0) + 1
        self.set(cond.RUNNING, False, PREEMPTED, message)
        self.set(cond.ROUTED, False, PREEMPTED, message)
        self.emit("Warning", PREEMPTED, message)
        metrics.PREEMPTIONS.labels(gpu_product=attempt.gpu_product).inc()
        return attempt

    def _owe_stop(self, attempt: Attempt) -> str:
        """Bill an evicted in-cluster attempt to now and owe the stop of its work (the Job's
        delete, the network's cancel); where it ran, for messages."""
        if attempt.backend is Backend.EXTERNAL:
            self.owe_remote_cancel(attempt)
            return f"{attempt.provider} ({attempt.gpu_product})"
        spec = InferenceJobSpec.model_validate(self.raw_spec)
        if attempt.running_since is not None:
            self.accrue_in_cluster(spec, attempt, attempt.running_since, self.now)
        self.owe_cancel(
            PendingCancel(
                provider=IN_CLUSTER_PROVIDER,
                idempotency_key=f"{self.uid}/{attempt.attempt}",
                id=attempt.external_id,
                attempt=attempt.attempt,
                gpu_product=attempt.gpu_product,
                since=self.stamp,
                tries=0,
            )
        )
        return attempt.gpu_product

    def prepare_dispatch(
        self, spec: InferenceJobSpec, decision: RoutingDecision, target: ScoredCandidate
    ) -> None:
        """Put the attempt's intent in status: number, key, placement and what it holds."""
        number = len(self.attempts) + 1
        backend = Backend(target.backend)
        self.attempts.append(
            Attempt(
                attempt=number,
                backend=backend,
                provider=target.provider,
                gpu_product=target.gpu_product,
                gpus=spec.gpu.count,
                policy_ref=spec.policy_ref,
                start_time=self.stamp,
                outcome=AttemptOutcome.DISPATCHING,
                price_per_gpu_hour=_usd(target.price_per_gpu_hour),
                estimated_cost=_usd(target.estimated_cost),
            )
        )
        self.status.placement = PlacementStatus(
            backend=backend,
            provider=target.provider,
            gpu_product=target.gpu_product,
            price_per_gpu_hour=_usd(target.price_per_gpu_hour),
            estimated_cost=_usd(target.estimated_cost),
        )
        cost = self.status.cost = self.status.cost or CostStatus()
        cost.estimated = _usd(target.estimated_cost)
        self.status.progress = Progress(completed=0, total=self.total(spec))
        if backend is Backend.EXTERNAL:
            self.status.external_ref = ExternalRef(
                provider=target.provider, idempotency_key=f"{self.uid}-{number}", attempt=number
            )
        else:
            self.status.external_ref = None
        self.set(cond.ROUTED, True, decision.reason, decision.message)
        self.emit("Normal", "Routed", decision.message)
        created = cond.parse_timestamp(self.meta.get("creationTimestamp"))
        if created and number == 1:
            metrics.TIME_TO_ROUTED.observe((self.now - created).total_seconds())

    # -- in-cluster -----------------------------------------------------------------------

    def cluster(self) -> InClusterBackend:
        backend = self.deps.in_cluster
        if backend is None:  # no watches to read (a one-off step): ask the API server
            backend = InClusterBackend(self.deps.kube, lambda _k: (), lambda _k: ())
        return backend

    async def create_in_cluster(self, spec: InferenceJobSpec, attempt: Attempt) -> float:
        """Create the attempt's Job. Its outcome and name are written by the step the Job's
        watch event wakes, which reads them from the index: one write, not two."""
        policy = self.deps.policy(self.namespace, spec.policy_ref)
        urls: dict[str, Any] = {}
        job_store = await self.job_results(spec)
        if job_store is not None:
            items = await self.deps.load_requests(self.namespace, spec)
            after_network = any(a.backend is Backend.EXTERNAL for a in self.attempts)
            urls = await jobresults.manifest_urls(
                job_store,
                spec,
                policy,
                items,
                parts_total=self.total(spec) if after_network else None,
            )
        try:
            manifest = incluster.job_manifest(
                name=self.name,
                namespace=self.namespace,
                uid=self.uid,
                spec=spec,
                attempt=attempt.attempt,
                gpu_product=attempt.gpu_product,
                **_deadline_inputs(policy),
                **urls,
            )
        except incluster.ManifestError as exc:
            # Nothing was created. What only the cluster refuses sends a job that may run
            # elsewhere there (routing then skips every in-cluster pool); else the job fails
            # with the reason, naming the field.
            if exc.reason in incluster.ELSEWHERE and spec.placement is not Placement.IN_CLUSTER:
                return await self.failover(attempt, exc.reason, str(exc))
            raise PermanentJobError(str(exc), reason=exc.reason) from None
        name = manifest["metadata"]["name"]
        try:
            await self.cluster().submit(manifest)
        except Rejected as exc:
            # A refused Job never runs: end the attempt (and what it holds), fail over.
            return await self.failover(
                attempt, "JobRejected", f"the API server refused Job {name}: {exc}"
            )
        except NameTaken as exc:
            # A Job of that name exists and is not ours: never adopt (or delete) it.
            return await self.failover(attempt, "JobNameTaken", str(exc))
        return POLL_IN_CLUSTER

    async def track_in_cluster(
        self, spec: InferenceJobSpec, policy: RoutingPolicySpec | None, attempt: Attempt
    ) -> float | None:
        backend = self.cluster()
        ref = attempt_ref(self.namespace, self.uid, attempt.attempt, attempt.external_id)
        if attempt.outcome is AttemptOutcome.DISPATCHING:
            found = backend.find(ref)
            if found is None:
                return await self.create_in_cluster(spec, attempt)
            ref = found  # created before a crash, or by an earlier version under its name
            attempt.outcome = AttemptOutcome.PENDING
        attempt.external_id = ref.id.split("/", 1)[1]
        remote = await backend.status(ref)
        # Recorded once seen: the Pods index may not hold the Pod yet just after a restart.
        started = remote.started_at or attempt.running_since
        if started is not None and attempt.outcome is AttemptOutcome.PENDING:
            attempt.outcome = AttemptOutcome.RUNNING
            self.mark_running(started)
        if remote.state == "Lost":
            return await self.failover(attempt, "JobLost", remote.message)
        if remote.state == "Succeeded":
            end = remote.ended_at or self.now
            self.accrue_in_cluster(spec, attempt, started or end, end)
            # Completion: the container exited 0 AND its output object is there.
            missing = await self.record_output(spec, None)
            if missing:
                return await self.failover(attempt, "OutputMissing", missing)
            self.end_attempt(attempt, AttemptOutcome.SUCCEEDED, "Completed", remote.message)
            total = self.total(spec)
            self.status.progress = Progress(completed=total, total=total)
            await self.finish(True, "Completed", f"ran in-cluster on {attempt.gpu_product}")
            return None
        if remote.state == "Failed":
            self.accrue_in_cluster(spec, attempt, started or self.now, self.now)
            return await self.failover(attempt, "JobFailed", remote.message)
        if started is not None:
            self.accrue_in_cluster(spec, attempt, started, self.now)
            breach = self.limit_breach(spec, policy, attempt, started)
            if breach is not None:
                await backend.cancel(ref)
                return await self.stop_for_limit(attempt, *breach)
            await self.save_progress()
            return POLL_IN_CLUSTER
        since = attempt.start_time or self.now
        max_queue = requeue_after_seconds(policy)  # the simulator's rule too
        if (self.now - since).total_seconds() > max_queue:
            await backend.cancel(ref)
            return await self.failover(
                attempt,
                "QueueTimeout",
                f"not running after maxQueueTime ({int(max_queue)}s) on {attempt.gpu_product}",
                outcome=AttemptOutcome.REQUEUED,
            )
        await self.save()
        return min(POLL_IN_CLUSTER, max(max_queue - (self.now - since).total_seconds(), 1.0))

    def accrue_in_cluster(
        self, spec: InferenceJobSpec, attempt: Attempt, start: datetime, end: datetime
    ) -> None:
        price = attempt.price_per_gpu_hour or Decimal(0)
        hours = Decimal(max((end - start).total_seconds(), 0.0)) / Decimal(3600)
        attempt.cost = _usd(price * spec.gpu.count * hours)

    # -- external -------------------------------------------------------------------------

    def remote_ref(self, attempt: Attempt) -> RemoteRef | None:
        ref = self.status.external_ref
        if ref is None or not ref.id:
            return None
        return RemoteRef(ref.provider, ref.id, ref.idempotency_key)

    async def submit_external(self, spec: InferenceJobSpec, attempt: Attempt) -> float | None:
        provider = attempt.provider
        entry = self.deps.registry.providers.get(provider)
        if entry is None or entry.draining:
            return await self.provider_missing(attempt)
        ref_status = self.status.external_ref = self.status.external_ref or ExternalRef(
            provider=provider, idempotency_key=self.attempt_key(attempt.attempt)
        )
        checkpoint_text = ref_status.checkpoint
        items = await self.deps.load_requests(self.namespace, spec)
        extra: dict[str, Any] = {}
        job = await self.job_results(spec)
        sent = spec
        if job is not None:
            if isinstance(entry.adapter, BatchAdapter):
                # The store is the checkpoint: the batch lists what is written and sends the rest.
                extra["results"] = jobresults.batch_results(job, spec, self.total(spec), items)
            else:
                sent = await self.runner_spec(spec, job, ref_status.idempotency_key)
        try:
            ref = await entry.adapter.submit(
                sent,
                idempotency_key=ref_status.idempotency_key,
                gpu_product=attempt.gpu_product,
                max_price_per_gpu_hour=_cap(
                    spec, self.deps.policy(self.namespace, spec.policy_ref)
                ),
                checkpoint=Checkpoint.from_str(checkpoint_text) if checkpoint_text else None,
                requests=items,
                **extra,
            )
        except neterr.NetworkError as exc:
            return await self.network_trouble(attempt, exc, ref=None)
        self.deps.registry.submitted.add(ref_status.idempotency_key)
        ref_status.id = ref.id
        attempt.external_id = ref.id
        if attempt.outcome is AttemptOutcome.DISPATCHING:
            attempt.outcome = AttemptOutcome.PENDING
        await self.save()
        return POLL_PENDING

    async def track_external(
        self, spec: InferenceJobSpec, policy: RoutingPolicySpec | None, attempt: Attempt
    ) -> float | None:
        entry = self.deps.registry.providers.get(attempt.provider)
        if entry is None or entry.draining:
            return await self.provider_missing(attempt)
        entry.active_jobs.add(self.uid)
        ref = self.remote_ref(attempt)
        key = self.status.external_ref.idempotency_key if self.status.external_ref else ""
        if ref is not None and entry.adapter.unattended and key not in self.deps.registry.submitted:
            # Restarted since the submission of work that runs by itself: poll it by its
            # recorded id. Submitting again would not even find it on Akash, whose lookup
            # hash covers presigned URLs this process has signed anew.
            self.deps.registry.submitted.add(key)
        if (
            ref is None
            or attempt.outcome is AttemptOutcome.DISPATCHING
            or key not in self.deps.registry.submitted
        ):
            # Crashed between writing the intent and recording the id, or restarted since the
            # submission: the same key finds the same remote job (or creates it once), and a
            # client-driven batch resumes from its checkpoint.
            return await self.submit_external(spec, attempt)
        try:
            remote = await entry.adapter.status(ref)
        except neterr.NetworkError as exc:
            return await self.network_trouble(attempt, exc, ref=ref)
        if remote.checkpoint is not None and self.status.external_ref is not None:
            self.status.external_ref.checkpoint = remote.checkpoint.to_str()
        attempt.cost = _usd(remote.accrued_usd)
        output = self.status.output
        counted = output is not None and bool(output.uri)
        # With results kept, the input was counted before dispatch; a container network
        # knows only spec.input.requests.
        total = self.total(spec) if counted else (remote.total or self.total(spec))
        self.status.progress = Progress(completed=remote.completed, total=total)
        if output is not None and output.uri and remote.state == "Running":
            output.summary = f"{remote.completed}/{total}"
        cap = _cap(spec, policy)
        if (
            remote.price_per_gpu_hour is not None
            and cap is not None
            and remote.price_per_gpu_hour > cap
        ):
            await self.cancel_attempt(attempt)
            return await self.failover(
                attempt,
                "PriceAboveCap",
                f"{attempt.provider} now asks {remote.price_per_gpu_hour} USD/GPU-hour, "
                f"above the cap of {cap}",
            )
        if remote.state == "Running" and await self.output_written(spec, entry.adapter):
            # A container network's completion signal is the output object: an Akash
            # deployment never ends by itself (its provider restarts exited containers).
            remote = replace(remote, state="Succeeded", message="the output object is written")
        if remote.state == "Succeeded":
            # Marketplaces bill instances and leases until they are destroyed, not until the
            # workload exits: release them as soon as the work is done.
            await self.cancel_attempt(attempt)
            # Succeeded only with the output in the store (a container's completion rule:
            # it exited 0 AND wrote its output object).
            missing = await self.record_output(spec, remote.output)
            if missing:
                return await self.failover(attempt, "OutputMissing", missing)
            self.end_attempt(
                attempt, AttemptOutcome.SUCCEEDED, "Completed", remote.message or "completed"
            )
            self.status.progress = Progress(completed=total, total=total)
            await self.finish(
                True, "Completed", f"ran on {attempt.provider} ({attempt.gpu_product})"
            )
            return None
        if remote.state in ("Failed", "Lost"):
            reason = "JobLost" if remote.state == "Lost" else "RemoteFailed"
            await self.cancel_attempt(attempt)
            return await self.failover(attempt, reason, remote.message or reason)
        if remote.state == "Running" and attempt.outcome is not AttemptOutcome.RUNNING:
            attempt.outcome = AttemptOutcome.RUNNING
            self.mark_running(self.now)
        breach = self.limit_breach(spec, policy, attempt, attempt.running_since)
        if breach is not None:
            await self.cancel_attempt(attempt)
            return await self.stop_for_limit(attempt, *breach)
        await self.save_progress()
        return POLL_RUNNING if remote.state == "Running" else POLL_PENDING

    async def network_trouble(
        self, attempt: Attempt, exc: neterr.NetworkError, ref: RemoteRef | None
    ) -> float | None:
        entry = self.deps.registry.providers.get(attempt.provider)
        circuit_open = entry is not None and entry.adapter.circuit_state == "Open"
        if isinstance(exc, neterr.JobLost | neterr.NotFound):
            return await self.failover(attempt, "JobLost", exc.message)
        if isinstance(exc, neterr.PriceAboveCap):
            return await self.failover(attempt, "PriceAboveCap", exc.message)
        if exc.retryable and not circuit_open and not isinstance(exc, neterr.CircuitOpen):
            self.set(
                cond.RUNNING,
                cond.model_true(self.conditions, cond.RUNNING),
                "NetworkError",
                exc.message,
            )
            await self.save()
            return RETRY_SOON
        await self.cancel_attempt(attempt)
        reason = (
            "CircuitOpen" if circuit_open or isinstance(exc, neterr.CircuitOpen) else "NetworkError"
        )
        return await self.failover(attempt, reason, exc.message)

    async def provider_missing(self, attempt: Attempt) -> float | None:
        name = attempt.provider
        entry = self.deps.registry.providers.get(name)
        if entry is None and self.deps.provider_exists(name):
            return RETRY_SOON  # the provider's adapter is still being set up after a restart
        if entry is not None:
            await self.cancel_attempt(attempt)
        return await self.failover(
            attempt, "ProviderGone", f"ComputeProvider {name} is being deleted or is gone"
        )

    # -- limits on running work -----------------------------------------------------------

    def limit_breach(
        self,
        spec: InferenceJobSpec,
        policy: RoutingPolicySpec | None,
        attempt: Attempt,
        running_since: datetime | None,
    ) -> tuple[str, str, bool] | None:
        """(reason, message, whether the job fails for good) when a running attempt has passed
        the job's maxCost, its policy's budget or its deadline."""
        accrued = sum((a.cost for a in self.attempts if a.cost is not None), Decimal(0))
        if spec.max_cost is not None and accrued > spec.max_cost:
            return (
                "MaxCostExceeded",
                f"accrued {_money(accrued)} USD, above spec.maxCost {spec.max_cost}",
                True,
            )
        if policy is not None and policy.budget is not None and attempt.backend is Backend.EXTERNAL:
            spent = self.deps.policy_spent(self.namespace, attempt.policy_ref or spec.policy_ref)
            if spent is not None and spent > policy.budget.limit:
                return (
                    "BudgetExceeded",
                    f"RoutingPolicy {spec.policy_ref} has spent {_money(spent)} USD, above its "
                    f"budget.limit of {policy.budget.limit}",
                    False,
                )
        factor = policy.failover.max_run_time_factor if policy is not None else 2.0
        started = running_since or attempt.start_time
        allowed = spec.estimated_duration.total_seconds() * factor
        if started is not None and (self.now - started).total_seconds() > allowed:
            return (
                "DeadlineExceeded",
                f"running for more than estimatedDuration x {factor:g} ({int(allowed)}s)",
                False,
            )
        return None

    async def stop_for_limit(
        self, attempt: Attempt, reason: str, message: str, final: bool
    ) -> float | None:
        """End an attempt cancelled for a limit; the job fails over, or fails on maxCost."""
        if not final:
            return await self.failover(attempt, reason, message)
        self.end_attempt(attempt, AttemptOutcome.FAILED, reason, message)
        self.status.external_ref = None
        await self.finish(False, reason, message)
        return None

    # -- shared endings -------------------------------------------------------------------

    async def cancel_attempt(self, attempt: Attempt) -> None:
        """Stop the attempt's work wherever it runs.

        Remote work is not stopped here: the cancel is owed in ``status.pendingCancels``, and
        the step stops it once the status that ends the attempt is saved (``run``). Stopping
        first would lose the outcome to a crash in between: Vast.ai forgets a destroyed
        instance (the restarted operator would read the attempt as lost and run it again),
        and an Akash deployment closed by us reads as finished. The remote work is cancelled
        by its id or, when the id was never recorded (a crash or an error between creating
        it and writing the id), found by the attempt's idempotency key; what cannot be
        stopped yet stays owed and is retried; the job's finalizer waits for it.
        """
        # Notified here too, as the job's deletion cancels without ending the attempt.
        wakeup = self.deps.registry.wakeup
        if attempt.backend is Backend.IN_CLUSTER:
            ref = attempt_ref(self.namespace, self.uid, attempt.attempt, attempt.external_id)
            await self.cluster().cancel(ref)
            wakeup.notify(freed_place(attempt))
            return
        entry = self.deps.registry.providers.get(attempt.provider)
        if entry is not None:
            entry.active_jobs.discard(self.uid)
        wakeup.notify(freed_place(attempt))
        self.owe_remote_cancel(attempt)

    def owe_remote_cancel(self, attempt: Attempt) -> None:
        """Owe the cancel of an external attempt's work, by its id or else by its key."""
        remote = self.remote_ref(attempt)
        self.owe_cancel(
            PendingCancel(
                provider=attempt.provider,
                idempotency_key=(
                    remote.idempotency_key if remote else self.attempt_key(attempt.attempt)
                ),
                id=remote.id if remote else attempt.external_id,
                attempt=attempt.attempt,
                gpu_product=attempt.gpu_product,
                since=self.stamp,
                tries=0,
            )
        )

    def attempt_key(self, number: int) -> str:
        """The idempotency key of attempt ``number`` (as ``prepare_dispatch`` makes it)."""
        ref = self.status.external_ref
        if ref is not None and ref.attempt == number and ref.idempotency_key:
            return ref.idempotency_key
        return f"{self.uid}-{number}"

    def owe_cancel(self, owed: PendingCancel) -> None:
        pending = self.status.pending_cancels
        if not any(p.idempotency_key == owed.idempotency_key for p in pending):
            pending.append(owed)

    async def try_cancel(self, owed: PendingCancel) -> bool:
        """One try at stopping owed remote work; True when nothing of it is left to stop."""
        provider = owed.provider
        if provider == IN_CLUSTER_PROVIDER:  # an evicted attempt's Job
            try:
                await self.cluster().cancel(
                    attempt_ref(self.namespace, self.uid, owed.attempt, owed.id)
                )
            except Exception as exc:
                # The API server's trouble is retried like a network's: it must not count
                # as the job's own failure (MAX_FAILURES would fail the job for it).
                owed.tries += 1
                owed.last_error = f"deleting the attempt's Job failed: {type(exc).__name__}"
                return False
            return True
        entry = self.deps.registry.providers.get(provider)
        if entry is None:
            if self.deps.provider_exists(provider):
                owed.last_error = "the provider's adapter is not set up yet"
                return False
            self.emit(
                "Warning",
                "CancelImpossible",
                f"attempt {owed.attempt}: ComputeProvider {provider} is gone; any work "
                f"left under key {owed.idempotency_key} must be stopped on the network",
            )
            return True
        key = owed.idempotency_key
        # Sent even through an open circuit: stopping the bill is worth one call.
        try:
            with bypassing_breaker():
                ref: RemoteRef | None
                if owed.id:
                    ref = RemoteRef(provider, owed.id, key)
                else:
                    spec = InferenceJobSpec.model_validate(self.raw_spec)
                    policy = self.deps.policy(self.namespace, spec.policy_ref)
                    job = await self.job_results(spec)
                    if job is not None and not isinstance(entry.adapter, BatchAdapter):
                        spec = await self.runner_spec(spec, job, key)  # as it was sent
                    ref = await entry.adapter.find(
                        spec,
                        idempotency_key=key,
                        gpu_product=owed.gpu_product,
                        max_price_per_gpu_hour=_cap(spec, policy),
                    )
                if ref is not None:
                    await entry.adapter.cancel(ref)
        except neterr.NetworkError as exc:
            owed.tries += 1
            owed.last_error = exc.message[:512]
            if owed.tries == 1:
                self.emit(
                    "Warning",
                    "CancelOwed",
                    f"could not stop attempt {owed.attempt} on {provider} yet "
                    f"({owed.last_error}); retried until it is",
                )
            log.warning(
                "%s/%s: cancelling attempt %s on %s failed: %s",
                self.namespace,
                self.name,
                owed.attempt,
                provider,
                exc.message,
            )
            return False
        except ValidationError:
            return True  # a spec that does not parse was never submitted
        return True

    async def settle_cancels(self, *, only_new: bool = False) -> int:
        """Try every owed cancel (or only those never tried); the number still owed."""
        left = []
        for owed in self.status.pending_cancels:
            if (only_new and owed.tries) or not await self.try_cancel(owed):
                left.append(owed)
        self.status.pending_cancels = left
        return len(left)

    def end_attempt(
        self, attempt: Attempt, outcome: AttemptOutcome, reason: str, message: str
    ) -> None:
        attempt.outcome = outcome
        attempt.reason = reason
        attempt.message = message
        attempt.end_time = self.stamp
        if attempt.backend is Backend.EXTERNAL:
            entry = self.deps.registry.providers.get(attempt.provider)
            if entry is not None:
                entry.active_jobs.discard(self.uid)
            if attempt.cost:
                metrics.EXTERNAL_SPEND.labels(provider=attempt.provider).inc(float(attempt.cost))
        self.deps.registry.wakeup.notify(freed_place(attempt))

    async def failover(
        self,
        attempt: Attempt,
        reason: str,
        message: str,
        *,
        outcome: AttemptOutcome = AttemptOutcome.FAILED,
    ) -> float:
        self.end_attempt(attempt, outcome, reason, message)
        self.status.external_ref = None
        self.status.placement = None
        self.set(cond.RUNNING, False, reason, message)
        self.set(cond.ROUTED, False, "FailingOver", f"attempt {attempt.attempt}: {message}")
        self.emit(
            "Warning",
            "FailingOver",
            f"attempt {attempt.attempt} on {candidate_name(attempt)}: {message}",
        )
        metrics.FAILOVERS.labels(reason=reason).inc()
        await self.save()
        return 0.5

    def mark_running(self, started: datetime) -> None:
        started = started.replace(microsecond=0)
        if self.attempts:
            attempt = self.attempts[-1]
            attempt.running_since = started
            if self.raw_spec.get("preemptible") is True:
                # Work a waiting latency-sensitive job may evict has appeared (in the cluster
                # or on a network): it was told to wait when nothing was evictable, and its
                # retry may be hours away.
                self.deps.registry.wakeup.notify_evictable()
        if self.status.start_time is None:
            self.status.start_time = started
            created = cond.parse_timestamp(self.meta.get("creationTimestamp"))
            if created:
                metrics.TIME_TO_RUNNING.observe(max((started - created).total_seconds(), 0.0))
        placement = self.status.placement
        message = (
            f"running on {placement.provider} ({placement.gpu_product})"
            if placement is not None
            else "running"
        )
        self.set(cond.RUNNING, True, "Running", message)
        self.emit("Normal", "Running", message)

    async def finish(self, ok: bool, reason: str, message: str) -> None:
        type_ = cond.SUCCEEDED if ok else cond.FAILED
        self.set(type_, True, reason, message)
        self.set(cond.RUNNING, False, reason, message)
        self.status.completion_time = self.stamp
        self.emit("Normal" if ok else "Warning", reason, message)
        await self.save()


def _deadline_inputs(policy: RoutingPolicySpec | None) -> dict[str, Any]:
    """What the in-cluster Job's activeDeadlineSeconds is made of, from the job's policy."""
    if policy is None:
        return {}
    return {
        "max_run_time_factor": policy.failover.max_run_time_factor,
        "max_queue_time": policy.in_cluster.max_queue_time,
    }


def _cap(spec: InferenceJobSpec, policy: RoutingPolicySpec | None) -> Decimal | None:
    caps = [spec.max_price_per_gpu_hour]
    if policy is not None:
        caps.append(policy.external.max_price_per_gpu_hour)
    present = [c for c in caps if c is not None]
    return min(present) if present else None


def _progress_only(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two statuses differ only in progress, cost and a batch checkpoint."""

    def routine(status: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in status.items() if k not in ("progress", "cost")}
        out["attempts"] = [
            {k: v for k, v in a.items() if k != "cost"} for a in status.get("attempts") or []
        ]
        ref = status.get("externalRef")
        if isinstance(ref, dict):
            out["externalRef"] = {k: v for k, v in ref.items() if k != "checkpoint"}
        return out

    return routine(before) == routine(after)
