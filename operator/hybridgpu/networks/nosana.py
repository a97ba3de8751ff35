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
from hybridgpu.networks.adapter import GIB, AdapterBase
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.container import DEFAULT_IMAGE, accrued, decimal_of, epoch_of, job_env
from hybridgpu.networks.errors import BadRequest, NotFound, PriceAboveCap
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


class NosanaAdapter(AdapterBase):
    """Runs one Nosana job per InferenceJob, paid with credits."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        super().__init__(name, spec, credential, policy, headers)
        self._totals: dict[str, int] = {}
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
            tier = self.spec.trust_tier if premium else TrustTier.COMMUNITY
            offers.append(
                ExternalOffer(
                    provider=self.name,
                    provider_type=self.spec.type,
                    gpu_product=self._product(market),
                    memory_bytes=int(market.get("lowest_vram", 0) or 0) * GIB,
                    pricing=PerGPUHour(price),
                    available=int(market.get("available_nodes", 0) or 0),
                    region=self.spec.region,
                    trust_tier=tier,
                    start_latency_seconds=self.start_latency[0] or TYPICAL_START_SECONDS,
                    error_rate=self.error_rate,
                    carbon_intensity=self.spec.carbon_intensity,
                    circuit_open=self.circuit_state == "Open",
                    paused=self.spec.paused,
                    max_concurrent_jobs=self.spec.max_concurrent_jobs,
                    labels={
                        "nosana.io/market": str(market.get("address", "")),
                        "nosana.io/market-type": str(market.get("type", "")),
                    },
                )
            )
        return offers

    async def submit(
        self,
        job: InferenceJobSpec,
        *,
        idempotency_key: str,
        gpu_product: str,
        max_price_per_gpu_hour: Decimal | None,
        checkpoint: Checkpoint | None = None,
        requests: list[dict[str, Any]] | None = None,
    ) -> RemoteRef:
        """Pin the definition, then create the job in the cheapest acceptable market."""
        del checkpoint, requests
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
        self.check_cap(price, max_price_per_gpu_hour, "before submission")
        pinned = await self.client.request(
            "POST", "/api/ipfs/pin", json=job_definition(job, idempotency_key), retry=True
        )
        ipfs_hash = str(pinned.json()["ipfsHash"])
        existing = await self._find(ipfs_hash)
        if existing is not None:
            ref = RemoteRef(self.name, existing, idempotency_key)
        else:
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
            ref = RemoteRef(self.name, address, idempotency_key)
        self._totals[ref.id] = job.input.requests
        self.note_submitted(ref)
        created_job = await self._job(ref)
        now_price = decimal_of((created_job or {}).get("usd_reward_per_hour"))
        if now_price is None:
            now_price = await self._market_price(str(market["address"]))
        self._prices[ref.id] = now_price or price
        try:
            self.check_cap(now_price, max_price_per_gpu_hour, "after submission")
        except PriceAboveCap:
            await self.cancel(ref)
            raise
        return ref

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

    async def _job(self, ref: RemoteRef) -> dict[str, Any] | None:
        try:
            response = await self.client.request("GET", f"/api/jobs/{ref.id}", retry=True)
        except NotFound:
            return None
        body = response.json()
        return body if isinstance(body, dict) else None

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """Job state, with cost from the market price and ``timeStart``/``timeEnd``."""
        total = self._totals.get(ref.id, 0)
        job = await self._job(ref)
        if job is None:
            return RemoteStatus("Lost", total=total, message=f"job {ref.id} is gone")
        state = _STATES.get(str(job.get("state")), "Pending")
        price = decimal_of(job.get("usd_reward_per_hour")) or self._prices.get(ref.id)
        spent = accrued(price, epoch_of(job.get("timeStart")), epoch_of(job.get("timeEnd")))
        return self.observe(
            ref,
            RemoteStatus(
                state,  # type: ignore[arg-type]
                completed=total if state == "Succeeded" else 0,
                total=total,
                accrued_usd=spent,
                price_per_gpu_hour=price,
                message=str(job.get("state", "")),
            ),
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
        job = await self._job(ref)
        if job and job.get("ipfsResult"):
            return f"ipfs://{job['ipfsResult']}"
        return None
