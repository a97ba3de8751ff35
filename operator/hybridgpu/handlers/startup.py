"""Operator start-up: Kopf settings, shared state in the memo, metrics and telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from hybridgpu.backends import jobpolicy
from hybridgpu.controller.jobloop import Inventory, JobRuntime
from hybridgpu.controller.metrics import PhaseTally
from hybridgpu.controller.peering import PeeringGate
from hybridgpu.controller.registry import Registry
from hybridgpu.controller.releases import InClusterReleases
from hybridgpu.controller.results import ResultsConfig
from hybridgpu.handlers.diffbase import ChangingKindsDiffBase
from hybridgpu.handlers.policies import account_policies
from hybridgpu.inventory.pools import index_values
from hybridgpu.inventory.telemetry import TelemetryUnavailable, fetch_gpu_telemetry
from hybridgpu.kube import Kube, load_client_config
from hybridgpu.results.store import ResultStore
from hybridgpu.settings import SETTINGS

FINALIZER = "hybridgpu.dev/cleanup"
log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    try:
        jobpolicy.gpu_node_selector()
    except jobpolicy.Misconfigured as exc:
        raise kopf.PermanentError(str(exc)) from None
    settings.persistence.finalizer = FINALIZER
    # Keep Kopf's bookkeeping in annotations under our group, out of the users' status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hybridgpu.dev")
    # No handler here reacts to spec diffs (no on.create/update), so the spec is left out of
    # Kopf's last-handled-configuration: a copy of a large spec in an annotation made every
    # patch of such a job fail with 422 (annotations are capped at 256 KiB in all).
    # Built for ComputeProviders only, the one kind with change handlers (handlers/diffbase.py).
    settings.persistence.diffbase_storage = ChangingKindsDiffBase(
        prefix="hybridgpu.dev", key="last-handled-configuration", ignored_fields=["spec"]
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.batching.worker_limit = 2000
    memo.kube = Kube(load_client_config(SETTINGS.kubeconfig))
    memo.registry = Registry()
    memo.releases = InClusterReleases()
    memo.policy_generations = {}
    memo.draining = {}
    memo.phases = PhaseTally()
    memo.utilization = None
    memo.telemetry_error = "" if SETTINGS.prometheus_url else "no Prometheus URL is configured"
    if SETTINGS.metrics_port:
        start_http_server(SETTINGS.metrics_port, addr="0.0.0.0")  # noqa: S104 - scraped in-cluster
    memo.telemetry_task = asyncio.create_task(_telemetry_loop(memo))
    store = SETTINGS.result_store()
    memo.jobs = JobRuntime(
        memo.kube,
        memo.registry,
        _inventory(memo, kwargs),
        ResultsConfig(ResultStore(store) if store is not None else None, memo.kube.read_secret_key),
        _gate(memo.kube),
    )
    memo.jobs_task = asyncio.create_task(memo.jobs.run())
    memo.accounting_task = asyncio.create_task(account_policies(memo, kwargs))


def _gate(kube: Kube) -> PeeringGate:
    """Pauses the operator's own loops when Kopf's peering rule pauses this process."""
    name = SETTINGS.peering_name
    if name is None:
        return PeeringGate(identity=SETTINGS.peer_identity, priority=0, read=None)
    namespaces = list(SETTINGS.namespaces)

    async def read() -> dict[str, Any] | None:
        return await kube.get_peering_status(name, namespaces)

    return PeeringGate(
        identity=SETTINGS.peer_identity, priority=SETTINGS.peering_priority, read=read
    )


def _inventory(memo: kopf.Memo, indexes: dict[str, Any]) -> Inventory:
    """The runtime's live views on Kopf's indexes (they stay current as watches flow)."""
    policies: kopf.Index[tuple[str, str], tuple[dict[str, Any], str, dict[str, Any]]]
    policies = indexes["routing_policies"]

    def policy(namespace: str, name: str) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
        found = policies.get((namespace, name))
        return next(iter(found)) if found else None

    def all_policies() -> list[tuple[tuple[str, str], dict[str, Any]]]:
        return [(key, next(iter(values))[2]) for key, values in policies.items() if values]

    return Inventory(
        nodes=lambda: index_values(indexes["gpu_nodes"]),
        pods=lambda: index_values(indexes["gpu_pods"]),
        policies=policy,
        all_policies=all_policies,
        provider_exists=lambda name: name in indexes["compute_providers"],
        attempt_pods=lambda: indexes["attempt_pods"],
        attempt_jobs=lambda key: indexes["attempt_jobs"].get(key, ()),
        attempt_pod_records=lambda key: indexes["attempt_pods"].get(key, ()),
        telemetry=lambda: memo.utilization,
        telemetry_problem=lambda: str(memo.telemetry_error),
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The Pod's ServiceAccount in a cluster, else the kubeconfig (--kubeconfig/$KUBECONFIG).

    Kopf's own kubeconfig reader honours $KUBECONFIG as it is at login time, unlike the
    client library, which reads it once at import.
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    for name in ("jobs_task", "accounting_task", "telemetry_task"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    registry: Registry | None = memo.get("registry")
    if registry is not None:
        for entry in list(registry.providers.values()):
            await entry.adapter.aclose()


async def _telemetry_loop(memo: kopf.Memo) -> None:
    """Keep per-product DCGM utilisation from Prometheus in the memo."""
    if not SETTINGS.prometheus_url:
        return
    while True:
        try:
            telemetry = await asyncio.to_thread(fetch_gpu_telemetry, SETTINGS.prometheus_url)
            memo.utilization = telemetry
            memo.telemetry_error = ""
        except TelemetryUnavailable as exc:
            if memo.telemetry_error != str(exc):
                log.warning("GPU telemetry unavailable, routing on requests alone: %s", exc)
            memo.utilization = None
            memo.telemetry_error = str(exc)
        await asyncio.sleep(SETTINGS.telemetry_interval)
