"""Where one job's results go, decided by the operator: the store, the keys, the checks.

* No ``spec.output``: the operator's default store, under ``<prefix>/<namespace>/<name>/<uid>/``.
* ``spec.output.uri`` without credentials: must lie in the default store inside
  ``<prefix>/<namespace>/``: a tenant can never name another namespace's results.
* ``spec.output.credentialsSecretRef``: a Secret in the job's own namespace; the job's
  objects are read and written with those credentials only (what they may reach is the
  tenant's own business, never the operator's).
* ``spec.input.source``: read with the tenant's credentials when the job gives some, else
  from the default store inside the namespace's prefix.

Before anything is dispatched (:func:`prepare`) the output location is probed with a write,
and the input is read once and checked; each problem is a :class:`ResultsProblem` with a
CamelCase reason, ``final`` when the job can never succeed as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.api.limits import MAX_REQUESTS
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.backends.runtimes import RUNNER_PIPELINES
from hybridgpu.networks.batch import BatchResults
from hybridgpu.networks.requests import synthetic_requests
from hybridgpu.results.layout import JobLayout, tenant_prefix
from hybridgpu.results.output import BatchOutput
from hybridgpu.results.reader import InputError, Request, item_requests, scan, to_jsonl
from hybridgpu.results.resume import seed_from_parts_sync
from hybridgpu.results.source import RequestSource
from hybridgpu.results.store import (
    SECRET_ACCESS_KEY_ID,
    SECRET_ENDPOINT,
    SECRET_REGION,
    SECRET_SECRET_ACCESS_KEY,
    ResultStore,
    StoreConfig,
    StoreError,
)
from hybridgpu.results.urls import ObjectURL

log = logging.getLogger(__name__)
MAX_URL_LIFETIME = timedelta(days=7)
"""S3 SigV4 presigned URLs live at most 7 days."""
SecretReader = Callable[[str, str, str], Awaitable[str | None]]
"""(namespace, name, key) -> the decoded value, or None."""


class ResultsProblem(Exception):
    def __init__(self, reason: str, message: str, *, final: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.final = final


@dataclass
class JobResults:
    """One job's stores and keys."""

    store: ResultStore
    layout: JobLayout
    input_store: ResultStore | None = None
    input_url: ObjectURL | None = None

    @property
    def output_url(self) -> ObjectURL:
        return self.layout.output


class ResultsConfig:
    """The operator's default store (if any) and how tenant Secrets are read."""

    def __init__(self, default: ResultStore | None, read_secret: SecretReader) -> None:
        self.default = default
        self.read_secret = read_secret

    def applies(self, spec: InferenceJobSpec) -> bool:
        """Whether the job's results are kept (a store is there for them)."""
        return self.default is not None or spec.output is not None

    async def resolve(
        self, namespace: str, name: str, uid: str, spec: InferenceJobSpec
    ) -> JobResults:
        tenant = await self._tenant_store(namespace, spec)
        if spec.output is not None:
            root = ObjectURL.parse(spec.output.uri, "spec.output.uri")
            store = tenant or self._default_within(root, namespace, "spec.output.uri")
            layout = JobLayout.for_job(root, namespace, name, uid)
        else:
            if self.default is None:
                raise ResultsProblem(
                    "NoResultStore",
                    "no result store: set spec.output (with credentialsSecretRef) or configure "
                    "the operator's default store (Helm values results.*)",
                )
            store = self.default
            layout = JobLayout.for_job(self.default.root, namespace, name, uid)
        job = JobResults(store, layout)
        if spec.input.source is not None:
            url = ObjectURL.parse(spec.input.source, "spec.input.source")
            job.input_url = url
            job.input_store = tenant or self._default_within(url, namespace, "spec.input.source")
        return job

    def _default_within(self, url: ObjectURL, namespace: str, field: str) -> ResultStore:
        if self.default is None:
            raise ResultsProblem(
                "NoResultStore",
                f"{field}: no default result store is configured; give "
                "spec.output.credentialsSecretRef for your own bucket",
            )
        allowed = tenant_prefix(self.default.root, namespace)
        if not url.within(allowed):
            raise ResultsProblem(
                "OutputForbidden" if field == "spec.output.uri" else "InputForbidden",
                f"{field}: {url} is outside this namespace's part of the default store "
                f"({allowed}/); name your own bucket with spec.output.credentialsSecretRef",
            )
        return self.default

    async def _tenant_store(self, namespace: str, spec: InferenceJobSpec) -> ResultStore | None:
        if spec.output is None or spec.output.credentials_secret_ref is None:
            return None
        secret = spec.output.credentials_secret_ref.name
        data: dict[str, str] = {}
        for key in (SECRET_ACCESS_KEY_ID, SECRET_SECRET_ACCESS_KEY, SECRET_ENDPOINT, SECRET_REGION):
            value = await self.read_secret(namespace, secret, key)
            if value:
                data[key] = value
        root = ObjectURL.parse(spec.output.uri, "spec.output.uri")
        default_endpoint = self.default.config.endpoint if self.default is not None else ""
        try:
            config = StoreConfig.from_secret(data, root.bucket, default_endpoint=default_endpoint)
        except ValueError as exc:
            raise ResultsProblem(
                "CredentialsMissing",
                f"spec.output.credentialsSecretRef: Secret {namespace}/{secret}: {exc}",
                final=False,
            ) from None
        return ResultStore(config)


async def prepare(
    job: JobResults,
    spec: InferenceJobSpec,
    policy: RoutingPolicySpec,
    items: list[dict[str, Any]] | None,
) -> int:
    """Check the output is writable and the input readable and sound; the request count."""
    if spec.task is not Task.CONTAINER and not spec.input.has_requests() and items is None:
        raise ResultsProblem(
            "InputMissing",
            "spec.input: no requests: set source, inline or configMapRef (or loadTest: true "
            "for synthetic requests)",
        )
    try:
        await job.store.check_writable(job.layout.base)
    except StoreError as exc:
        raise ResultsProblem(
            "OutputNotWritable",
            f"cannot write the output location: {exc.message}",
            final=exc.denied or exc.missing,
        ) from None
    if job.input_url is not None and job.input_store is not None:
        try:
            summary = await scan(
                job.input_store,
                job.input_url,
                max_bytes=policy.max_input_bytes(),
                max_requests=MAX_REQUESTS,
            )
        except InputError as exc:
            raise ResultsProblem(exc.reason, exc.message) from None
        return summary.total
    listed = _items(spec, items)
    if listed is not None:
        return len(listed)
    return spec.input.requests


def _items(spec: InferenceJobSpec, items: list[dict[str, Any]] | None) -> list[Request] | None:
    if items is not None:
        field = "spec.input.configMapRef"
    elif spec.input.inline is not None:
        items, field = spec.input.inline, "spec.input.inline"
    else:
        return None
    try:
        return item_requests(items, field)
    except InputError as exc:
        raise ResultsProblem(exc.reason, exc.message) from None


def batch_results(
    job: JobResults, spec: InferenceJobSpec, total: int, items: list[dict[str, Any]] | None
) -> BatchResults:
    """The input and output of a client-driven batch."""
    if job.input_url is not None and job.input_store is not None:
        source = RequestSource.from_store(job.input_store, job.input_url, total)
    elif (listed := _items(spec, items)) is not None:
        source = RequestSource.of_requests(listed)
    else:
        source = RequestSource.of_bodies(synthetic_requests(spec))
    return BatchResults(source, BatchOutput(job.store, job.layout, source.total))


def url_lifetime(spec: InferenceJobSpec, policy: RoutingPolicySpec | None) -> timedelta:
    """How long runners' presigned URLs live: the run time allowed plus the queue, at most
    7 days."""
    factor = policy.failover.max_run_time_factor if policy is not None else 2.0
    queue = policy.in_cluster.max_queue_time if policy is not None else timedelta(minutes=5)
    wanted = spec.estimated_duration * factor + queue + timedelta(minutes=10)
    return min(wanted, MAX_URL_LIFETIME)


async def runner_urls(
    job: JobResults,
    spec: InferenceJobSpec,
    policy: RoutingPolicySpec | None,
    items: list[dict[str, Any]] | None,
) -> tuple[str | None, str]:
    """(input URL, output URL) presigned for a runner (in-cluster Job, container network):
    GET on the input (inline and configMap inputs are staged into the store first), PUT on
    the output object. Never logged or stored in status."""
    lifetime = url_lifetime(spec, policy)
    input_url: str | None = None
    if job.input_url is not None and job.input_store is not None:
        input_url = job.input_store.sign("GET", job.input_url, lifetime)
    elif (listed := _items(spec, items)) is not None:
        await job.store.put(
            job.layout.staged_input, to_jsonl(listed), content_type="application/jsonl"
        )
        input_url = job.store.sign("GET", job.layout.staged_input, lifetime)
    return input_url, job.store.sign("PUT", job.output_url, lifetime)


def checkpoint_urls(
    job: JobResults, spec: InferenceJobSpec, policy: RoutingPolicySpec | None
) -> tuple[str, str]:
    """(PUT, GET) presigned on the job's one checkpoint object, for an in-cluster runner.

    The key is the job's, not the attempt's: attempt N+1 reads what attempt N saved.
    Credentials, like :func:`runner_urls`: never logged or stored in status."""
    lifetime = url_lifetime(spec, policy)
    key = job.layout.checkpoint
    return job.store.sign("PUT", key, lifetime), job.store.sign("GET", key, lifetime)


async def manifest_urls(
    job: JobResults,
    spec: InferenceJobSpec,
    policy: RoutingPolicySpec | None,
    items: list[dict[str, Any]] | None,
    *,
    parts_total: int | None = None,
) -> dict[str, str | None]:
    """The URL keywords of ``backends.incluster.job_manifest``: the input and output, and the
    checkpoint's PUT and GET when there is an input to resume. ``parts_total``, for a job
    that ran on a network before: its batch's requests as counted, which place the parts a
    client-driven batch wrote; they are handed to the runner's checkpoint first."""
    input_url, output_url = await runner_urls(job, spec, policy, items)
    urls: dict[str, str | None] = {"input_url": input_url, "output_url": output_url}
    if input_url and parts_total and spec.task in RUNNER_PIPELINES:
        await _hand_parts_to_runner(job, parts_total)
    if input_url:
        urls["checkpoint_url"], urls["resume_url"] = checkpoint_urls(job, spec, policy)
    return urls


async def _hand_parts_to_runner(job: JobResults, total: int) -> None:
    # Back from a client-driven network: what it finished is not the runner's to send again.
    try:
        handed = await asyncio.to_thread(seed_from_parts_sync, job.store, job.layout, total)
    except StoreError as exc:  # the runner then resends them: it costs time, not the job
        log.warning("the network's parts were not handed to the runner: %s", exc.message)
        return
    if handed:
        log.info("%d requests the network finished handed to the runner's checkpoint", handed)
