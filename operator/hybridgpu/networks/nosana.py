"""Nosana adapter: post a job definition to a GPU market, poll, stop.

API (Nosana HTTP inference docs): ``GET /api/markets/`` (``address``, ``name``, ``type``
PREMIUM/COMMUNITY, ``usd_reward_per_hour``, ``gpu_types``, ``lowest_vram``),
``POST /api/jobs/create-with-credits`` ``{ipfsHash, market, timeout}`` (timeout in seconds, as
the SDK's "max. 30 minutes" comment on 1800 says), ``POST /api/jobs/stop-with-credits``
``{jobAddress}``. ``spec.endpoint`` is the host; paths start with ``/api``.

Assumptions (no public reference found): the job definition is pinned with
``POST /api/ipfs/pin`` (answers ``{"ipfsHash"}``), jobs are read with ``GET /api/jobs`` and
``GET /api/jobs/{address}`` (``state`` QUEUED/RUNNING/COMPLETED/STOPPED as in @nosana/kit's
JobState, numeric 0-3 accepted), a job reports the USD rate it is charged as
``usd_reward_per_hour`` (checked against the cap right after creation), and a market's
``available_nodes`` counts idle hosts.
A market runs one GPU per job, so ``usd_reward_per_hour`` is the price per GPU-hour.

Idempotency: the key goes into the definition (``meta.hybridgpuKey``), so its IPFS hash is
stable; submit reuses a job whose ``ipfsHash`` matches before creating one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec, TrustTier
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import GIB, bearer
from hybridgpu.networks.base import RemoteRef
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    epoch_of,
    job_env,
)
from hybridgpu.networks.errors import BadRequest, NotFound
from hybridgpu.networks.gpu_names import from_nosana
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

TYPICAL_START_SECONDS = 60.0
_STATES = {
    "QUEUED": "Pending",
    "0": "Pending",
    "RUNNING": "Running",
    "1": "Running",
    "COMPLETED": "Succeeded",
    "2": "Succeeded",
    "STOPPED": "Failed",
    "3": "Failed",
}


def job_definition(job: InferenceJobSpec, key: str) -> dict[str, Any]:
    """A Nosana job definition (schema 0.1) running the job's container on one GPU."""
    cmd = [*(job.command or []), *(job.args or [])]
    args: dict[str, Any] = {"image": job.image or DEFAULT_IMAGE, "gpu": True}
    if cmd:
        args["cmd"] = cmd
    meta: dict[str, Any] = {"trigger": "api", "hybridgpuKey": key}
    if job.gpu.min_memory:
        meta["system_resources"] = {"required_vram": job.gpu.min_memory_bytes() // GIB}
    return {
        "version": "0.1",
        "type": "container",
        "meta": meta,
        "global": {"env": job_env(job, key)},
        "ops": [{"id": "hybridgpu", "type": "container/run", "args": args}],
    }


class NosanaAdapter(ContainerAdapter):
    """Runs one Nosana job per InferenceJob, paid with credits."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        super().__init__(name, spec, credential, policy, bearer(credential))
        self._prices: dict[str, Decimal] = {}

    async def _markets(self) -> list[dict[str, Any]]:
        response = await self.client.request("GET", "/api/markets/", retry=True)
        body = response.json()
        return [m for m in (body if isinstance(body, list) else []) if isinstance(m, dict)]

    @staticmethod
    def _product(market: dict[str, Any]) -> str:
        gpus = market.get("gpu_types") or []
        return from_nosana(str(gpus[0] if gpus else market.get("name", "")))

    async def list_offers(self) -> list[ExternalOffer]:
        """One offer per market."""
        offers = []
        for market in await self._markets():
            price = decimal_of(market.get("usd_reward_per_hour"))
            if price is None:
                continue
            premium = str(market.get("type", "")).upper() == "PREMIUM"
            offers.append(
                self.offer(
                    self._product(market),
                    memory_bytes=int(market.get("lowest_vram", 0) or 0) * GIB,
                    pricing=PerGPUHour(price),
                    available=int(market.get("available_nodes", 0) or 0),
                    typical_start_seconds=TYPICAL_START_SECONDS,
                    trust_tier=None if premium else TrustTier.COMMUNITY,
                    labels={
                        "nosana.io/market": str(market.get("address", "")),
                        "nosana.io/market-type": str(market.get("type", "")),
                    },
                )
            )
        return offers

    async def start(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str:
        """Pin the definition, then create the job in the cheapest acceptable market."""
        if job.gpu.count != 1:
            raise BadRequest(
                self.name, "Nosana markets run one GPU per job; spec.gpu.count must be 1"
            )
        markets = [
            (decimal_of(m.get("usd_reward_per_hour")), m)
            for m in await self._markets()
            if self._product(m) == gpu_product
            and int(m.get("lowest_vram", 0) or 0) * GIB >= job.gpu.min_memory_bytes()
        ]
        priced = sorted(((p, m) for p, m in markets if p is not None), key=lambda item: item[0])
        if not priced:
            raise BadRequest(self.name, f"no market offers {gpu_product}")
        price, market = priced[0]
        self.check_cap(price, cap, "before submission")
        pinned = await self.client.request(
            "POST", "/api/ipfs/pin", json=job_definition(job, key), retry=True
        )
        ipfs_hash = str(pinned.json()["ipfsHash"])
        existing = await self._find(ipfs_hash)
        if existing is not None:
            return existing
        timeout = max(int(job.estimated_duration.total_seconds() * 2), 600)
        response = await self.client.request(
            "POST",
            "/api/jobs/create-with-credits",
            json={"ipfsHash": ipfs_hash, "market": market["address"], "timeout": timeout},
            retry=False,
        )
        created = response.json()
        address = created.get("jobAddress") or created.get("address") or created.get("job")
        if not isinstance(address, str):
            raise BadRequest(self.name, "create-with-credits answered without a job address")
        self._prices[address] = price
        return address

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Check the rate the created job is charged (or its market's) against the cap."""
        del job
        found = await self._job(ref)
        created = found[0] if found else {}
        now_price = decimal_of(created.get("usd_reward_per_hour"))
        if now_price is None and created:
            now_price = await self._market_price(str(created.get("market", "")))
        if now_price is not None:
            self._prices[ref.id] = now_price
        self.check_cap(now_price, cap, "after submission")

    async def _market_price(self, address: str) -> Decimal | None:
        for market in await self._markets():
            if market.get("address") == address:
                return decimal_of(market.get("usd_reward_per_hour"))
        return None

    async def _find(self, ipfs_hash: str) -> str | None:
        response = await self.client.request("GET", "/api/jobs", retry=True)
        body = response.json()
        for job in body if isinstance(body, list) else body.get("jobs", []):
            # Stopped jobs count too: the same key is the same attempt, never a new one.
            if isinstance(job, dict) and job.get("ipfsHash") == ipfs_hash:
                return str(job.get("address"))
        return None

    async def _job(self, ref: RemoteRef) -> tuple[dict[str, Any], float] | None:
        found = await self.fetch(f"/api/jobs/{ref.id}")
        return found if found and isinstance(found[0], dict) else None

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """Job state, with cost from the charged rate and ``timeStart``/``timeEnd``."""
        found = await self._job(ref)
        if found is None:
            return None
        job, now = found
        return RemoteJob(
            _STATES.get(str(job.get("state")), "Pending"),  # type: ignore[arg-type]
            message=str(job.get("state", "")),
            price_per_hour=decimal_of(job.get("usd_reward_per_hour")) or self._prices.get(ref.id),
            started=epoch_of(job.get("timeStart")),
            ended=epoch_of(job.get("timeEnd")),
            now=now,
        )

    async def cancel(self, ref: RemoteRef) -> None:
        """Stop the job; a finished or vanished job is fine."""
        try:
            await self.client.request(
                "POST", "/api/jobs/stop-with-credits", json={"jobAddress": ref.id}, retry=True
            )
        except NotFound:
            return

    async def result(self, ref: RemoteRef) -> str | None:
        """``ipfs://<ipfsResult>`` once the job has posted its result."""
        found = await self._job(ref)
        if found and found[0].get("ipfsResult"):
            return f"ipfs://{found[0]['ipfsResult']}"
        return None
