"""A small async face on the Kubernetes API for the operator's own reads and writes.

The official client is synchronous; calls run in worker threads so the event loop that Kopf
and the network adapters share is never blocked.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hybridgpu.api.common import GROUP, VERSION

CALL_THREADS = 32
"""Blocking client calls in flight at once. asyncio's default executor has cpu+4 threads
(6 on two cores), which made a burst of 1,000 jobs queue for the API server."""

REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every call: without it a hung API server connection hangs the
step, its worker and in the end every job loop, while the liveness probe stays green."""

JOBS = "inferencejobs"
POLICIES = "routingpolicies"
PROVIDERS = "computeproviders"


def load_client_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a Pod, else the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    # Many job steps share the pool; the default of 4 connections serialises them.
    configuration.connection_pool_maxsize = CALL_THREADS
    return client.ApiClient(configuration)


class Conflict(Exception):
    """A version-checked write found the object changed since it was read: re-read, recompute."""


class Rejected(Exception):
    """The API server refused an object for good (a 4xx other than 401, 408, 409 and 429).

    Carries only the status and its reason phrase: the API's message can quote field values,
    which for a Job include the presigned URLs in its environment."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status
        self.reason = reason


_RETRYABLE_4XX = frozenset({401, 408, 409, 429})


class Kube:
    """The reads and writes the operator does outside Kopf's own patching."""

    def __init__(
        self,
        api_client: client.ApiClient,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        threads: int = CALL_THREADS,
        name: str = "kube",
    ) -> None:
        self._api_client = api_client
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._custom = client.CustomObjectsApi(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def _json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call whose answer is parsed as JSON only: the client's typed models (V1Job,
        V1Event) cost milliseconds each to build and to turn back into dicts."""
        answer = await self._call(fn, *args, _preload_content=False, **kwargs)
        return json.loads(answer.data) if answer.data else {}

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An InferenceJob, or None when it is gone."""
        return await self._get(JOBS, namespace, name)

    async def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(
                self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def patch_job_status(
        self,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the status subresource of an InferenceJob; returns the patched object.

        With ``resource_version`` the API server applies the patch only to that version of the
        object (optimistic concurrency, as Kueue's ApplyAdmissionStatus): a status computed
        from an older read raises ``Conflict`` instead of overwriting what another writer did.
        """
        return await self._patch_status(JOBS, namespace, name, patch, resource_version)

    async def patch_policy_status(
        self,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        return await self._patch_status(POLICIES, namespace, name, patch, resource_version)

    async def _patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._patch(
            self._custom.patch_namespaced_custom_object_status, plural, namespace, name, body
        )

    async def set_job_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        """Replace an InferenceJob's finalizers, only on the version they were read from."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        return await self._patch(
            self._custom.patch_namespaced_custom_object, JOBS, namespace, name, body
        )

    async def _patch(
        self,
        method: Callable[..., Any],
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """A merge patch of ours; a resourceVersion in it that is no longer current is a 409."""
        try:
            patched: dict[str, Any] = await self._call(
                method, GROUP, VERSION, namespace, plural, name, body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{plural} {namespace}/{name} changed since it was read") from None
            raise
        return patched

    async def get_peering_status(
        self, name: str, namespaces: Sequence[str]
    ) -> dict[str, Any] | None:
        """The peers of Kopf's peering ``name`` (cluster-wide, or merged over ``namespaces``);
        None when no such peering object (or no peering CRD) exists."""
        calls: list[tuple[Callable[..., Any], tuple[str, ...]]] = (
            [(self._custom.get_cluster_custom_object, ("kopf.dev", "v1", "clusterkopfpeerings"))]
            if not namespaces
            else [
                (self._custom.get_namespaced_custom_object, ("kopf.dev", "v1", ns, "kopfpeerings"))
                for ns in namespaces
            ]
        )
        peers: dict[str, Any] | None = None
        for method, where in calls:
            try:
                found: dict[str, Any] = await self._call(method, *where, name)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            status = found.get("status")
            peers = peers if peers is not None else {}
            if isinstance(status, dict):
                peers.update(status)
        return peers

    async def list_jobs(self, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        """Every InferenceJob of ``namespaces`` (all namespaces when empty), read now."""
        if not namespaces:
            found = await self._call(self._custom.list_cluster_custom_object, GROUP, VERSION, JOBS)
            return list(found.get("items") or [])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            found = await self._call(
                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, JOBS
            )
            items += found.get("items") or []
        return items

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A RoutingPolicy, or None when it is gone."""
        return await self._get(POLICIES, namespace, name)

    async def patch_provider_status(self, name: str, patch: dict[str, Any]) -> None:
        await self._call(
            self._custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            PROVIDERS,
            name,
            {"status": patch},
        )

    async def create_batch_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a batch/v1 Job; if one of that name exists already, return it (idempotent).

        Raises :class:`Rejected` when the API server refuses the Job for good."""
        namespace = manifest["metadata"]["namespace"]
        try:
            created: dict[str, Any] = await self._json(
                self._batch.create_namespaced_job, namespace, manifest
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            if 400 <= status < 500 and status not in _RETRYABLE_4XX:
                raise Rejected(status, str(exc.reason or "")) from None
            if status != 409:
                raise
            existing = await self.get_batch_job(namespace, manifest["metadata"]["name"])
            if existing is None:  # deleted between the two calls: try once more next loop
                raise
            return existing
        return created

    async def get_batch_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._json(
                self._batch.read_namespaced_job, name, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def delete_batch_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its Pods; a Job already gone is fine."""
        try:
            await self._call(
                self._batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def post_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._json(self._core.create_namespaced_event, namespace, body)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value of one Secret key, or None when the Secret or key is missing."""
        try:
            secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (secret.data or {}).get(key)
        return base64.b64decode(encoded).decode() if encoded is not None else None

    async def read_config_map_key(self, namespace: str, name: str, key: str) -> str | None:
        try:
            cm = await self._call(self._core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value: str | None = (cm.data or {}).get(key)
        return value
