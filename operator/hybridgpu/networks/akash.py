"""Akash Console managed-wallet API adapter.

Every shape here is the Console's generated OpenAPI file (akash-network/console
``apps/api/swagger/openapi.json``, vendored in ``tests/contract/specs/``) and the services
behind it; see docs/networks.md for the evidence per field.

Flow: ``POST /v1/deployments`` ``{"data": {"sdl", "deposit"}}`` → ``data.{dseq, manifest}``;
poll ``GET /v1/bids?dseq=`` (``data[].bid.{id, state, price}``); ``POST /v1/leases``
``{"manifest": <the JSON manifest the create call returned>, "leases": [{dseq, gseq, oseq,
provider}]}``; poll ``GET /v1/deployments/{dseq}``; ``DELETE /v1/deployments/{dseq}``.
Auth: ``x-api-key``. Offers: the public ``GET /v1/gpu-prices`` (USD per GPU-hour of recent
bids, per GPU model, and free GPUs); ``staticPrices`` only where it has no price.

Units, all converted in :func:`usd_per_hour`: bid and lease prices are micro-denom **per
block**; the Console rewrites the SDL's pricing denom to its grant denom (``uact`` on
mainnet, ``uakt`` on some networks), and converts as amount × 600 blocks/h ÷ 10⁶ (uact is
USD-pegged; uakt is then multiplied by the AKT price from ``GET /v1/market-data/akt``).
Lease ``created_at`` / ``closed_on`` are block heights; run time is blocks × 6 s, the
Console's ``averageBlockTime``, "now" is the latest block (``GET /v1/blocks?limit=1``).

Idempotency: the SDL's env holds ``HYBRIDGPU_IDEMPOTENCY_KEY``; the manifest version hash
of that SDL (:mod:`hybridgpu.networks.akash_manifest`) is on chain as ``deployment.hash``
in every deployment listing, so submit looks for a deployment with that hash first.

Completion: a provider restarts an exited container, so an Akash deployment never ends by
itself and reports no exit status. The SDL tells the container its runtime limit
(``HYBRIDGPU_RUNTIME_LIMIT_SECONDS``, the job's ``estimatedDuration``); once the lease has
run that long the adapter closes the deployment and reports Succeeded. A deployment closed
before its limit (cancelled, out of funds, closed by the provider or by anyone else) is
Failed; unknown lease or deployment states are Failed too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from decimal import ROUND_CEILING, Decimal
from typing import Any

import httpx
import yaml

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import GIB
from hybridgpu.networks.akash_manifest import manifest_of
from hybridgpu.networks.base import RemoteRef, RemoteState
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    USD_PLACES,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    job_env,
)
from hybridgpu.networks.errors import BadRequest, JobLost, NotFound, PriceAboveCap
from hybridgpu.networks.gpu_names import from_akash, names_for
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

TYPICAL_START_SECONDS = 90.0
BLOCK_SECONDS = 6
"""The Console's ``averageBlockTime`` (apps/api/src/utils/constants.ts)."""
BLOCKS_PER_HOUR = 3600 // BLOCK_SECONDS
MICRO = Decimal(10**6)
USD_DENOMS = frozenset({"uact"})
"""Micro-denoms worth 10⁻⁶ USD (ACT, the USD-pegged Akash Compute Token)."""
AKT_DENOMS = frozenset({"uakt"})
DEFAULT_MAX_USD_PER_GPU_HOUR = Decimal(10)
"""The SDL's bid ceiling per GPU-hour when the job sets no cap."""
LIMIT_ENV = "HYBRIDGPU_RUNTIME_LIMIT_SECONDS"


def usd_per_hour(denom: str, amount_per_block: Decimal, akt_usd: Decimal | None) -> Decimal | None:
    """USD per hour of a price in micro-``denom`` per block (None: a denom we cannot price).

    To 8 decimal places: chain amounts carry 18, and a per-block price of 0.29 USD/h is
    ``483.333333333333333333``, which is 0.29 USD/h less 2e-19."""
    hourly_units = amount_per_block * BLOCKS_PER_HOUR / MICRO
    if denom in USD_DENOMS:
        return hourly_units.quantize(USD_PLACES)
    if denom in AKT_DENOMS and akt_usd is not None:
        return (hourly_units * akt_usd).quantize(USD_PLACES)
    return None


def per_block_ceiling(usd_per_gpu_hour: Decimal, gpus: int) -> int:
    """The SDL pricing amount (uact per block, rounded up) for a USD/GPU-hour ceiling."""
    per_block = usd_per_gpu_hour * gpus * MICRO / BLOCKS_PER_HOUR
    return int(per_block.to_integral_value(rounding=ROUND_CEILING))


def runtime_limit_seconds(job: InferenceJobSpec) -> int:
    """How long the deployment may run before hybridgpu closes it as finished."""
    return max(math.ceil(job.estimated_duration.total_seconds()), BLOCK_SECONDS)


def build_sdl(job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None = None) -> str:
    """An SDL v2.0 deployment asking for the job's GPU model, memory and count.

    The pricing amount is the bid ceiling derived from ``cap`` (the chain rejects bids above
    it); the Console rewrites its denom to the account's grant denom.
    """
    names = names_for(gpu_product)
    model: dict[str, Any] = {"model": names.akash_model}
    memory_gib = max(names.memory_gib, math.ceil(job.gpu.min_memory_bytes() / GIB))
    if memory_gib:
        model["ram"] = f"{memory_gib}Gi"
    if names.akash_interface:
        model["interface"] = names.akash_interface
    env_map = job_env(job, key)
    env_map[LIMIT_ENV] = str(runtime_limit_seconds(job))
    env = [f"{k}={v}" for k, v in sorted(env_map.items())]
    service: dict[str, Any] = {"image": job.image or DEFAULT_IMAGE, "env": env}
    if job.command:
        service["command"] = job.command
    if job.args:
        service["args"] = job.args
    ceiling = per_block_ceiling(
        cap if cap is not None else DEFAULT_MAX_USD_PER_GPU_HOUR, job.gpu.count
    )
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
            "placement": {"dcloud": {"pricing": {"job": {"denom": "uact", "amount": ceiling}}}},
        },
        "deployment": {"job": {"dcloud": {"profile": "job", "count": 1}}},
    }
    return yaml.safe_dump(sdl, sort_keys=False)


def _body(response: httpx.Response) -> Any:
    """The JSON body with numbers as Decimal (no binary-float noise in prices)."""
    return json.loads(response.text, parse_float=Decimal)


def _data(body: Any) -> Any:
    """The Console's ``{"data": ...}`` envelope, removed."""
    return body.get("data") if isinstance(body, dict) else None


def _height(value: Any) -> int | None:
    """A block height (the Console sends them as decimal strings); 0 and junk are None."""
    try:
        height = int(str(value))
    except ValueError:
        return None
    return height if height > 0 else None


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
        self._limit_blocks: dict[str, int] = {}
        self._manifest: dict[str, str] = {}
        self._closing: set[str] = set()

    async def list_offers(self) -> list[ExternalOffer]:
        """``GET /v1/gpu-prices``: per GPU model, free GPUs and the USD/GPU-hour of recent bids.

        The median of the providers' best bids is the offer's price; a model without one is
        priced from ``staticPrices``, or left out.
        """
        response = await self.client.request("GET", "/v1/gpu-prices", retry=True)
        body = _body(response)
        free: dict[str, int] = {}
        price: dict[str, Decimal] = {}
        for model in (body.get("models") if isinstance(body, dict) else None) or []:
            if not isinstance(model, dict) or str(model.get("vendor", "")).lower() != "nvidia":
                continue
            product = from_akash(
                str(model.get("model", "")),
                str(model.get("ram", "")),
                str(model.get("interface", "")),
            )
            available = (model.get("availability") or {}).get("available", 0)
            free[product] = free.get(product, 0) + max(int(available), 0)
            quoted = decimal_of((model.get("price") or {}).get("med"))
            if quoted is not None and quoted > 0:
                price[product] = min(quoted, price.get(product, quoted))
        offers = []
        for product, count in sorted(free.items()):
            usd = price.get(product) or self.static_price(product)
            if usd is None:
                continue
            offers.append(
                self.offer(
                    product,
                    memory_bytes=names_for(product).memory_gib * GIB,
                    pricing=PerGPUHour(usd),
                    available=count,
                    typical_start_seconds=TYPICAL_START_SECONDS,
                )
            )
        return offers

    async def _cheapest(self, product: str) -> Decimal | None:
        """The lowest recent USD/GPU-hour bid for ``product`` in ``GET /v1/gpu-prices``."""
        response = await self.client.request("GET", "/v1/gpu-prices", retry=True)
        body = _body(response)
        prices = [
            decimal_of((model.get("price") or {}).get("min"))
            for model in (body.get("models") if isinstance(body, dict) else None) or []
            if isinstance(model, dict)
            and from_akash(
                str(model.get("model", "")),
                str(model.get("ram", "")),
                str(model.get("interface", "")),
            )
            == product
        ]
        known = [p for p in prices if p is not None]
        return min(known) if known else None

    async def _deployment(self, dseq: str) -> dict[str, Any] | None:
        try:
            response = await self.client.request("GET", f"/v1/deployments/{dseq}", retry=True)
        except NotFound:
            return None
        data = _data(_body(response))
        return data if isinstance(data, dict) else None

    async def _find(self, manifest_hash: str) -> str | None:
        """The dseq of the account's deployment with this manifest version, open or closed."""
        skip, limit = 0, 100
        while True:
            response = await self.client.request(
                "GET", "/v1/deployments", params={"skip": skip, "limit": limit}, retry=True
            )
            data = _data(_body(response)) or {}
            items = data.get("deployments") or []
            for item in items:
                deployment = item.get("deployment") if isinstance(item, dict) else None
                if isinstance(deployment, dict) and deployment.get("hash") == manifest_hash:
                    return str((deployment.get("id") or {}).get("dseq"))
            if not (data.get("pagination") or {}).get("hasMore") or not items:
                return None
            skip += len(items)

    async def lookup(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str | None:
        """The deployment whose manifest version is the one ``start`` would create."""
        _, manifest_hash = manifest_of(build_sdl(job, key, gpu_product, cap))
        return await self._find(manifest_hash)

    async def start(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str:
        """Create the deployment from an SDL, unless one with its manifest version exists."""
        sdl = build_sdl(job, key, gpu_product, cap)
        manifest, manifest_hash = manifest_of(sdl)
        dseq = await self._find(manifest_hash)
        if dseq is None:
            if cap is not None:
                # Even the cheapest recent bid above the cap: no provider would bid under it.
                self.check_cap(await self._cheapest(gpu_product), cap, "before submission")
            hourly = (cap or DEFAULT_MAX_USD_PER_GPU_HOUR) * job.gpu_hours()
            deposit = max(5, math.ceil(hourly * Decimal("1.2")))
            response = await self.client.request(
                "POST",
                "/v1/deployments",
                json={"data": {"sdl": sdl, "deposit": deposit}},
                retry=False,
            )
            created = _data(_body(response)) or {}
            dseq = str(created.get("dseq", ""))
            if not dseq.isdigit():
                raise BadRequest(self.name, "the create response carries no dseq")
            # The lease must carry the manifest the Console generated; ours is only the key.
            manifest = str(created.get("manifest") or manifest)
        self._manifest[dseq] = manifest
        self._gpus[dseq] = job.gpu.count
        self._limit_blocks[dseq] = math.ceil(runtime_limit_seconds(job) / BLOCK_SECONDS)
        return dseq

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Accept the cheapest acceptable bid as a lease, unless leased or closed already."""
        found = await self._deployment(ref.id)
        if found is None:
            raise JobLost(self.name, f"deployment {ref.id} vanished after creation")
        if (found.get("deployment") or {}).get("state") == "closed" or _leases(found):
            return
        await self._lease(ref, job.gpu.count, cap)

    async def _akt_usd(self) -> Decimal | None:
        response = await self.client.request("GET", "/v1/market-data/akt", retry=True)
        body = _body(response)
        return decimal_of(body.get("price")) if isinstance(body, dict) else None

    async def _price(self, price: Any, akt: list[Decimal | None]) -> Decimal | None:
        """USD per hour of a ``{denom, amount}`` per-block price (fetching AKT's price once)."""
        if not isinstance(price, dict):
            return None
        denom, amount = str(price.get("denom", "")).lower(), decimal_of(price.get("amount"))
        if amount is None:
            return None
        if denom in AKT_DENOMS and not akt:
            akt.append(await self._akt_usd())
        return usd_per_hour(denom, amount, akt[0] if akt else None)

    async def _lease(self, ref: RemoteRef, gpus: int, cap: Decimal | None) -> None:
        deadline = time.monotonic() + self.bid_wait_seconds
        akt: list[Decimal | None] = []
        bids: list[tuple[Decimal, dict[str, Any]]] = []
        while not bids:
            response = await self.client.request(
                "GET", "/v1/bids", params={"dseq": ref.id}, retry=True
            )
            for entry in _data(_body(response)) or []:
                bid = entry.get("bid") if isinstance(entry, dict) else None
                if not isinstance(bid, dict) or bid.get("state") != "open":
                    continue
                usd = await self._price(bid.get("price"), akt)
                if usd is not None and isinstance(bid.get("id"), dict):
                    bids.append((usd, bid["id"]))
            if bids or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.bid_poll_seconds)
        if not bids:
            raise BadRequest(
                self.name,
                f"no open bid for deployment {ref.id} within {self.bid_wait_seconds:.0f}s",
            )
        usd, ident = min(bids, key=lambda b: b[0])
        self.check_cap(usd / gpus, cap, "cheapest bid")
        lease = {
            "dseq": ref.id,
            "gseq": int(ident.get("gseq", 1)),
            "oseq": int(ident.get("oseq", 1)),
            "provider": str(ident.get("provider", "")),
        }
        manifest = self._manifest.get(ref.id)
        if manifest is None:  # pragma: no cover - start() always records it
            raise BadRequest(self.name, f"no manifest recorded for deployment {ref.id}")
        response = await self.client.request(
            "POST", "/v1/leases", json={"manifest": manifest, "leases": [lease]}, retry=False
        )
        leased = _data(_body(response)) or {}
        active = _leases(leased)
        price = await self._price(active[0].get("price"), akt) if active else None
        self.check_cap(price / gpus if price is not None else None, cap, "after lease")

    async def _latest_height(self) -> int | None:
        response = await self.client.request("GET", "/v1/blocks", params={"limit": 1}, retry=True)
        body = _body(response)
        return _height(body[0].get("height")) if isinstance(body, list) and body else None

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """Deployment and lease state mapped to the operator's states; the runtime limit."""
        found = await self._deployment(ref.id)
        if found is None:
            return None
        deployment_state = str((found.get("deployment") or {}).get("state", ""))
        leases = _leases(found)
        gpus = self._gpus.get(ref.id, 1)
        if not leases:
            if deployment_state == "active":
                return RemoteJob("Pending", message="waiting for a lease", gpus=gpus)
            message = f"deployment {deployment_state or 'in an unknown state'} without a lease"
            return RemoteJob("Failed", message=message, gpus=gpus)
        lease = leases[-1]
        lease_state = str(lease.get("state", ""))
        price = await self._price(lease.get("price"), [])
        created = _height(lease.get("created_at"))
        closed_on = _height(lease.get("closed_on"))
        ended = deployment_state == "closed" or lease_state != "active"
        end = closed_on if ended and closed_on else await self._latest_height()
        blocks = max((end or 0) - created, 0) if created is not None else None
        limit = self._limit_blocks.get(ref.id)
        state: RemoteState
        if deployment_state == "active" and lease_state == "active":
            if limit is not None and blocks is not None and blocks >= limit:
                await self._close(ref)
                state, message = "Succeeded", "ran its runtime limit; hybridgpu closed it"
            else:
                state, message = "Running", "lease active"
        elif deployment_state not in ("active", "closed") or lease_state not in (
            "active",
            "closed",
            "insufficient_funds",
        ):
            state = "Failed"
            message = f"unknown state: deployment {deployment_state!r}, lease {lease_state!r}"
        elif limit is not None and blocks is not None and blocks >= limit:
            state, message = "Succeeded", "ran its runtime limit; closed"
        elif lease_state == "insufficient_funds":
            state, message = "Failed", "lease closed: the escrow ran out of funds"
        elif ref.id in self._closing:
            state, message = "Failed", "closed by hybridgpu before its runtime limit"
        else:
            state, message = "Failed", "closed before its runtime limit (provider or owner)"
        return RemoteJob(
            state,
            message=message,
            price_per_hour=price,
            gpus=gpus,
            ran_seconds=float(blocks * BLOCK_SECONDS) if blocks is not None else None,
        )

    async def _close(self, ref: RemoteRef) -> None:
        try:
            await self.client.request("DELETE", f"/v1/deployments/{ref.id}", retry=True)
        except NotFound:
            return

    async def cancel(self, ref: RemoteRef) -> None:
        """Close the deployment (refunds the escrow); one already closed or gone is fine."""
        self._closing.add(ref.id)
        await self._close(ref)

    async def result(self, ref: RemoteRef) -> str | None:
        """The lease's provider and dseq, where the service's URIs are looked up."""
        found = await self._deployment(ref.id)
        leases = _leases(found) if found else []
        provider = (leases[-1].get("id") or {}).get("provider") if leases else None
        return f"akash://{provider}/{ref.id}" if provider else None


def _leases(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return [lease for lease in deployment.get("leases") or [] if isinstance(lease, dict)]
