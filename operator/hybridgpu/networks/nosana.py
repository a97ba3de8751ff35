"""Nosana adapter: one deployment (deployment manager, paid with credits) per job.

Every shape here is the ``@nosana/api`` npm package's types (2.1.8, ``dist/client/schema.d.ts``,
generated upstream from Nosana's production swagger); the contract tests validate the
adapter's traffic and the stand-in's answers against schemas derived from them
(``tests/contract/specs/nosana-*.json``).

Why deployments, not ``POST /api/jobs/list``: posting a bare job needs the job definition
pinned to IPFS beforehand (the SDKs use a pinning service) and the API has no way to find a
job again by anything the client chose, so a restart between the post and the status write
would post a second job. A deployment takes the definition inline and has a ``name``, and
``GET /api/deployments?name=`` finds it: the name is derived from the idempotency key.

Flow: ``GET /api/deployments?name=`` → else ``POST /api/deployments/create`` ``{name, market,
replicas: 1, timeout (minutes), strategy: "SIMPLE", job_definition}`` → ``POST
/api/deployments/{id}/start`` (also when a crash left it ``DRAFT``) → ``GET
/api/deployments/{id}/jobs`` for the job's address → ``GET /api/jobs/{address}`` (``state``
numeric: 0 QUEUED, 1 RUNNING, 2 COMPLETED, 3 STOPPED as in @nosana/kit's JobState;
``timeStart``/``timeEnd`` epoch seconds, ``timeEnd`` 0 while running; ``usdRewardPerHour``;
``jobResult.opStates[].exitCode``; ``ipfsResult``) → ``POST /api/deployments/{id}/stop``.

Offers: ``GET /api/markets/`` (``usd_reward_per_hour``, ``gpu_types``, ``lowest_vram``; one GPU
per job). Capacity is the market's queue on chain (a node queue holds the idle hosts); the
API's only view of it is the optional ``nodes`` array, which third-party code reports as
always empty. So ``len(nodes)`` is the capacity of a market once its record has listed nodes
(this process saw the API keep the array up to date); a market that has never listed one is
offered with capacity 1, a longer start (a job waits in the market queue for the next host)
and the label ``nosana.io/capacity: unknown``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from typing import Any

import httpx

from hybridgpu.api.computeprovider import ComputeProviderSpec, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import GIB, bearer
from hybridgpu.networks.base import RemoteRef, RemoteState
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    job_env,
    server_time,
)
from hybridgpu.networks.errors import BadRequest, JobLost, NotFound
from hybridgpu.networks.gpu_names import from_nosana
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

TYPICAL_START_SECONDS = 60.0
QUEUED_START_SECONDS = 600.0
"""Expected start when no idle host is listed: the job waits for one to join the market."""
JOB_STATES: dict[int, str] = {0: "QUEUED", 1: "RUNNING", 2: "COMPLETED", 3: "STOPPED"}
"""@nosana/kit's JobState."""
_ENDED = frozenset({"STOPPING", "STOPPED", "ARCHIVED", "ERROR", "INSUFFICIENT_FUNDS"})
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def deployment_name(key: str) -> str:
    """The deployment's name for an idempotency key: readable, and unique per key."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"hybridgpu-{_NAME_UNSAFE.sub('-', key)[:40]}-{digest}"


def timeout_minutes(job: InferenceJobSpec) -> int:
    """The deployment's timeout: twice the estimate, at least 10 minutes (Nosana: ≥ 1)."""
    return max(math.ceil(job.estimated_duration.total_seconds() * 2 / 60), 10)


def job_definition(job: InferenceJobSpec, key: str) -> dict[str, Any]:
    """A Nosana job definition (schema 0.1) running the job's container on one GPU, once."""
    cmd = [*(job.command or []), *(job.args or [])]
    args: dict[str, Any] = {
        "image": job.image or DEFAULT_IMAGE,
        "gpu": True,
        "env": job_env(job, key),
        "restart_policy": "no",
    }
    if cmd:
        args["cmd"] = cmd
    meta: dict[str, Any] = {"trigger": "api"}
    if job.gpu.min_memory:
        meta["system_resources"] = {"required_vram": job.gpu.min_memory_bytes() // GIB}
    return {
        "version": "0.1",
        "type": "container",
        "meta": meta,
        "ops": [{"id": "hybridgpu", "type": "container/run", "args": args}],
    }


def _body(response: httpx.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def _exit_codes(result: Any) -> list[int]:
    if not isinstance(result, dict):
        return []
    codes = []
    for op in result.get("opStates") or []:
        code = op.get("exitCode") if isinstance(op, dict) else None
        if isinstance(code, int) and not isinstance(code, bool):
            codes.append(code)
    return codes


class NosanaAdapter(ContainerAdapter):
    """Runs one Nosana deployment per InferenceJob, paid with credits."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        super().__init__(name, spec, credential, policy, bearer(credential))
        self._prices: dict[str, Decimal] = {}
        self._closing: set[str] = set()
        self._lists_nodes: set[str] = set()
        """Markets whose record has listed idle nodes: their ``nodes`` array is kept up to date."""

    async def _markets(self) -> list[dict[str, Any]]:
        response = await self.client.request("GET", "/api/markets/", retry=True)
        body = _body(response)
        return [m for m in (body if isinstance(body, list) else []) if isinstance(m, dict)]

    @staticmethod
    def _product(market: dict[str, Any]) -> str:
        gpus = market.get("gpu_types") or []
        return from_nosana(str(gpus[0] if gpus else market.get("name", "")))

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per market; capacity from its listed idle nodes."""
        offers = []
        for market in await self._markets():
            price = decimal_of(market.get("usd_reward_per_hour"))
            if price is None:
                continue
            nodes = market.get("nodes")
            address = str(market.get("address", ""))
            if isinstance(nodes, list) and nodes:
                self._lists_nodes.add(address)
            # An empty list is trusted only from a market that has listed nodes before.
            known = isinstance(nodes, list) and address in self._lists_nodes
            premium = str(market.get("type", "")).upper() == "PREMIUM"
            labels = {
                "nosana.io/market": str(market.get("address", "")),
                "nosana.io/market-type": str(market.get("type", "")),
            }
            if not known:
                labels["nosana.io/capacity"] = "unknown"
            offers.append(
                self.offer(
                    self._product(market),
                    memory_bytes=int(market.get("lowest_vram", 0) or 0) * GIB,
                    pricing=PerGPUHour(price),
                    available=len(nodes) if known and isinstance(nodes, list) else 1,
                    typical_start_seconds=TYPICAL_START_SECONDS if known else QUEUED_START_SECONDS,
                    trust_tier=None if premium else TrustTier.COMMUNITY,
                    labels=labels,
                    max_gpus_per_job=1,
                )
            )
        return offers

    async def _find(self, name: str) -> dict[str, Any] | None:
        response = await self.client.request(
            "GET", "/api/deployments", params={"name": name}, retry=True
        )
        body = _body(response)
        for deployment in (body.get("deployments") if isinstance(body, dict) else None) or []:
            # Stopped ones count too: the same key is the same attempt, never a new one.
            if isinstance(deployment, dict) and deployment.get("name") == name:
                return deployment
        return None

    async def lookup(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str | None:
        """The deployment named after the key."""
        del job, gpu_product, cap
        found = await self._find(deployment_name(key))
        return None if found is None else str(found["id"])

    async def start(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str:
        """Find the deployment named after the key, or create it in the cheapest market."""
        if job.gpu.count != 1:
            raise BadRequest(
                self.name, "Nosana markets run one GPU per job; spec.gpu.count must be 1"
            )
        name = deployment_name(key)
        found = await self._find(name)
        if found is None:
            markets = [
                (decimal_of(m.get("usd_reward_per_hour")), m)
                for m in await self._markets()
                if self._product(m) == gpu_product
                and int(m.get("lowest_vram", 0) or 0) * GIB >= job.gpu.min_memory_bytes()
            ]
            priced = sorted(((p, m) for p, m in markets if p is not None), key=lambda i: i[0])
            if not priced:
                raise BadRequest(self.name, f"no market offers {gpu_product}")
            price, market = priced[0]
            self.check_cap(price, cap, "before submission")
            body = {
                "name": name,
                "market": str(market["address"]),
                "replicas": 1,
                "timeout": timeout_minutes(job),
                "strategy": "SIMPLE",
                "job_definition": job_definition(job, key),
            }
            response = await self.client.request(
                "POST", "/api/deployments/create", json=body, retry=False
            )
            found = _body(response)
            if not isinstance(found, dict) or not isinstance(found.get("id"), str):
                raise BadRequest(self.name, "deployments/create answered without an id")
            self._prices[found["id"]] = price
        deployment_id = str(found["id"])
        if found.get("status") == "DRAFT":  # created, not started (perhaps by a crashed run)
            await self.client.request("POST", f"/api/deployments/{deployment_id}/start", retry=True)
        return deployment_id

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Check the rate the job is charged (or its market's) against the cap."""
        del job
        try:
            found = await self._job(ref)
        except JobLost:
            found = None
        price = decimal_of(found[0].get("usdRewardPerHour")) if found else None
        if price is None:
            deployment = await self._deployment(ref.id)
            market = str((deployment or {}).get("market", ""))
            price = await self._market_price(market)
        if price is not None:
            self._prices[ref.id] = price
        self.check_cap(price, cap, "after submission")

    async def _market_price(self, address: str) -> Decimal | None:
        for market in await self._markets():
            if market.get("address") == address:
                return decimal_of(market.get("usd_reward_per_hour"))
        return None

    async def _deployment(self, deployment_id: str) -> dict[str, Any] | None:
        try:
            response = await self.client.request(
                "GET", f"/api/deployments/{deployment_id}", retry=True
            )
        except NotFound:
            return None
        body = _body(response)
        return body if isinstance(body, dict) else None

    async def _job(self, ref: RemoteRef) -> tuple[dict[str, Any], float] | None:
        """The deployment's (first) job as ``GET /api/jobs/{address}`` shows it, and the
        server's clock; None before a job is listed; JobLost when a listed job is gone."""
        try:
            response = await self.client.request(
                "GET",
                f"/api/deployments/{ref.id}/jobs",
                params={"sort_order": "asc", "limit": 10},
                retry=True,
            )
        except NotFound:
            return None
        jobs = (_body(response) or {}).get("jobs") or []
        address = jobs[0].get("job") if jobs and isinstance(jobs[0], dict) else None
        if not isinstance(address, str):
            return None
        try:
            response = await self.client.request("GET", f"/api/jobs/{address}", retry=True)
        except NotFound:
            raise JobLost(self.name, f"job {address} of deployment {ref.id} is gone") from None
        body = _body(response)
        return (body, server_time(response)) if isinstance(body, dict) else None

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """Deployment and job state; cost from the charged rate and ``timeStart``/``timeEnd``."""
        deployment = await self._deployment(ref.id)
        if deployment is None:
            return None
        status = str(deployment.get("status", ""))
        try:
            found = await self._job(ref)
        except JobLost as lost:
            return RemoteJob("Lost", message=lost.message)
        if found is None:
            if status in ("DRAFT", "STARTING", "RUNNING"):
                return RemoteJob("Pending", message=f"deployment {status}, no job yet")
            return RemoteJob("Failed", message=f"deployment {status} without a job")
        job, now = found
        raw_state = job.get("state")
        name = JOB_STATES.get(raw_state) if isinstance(raw_state, int) else None
        codes = _exit_codes(job.get("jobResult"))
        state: RemoteState
        if name == "QUEUED":
            state, message = "Pending", "queued in the market"
        elif name == "RUNNING":
            state, message = "Running", "running"
        elif name == "COMPLETED" and codes and all(code == 0 for code in codes):
            state, message = "Succeeded", "completed, exit code 0"
        elif name == "COMPLETED":
            state = "Failed"
            message = f"completed with exit codes {codes}" if codes else "completed, no exit code"
        elif name == "STOPPED":
            state = "Failed"
            who = "by hybridgpu" if ref.id in self._closing else "before completion"
            message = f"stopped {who}"
        else:
            state, message = "Failed", f"unknown job state {raw_state!r}"
        if status in ("ERROR", "INSUFFICIENT_FUNDS") and state in ("Pending", "Running"):
            state, message = "Failed", f"deployment {status}"
        start = decimal_of(job.get("timeStart"))
        end = decimal_of(job.get("timeEnd"))
        return RemoteJob(
            state,
            message=message,
            price_per_hour=decimal_of(job.get("usdRewardPerHour")) or self._prices.get(ref.id),
            started=float(start) if start else None,
            ended=float(end) if end else None,  # 0 while running
            now=now,
        )

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop the deployment; a finished or vanished one is fine."""
        self._closing.add(ref.id)
        try:
            await self.client.request("POST", f"/api/deployments/{ref.id}/stop", retry=True)
        except NotFound:
            return
        except BadRequest:
            # Refused: fine if it has stopped already, an error otherwise.
            deployment = await self._deployment(ref.id)
            if deployment is None or deployment.get("status") in _ENDED:
                return
            raise

    async def result(self, ref: RemoteRef) -> str | None:
        """``ipfs://<ipfsResult>`` once the job has posted its result."""
        try:
            found = await self._job(ref)
        except JobLost:
            return None
        if found and found[0].get("ipfsResult"):
            return f"ipfs://{found[0]['ipfsResult']}"
        return None
