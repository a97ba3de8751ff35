"""Akash Console managed-wallet API adapter.

Flow (Console API quickstart): ``POST /v1/deployments`` with an SDL that asks for the GPU
model and memory → poll ``GET /v1/bids?dseq=`` → ``POST /v1/leases`` on the cheapest bid under
the cap → poll ``GET /v1/deployments/{dseq}`` → ``DELETE /v1/deployments/{dseq}``. Auth is the
``x-api-key`` header. Responses may or may not be wrapped in ``{"data": ...}`` (the published
reference and its examples disagree); both are read.

Bids come in the Console's flat form (``{"id", "provider", "price": "0.50", "denom": "usd"}``)
or the chain's (``{"bid": {"id"|"bid_id": {dseq, gseq, oseq, provider}, "price": {denom,
amount}}}``). A ``usd`` bid price is read as USD per hour for the whole lease (assumption; the
Console documents no unit), so per GPU-hour is that divided by the GPU count; bids in other
denoms (``uakt``/``uact`` per block) are ignored. Offers come from ``GET /v1/providers``
(GPU models and free GPUs) priced with the ComputeProvider's ``staticPrices``: Akash has no
price list, the real price arrives with the bids and is checked against the cap again there.

Idempotency: the SDL carries ``HYBRIDGPU_IDEMPOTENCY_KEY=<key>`` in the service env; submit
looks for a deployment whose SDL holds it before creating one.
Completion: a batch deployment that closes without hybridgpu closing it is Succeeded.
"""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

import yaml

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import GIB
from hybridgpu.networks.base import RemoteRef, RemoteState
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    KEY_ENV,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    epoch_of,
    job_env,
    unwrap,
)
from hybridgpu.networks.errors import BadRequest, JobLost, NotFound, PriceAboveCap
from hybridgpu.networks.gpu_names import from_akash, names_for
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

TYPICAL_START_SECONDS = 90.0


def build_sdl(job: InferenceJobSpec, key: str, gpu_product: str) -> str:
    """An SDL v2.0 deployment asking for the job's GPU model, memory and count."""
    names = names_for(gpu_product)
    model: dict[str, Any] = {"model": names.akash_model}
    memory_gib = max(names.memory_gib, math.ceil(job.gpu.min_memory_bytes() / GIB))
    if memory_gib:
        model["ram"] = f"{memory_gib}Gi"
    if names.akash_interface:
        model["interface"] = names.akash_interface
    env = [f"{k}={v}" for k, v in sorted(job_env(job, key).items())]
    service: dict[str, Any] = {"image": job.image or DEFAULT_IMAGE, "env": env}
    if job.command:
        service["command"] = job.command
    if job.args:
        service["args"] = job.args
    sdl = {
        "version": "2.0",
        "services": {"job": service},
        "profiles": {
            "compute": {
                "job": {
                    "resources": {
                        "cpu": {"units": 4.0},
                        "memory": {"size": "16Gi"},
                        "storage": {"size": "40Gi"},
                        "gpu": {
                            "units": job.gpu.count,
                            "attributes": {"vendor": {"nvidia": [model]}},
                        },
                    }
                }
            },
            "placement": {"dcloud": {"pricing": {"job": {"denom": "uakt", "amount": 100000}}}},
        },
        "deployment": {"job": {"dcloud": {"profile": "job", "count": 1}}},
    }
    return yaml.safe_dump(sdl, sort_keys=False)


def _bid(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A bid in either documented shape, as ``{provider, gseq, oseq, id, price, denom}``."""
    inner = entry.get("bid", entry)
    if not isinstance(inner, dict):
        return None
    ident = inner.get("id", inner.get("bid_id"))
    price = inner.get("price")
    if isinstance(price, dict):
        amount, denom = decimal_of(price.get("amount")), str(price.get("denom", ""))
    else:
        amount, denom = decimal_of(price), str(inner.get("denom", ""))
    if isinstance(ident, dict):
        provider, gseq, oseq = ident.get("provider"), ident.get("gseq", 1), ident.get("oseq", 1)
    else:
        provider, gseq, oseq = inner.get("provider"), 1, 1
    if amount is None or not provider:
        return None
    return {
        "id": ident,
        "provider": provider,
        "gseq": gseq,
        "oseq": oseq,
        "price": amount,
        "denom": denom.lower(),
        "state": inner.get("state", inner.get("status")),
    }


class AkashAdapter(ContainerAdapter):
    """Runs one Akash deployment per job through the Console API."""

    bid_wait_seconds = 120.0
    bid_poll_seconds = 2.0
    cancel_on = (PriceAboveCap, BadRequest, JobLost)

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        headers = {"x-api-key": credential} if credential else {}
        super().__init__(name, spec, credential, policy, headers)
        self._gpus: dict[str, int] = {}
        self._sdl: dict[str, str] = {}
        self._closing: set[str] = set()

    async def list_offers(self) -> list[ExternalOffer]:
        """Free GPUs per product across online providers, priced from staticPrices."""
        response = await self.client.request("GET", "/v1/providers", retry=True)
        body = unwrap(response.json())
        providers = body.get("providers", []) if isinstance(body, dict) else body
        free: dict[str, int] = {}
        for provider in providers or []:
            if not isinstance(provider, dict) or not provider.get("isOnline", True):
                continue
            stats = (provider.get("stats") or {}).get("gpu") or {}
            models = provider.get("gpuModels") or []
            for gpu in models:
                product = from_akash(
                    str(gpu.get("model", "")),
                    str(gpu.get("ram", "")),
                    str(gpu.get("interface", "")),
                )
                free[product] = free.get(product, 0) + int(stats.get("available", 0)) // max(
                    len(models), 1
                )
        offers = []
        for product, count in sorted(free.items()):
            price = self.static_price(product)
            if price is None:
                continue
            offers.append(
                self.offer(
                    product,
                    memory_bytes=names_for(product).memory_gib * GIB,
                    pricing=PerGPUHour(price),
                    available=count,
                    typical_start_seconds=TYPICAL_START_SECONDS,
                )
            )
        return offers

    async def _deployment(self, dseq: str) -> tuple[dict[str, Any], float] | None:
        found = await self.fetch(f"/v1/deployments/{dseq}")
        body = unwrap(found[0]) if found else None
        return (body, found[1]) if found and isinstance(body, dict) else None

    async def _find(self, key: str) -> str | None:
        marker = f"{KEY_ENV}={key}"
        skip = 0
        while True:
            response = await self.client.request(
                "GET", "/v1/deployments", params={"skip": skip, "limit": 100}, retry=True
            )
            body = unwrap(response.json())
            items = body.get("deployments", []) if isinstance(body, dict) else body
            for item in items or []:
                deployment = item.get("deployment", item) if isinstance(item, dict) else {}
                # Closed ones count too: the same key is the same attempt, never a new one.
                if marker in str(item.get("sdl", deployment.get("sdl", ""))):
                    return str(deployment.get("dseq") or item.get("dseq"))
            if len(items or []) < 100:
                return None
            skip += 100

    async def start(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str:
        """Create the deployment from an SDL, unless one holds the key already."""
        self.check_cap(self.static_price(gpu_product), cap, "before submission")
        sdl = build_sdl(job, key, gpu_product)
        dseq = await self._find(key)
        if dseq is None:
            deposit = max(
                5, math.ceil((self.static_price(gpu_product) or Decimal(1)) * job.gpu_hours() * 2)
            )
            response = await self.client.request(
                "POST",
                "/v1/deployments",
                json={"data": {"sdl": sdl, "deposit": deposit}},
                retry=False,
            )
            created = unwrap(response.json())
            dseq = str(created.get("dseq") or (created.get("deployment") or {}).get("dseq"))
        self._gpus[dseq] = job.gpu.count
        self._sdl[dseq] = sdl
        return dseq

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Accept the cheapest acceptable bid as a lease, unless leased or closed already."""
        found = await self._deployment(ref.id)
        if found is not None:
            info = found[0].get("deployment", found[0])
            closed = info.get("state", info.get("status")) == "closed"
            if closed or _active_lease(found[0]) is not None:
                return
        await self._lease(ref, self._sdl[ref.id], job.gpu.count, cap)

    async def _lease(self, ref: RemoteRef, sdl: str, gpus: int, cap: Decimal | None) -> None:
        deadline = time.monotonic() + self.bid_wait_seconds
        bids: list[dict[str, Any]] = []
        while not bids:
            response = await self.client.request(
                "GET", "/v1/bids", params={"dseq": ref.id}, retry=True
            )
            raw = unwrap(response.json())
            bids = [b for b in (_bid(e) for e in raw or [] if isinstance(e, dict)) if b]
            bids = [b for b in bids if b["denom"] == "usd" and b["state"] in (None, "open")]
            if bids or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.bid_poll_seconds)
        if not bids:
            raise BadRequest(
                self.name, f"no usd bid for deployment {ref.id} within {self.bid_wait_seconds:.0f}s"
            )
        best = min(bids, key=lambda b: b["price"])
        self.check_cap(best["price"] / gpus, cap, "cheapest bid")
        lease = {
            "dseq": ref.id,
            "gseq": best["gseq"],
            "oseq": best["oseq"],
            "provider": best["provider"],
        }
        await self.client.request(
            "POST", "/v1/leases", json={"manifest": sdl, "leases": [lease]}, retry=False
        )
        found = await self._deployment(ref.id)
        if found is None:
            raise JobLost(self.name, f"deployment {ref.id} vanished after the lease")
        active = _active_lease(found[0])
        price = _lease_price(active) if active else None
        self.check_cap(price / gpus if price is not None else None, cap, "after lease")

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """Deployment and lease state mapped to the operator's states."""
        found = await self._deployment(ref.id)
        if found is None:
            return None
        deployment, now = found
        info = deployment.get("deployment", deployment)
        closed = str(info.get("state", info.get("status", ""))) == "closed"
        leases = [lease for lease in deployment.get("leases", []) or [] if isinstance(lease, dict)]
        lease = _active_lease(deployment) or (leases[-1] if leases else None) or {}
        lease_state = str(lease.get("state", lease.get("status", "")))
        state: RemoteState
        if closed:
            ours = ref.id in self._closing
            state = "Failed" if ours else "Succeeded"
            message = "closed by hybridgpu" if ours else "deployment finished"
        elif lease_state == "insufficient_funds":
            state, message = "Failed", "lease out of funds"
        else:
            state = "Running" if lease_state == "active" else "Pending"
            message = lease_state or "waiting for a lease"
        return RemoteJob(
            state,
            message=message,
            price_per_hour=_lease_price(lease) if lease else None,
            gpus=self._gpus.get(ref.id, 1),
            started=epoch_of(lease.get("created_at") or lease.get("createdAt")),
            ended=epoch_of(lease.get("closed_on") or lease.get("closedAt")) if closed else None,
            now=now,
        )

    async def cancel(self, ref: RemoteRef) -> None:
        """Close the deployment (refunds the escrow); one already closed or gone is fine."""
        self._closing.add(ref.id)
        try:
            await self.client.request("DELETE", f"/v1/deployments/{ref.id}", retry=True)
        except NotFound:
            return

    async def result(self, ref: RemoteRef) -> str | None:
        """The lease's provider and dseq, where the service's URIs are looked up."""
        found = await self._deployment(ref.id)
        lease = _active_lease(found[0]) if found else None
        if lease is None:
            return None
        ident = lease.get("id", lease)
        provider = ident.get("provider") if isinstance(ident, dict) else lease.get("provider")
        return f"akash://{provider}/{ref.id}" if provider else None


def _active_lease(deployment: dict[str, Any]) -> dict[str, Any] | None:
    for lease in deployment.get("leases", []) or []:
        if isinstance(lease, dict) and lease.get("state", lease.get("status")) == "active":
            return lease
    return None


def _lease_price(lease: dict[str, Any]) -> Decimal | None:
    price = lease.get("price")
    if isinstance(price, dict):
        if str(price.get("denom", "")).lower() != "usd":
            return None
        return decimal_of(price.get("amount"))
    return decimal_of(price)
