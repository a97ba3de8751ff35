"""Vast.ai adapter: search offers, rent the cheapest acceptable one, poll, destroy.

API: ``POST /api/v0/bundles/`` (search), ``PUT /api/v0/asks/{offer}/`` (create; answers
``{"success": true, "new_contract": id}``), ``GET /api/v0/instances/`` and
``GET /api/v0/instances/{id}/`` (``actual_status``), ``DELETE /api/v0/instances/{id}/``.
``spec.endpoint`` is the host (``https://console.vast.ai``). Offers are priced per machine
(``dph_total``); per GPU-hour is ``dph_total / num_gpus``.

Idempotency: the instance ``label`` is ``hybridgpu-<key>``; submit lists instances first.
States: ``null``/created/loading → Pending; running → Running; exited (the batch container
returned) → Succeeded; stopped → Failed; an instance that is gone → Lost.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import AdapterBase
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.container import DEFAULT_IMAGE, accrued, decimal_of, epoch_of, job_env
from hybridgpu.networks.errors import BadRequest, NotFound, PriceAboveCap
from hybridgpu.networks.gpu_names import from_vast, names_for
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

API = "/api/v0"
TYPICAL_START_SECONDS = 60.0
_STATES = {
    None: "Pending",
    "created": "Pending",
    "loading": "Pending",
    "rebooting": "Pending",
    "running": "Running",
    "frozen": "Running",
    "unknown": "Running",
    "offline": "Running",
    "exited": "Succeeded",
    "stopped": "Failed",
}


def label_for(key: str) -> str:
    """The instance label that makes submission idempotent."""
    return f"hybridgpu-{key}"


class VastAdapter(AdapterBase):
    """Rents one Vast.ai instance per job."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        super().__init__(name, spec, credential, policy, headers)
        self._totals: dict[str, int] = {}
        self._last_accrued: dict[str, Decimal] = {}

    async def _search(self, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {
            "limit": 100,
            "type": "on-demand",
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "order": [["dph_total", "asc"]],
        }
        query.update(extra or {})
        response = await self.client.request("POST", f"{API}/bundles/", json=query, retry=True)
        offers = response.json().get("offers", [])
        return [o for o in offers if isinstance(o, dict)]

    async def list_offers(self) -> list[ExternalOffer]:
        """The cheapest machine per GPU product, with the GPUs free across all machines."""
        best: dict[str, tuple[Decimal, dict[str, Any]]] = {}
        available: dict[str, int] = {}
        for offer in await self._search():
            gpus = max(int(offer.get("num_gpus", 1)), 1)
            total = decimal_of(offer.get("dph_total"))
            if total is None:
                continue
            product = from_vast(str(offer.get("gpu_name", "")), int(offer.get("gpu_ram", 0)))
            per_gpu = total / gpus
            available[product] = available.get(product, 0) + gpus
            if product not in best or per_gpu < best[product][0]:
                best[product] = (per_gpu, offer)
        return [
            ExternalOffer(
                provider=self.name,
                provider_type=self.spec.type,
                gpu_product=product,
                memory_bytes=int(offer.get("gpu_ram", 0)) * 2**20,
                pricing=PerGPUHour(price),
                available=available[product],
                region=str(offer.get("geolocation") or self.spec.region),
                trust_tier=self.spec.trust_tier,
                start_latency_seconds=self.start_latency[0] or TYPICAL_START_SECONDS,
                error_rate=self.error_rate,
                carbon_intensity=self.spec.carbon_intensity,
                circuit_open=self.circuit_state == "Open",
                paused=self.spec.paused,
                max_concurrent_jobs=self.spec.max_concurrent_jobs,
            )
            for product, (price, offer) in sorted(best.items())
        ]

    async def _find(self, key: str) -> dict[str, Any] | None:
        response = await self.client.request("GET", f"{API}/instances/", retry=True)
        for instance in response.json().get("instances", []) or []:
            if isinstance(instance, dict) and instance.get("label") == label_for(key):
                return instance
        return None

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
        """Rent the cheapest matching offer, or return the instance already rented for the key."""
        del checkpoint, requests  # the container reads its own input
        existing = await self._find(idempotency_key)
        if existing is not None:
            ref = RemoteRef(self.name, str(existing["id"]), idempotency_key)
            self._totals.setdefault(ref.id, job.input.requests)
            return ref
        names = names_for(gpu_product)
        candidates = [
            o
            for o in await self._search(
                {"gpu_name": {"eq": names.vast}, "num_gpus": {"eq": job.gpu.count}}
            )
            if from_vast(str(o.get("gpu_name", "")), int(o.get("gpu_ram", 0))) == gpu_product
            and int(o.get("gpu_ram", 0)) * 2**20 >= job.gpu.min_memory_bytes()
        ]
        priced = [(decimal_of(o.get("dph_total")), o) for o in candidates]
        usable = sorted(
            ((p / max(int(o.get("num_gpus", 1)), 1), o) for p, o in priced if p is not None),
            key=lambda item: item[0],
        )
        if not usable:
            raise BadRequest(
                self.name, f"no rentable {gpu_product} offer with {job.gpu.count} GPU(s)"
            )
        price, offer = usable[0]
        self.check_cap(price, max_price_per_gpu_hour, "before submission")
        body = {
            "image": job.image or DEFAULT_IMAGE,
            "disk": 40,
            "runtype": "args",
            "label": label_for(idempotency_key),
            "env": job_env(job, idempotency_key),
            "args": [*(job.command or []), *(job.args or [])],
        }
        response = await self.client.request(
            "PUT", f"{API}/asks/{offer['id']}/", json=body, retry=False
        )
        created = response.json()
        if not created.get("success", True) or "new_contract" not in created:
            raise BadRequest(
                self.name, f"create instance refused: {self.redact(str(created)[:200])}"
            )
        ref = RemoteRef(self.name, str(created["new_contract"]), idempotency_key)
        self._totals[ref.id] = job.input.requests
        self.note_submitted(ref)
        instance = await self._instance(ref)
        actual = _per_gpu(instance) if instance else None
        try:
            self.check_cap(actual, max_price_per_gpu_hour, "after submission")
        except PriceAboveCap:
            await self.cancel(ref)
            raise
        return ref

    async def _instance(self, ref: RemoteRef) -> dict[str, Any] | None:
        try:
            response = await self.client.request("GET", f"{API}/instances/{ref.id}/", retry=True)
        except NotFound:
            return None
        instance = response.json().get("instances")
        return instance if isinstance(instance, dict) else None

    async def status(self, ref: RemoteRef) -> RemoteStatus:
        """``actual_status`` mapped to the operator's states; cost from ``dph_total``."""
        instance = await self._instance(ref)
        total = self._totals.get(ref.id, 0)
        if instance is None:
            return RemoteStatus(
                "Lost",
                total=total,
                message="instance is gone",
                accrued_usd=self._last_accrued.get(ref.id, Decimal(0)),
            )
        actual = instance.get("actual_status")
        state = _STATES.get(actual, "Running")
        price = decimal_of(instance.get("dph_total"))
        spent = self._last_accrued.get(ref.id, Decimal(0))
        if state == "Running":
            spent = accrued(price, epoch_of(instance.get("start_date")), None)
            self._last_accrued[ref.id] = spent
        status = RemoteStatus(
            state,  # type: ignore[arg-type]
            completed=total if state == "Succeeded" else 0,
            total=total,
            accrued_usd=spent,
            price_per_gpu_hour=_per_gpu(instance),
            message=str(instance.get("status_msg") or actual or ""),
        )
        return self.observe(ref, status)

    async def cancel(self, ref: RemoteRef) -> None:
        """Destroy the instance; an instance already gone is fine."""
        try:
            await self.client.request("DELETE", f"{API}/instances/{ref.id}/", retry=True)
        except NotFound:
            return

    async def result(self, ref: RemoteRef) -> str | None:
        """The instance's address, where the container serves or leaves its output."""
        instance = await self._instance(ref)
        if instance and instance.get("public_ipaddr"):
            return f"vastai://{instance['public_ipaddr']}/instances/{ref.id}"
        return None


def _per_gpu(instance: dict[str, Any]) -> Decimal | None:
    price = decimal_of(instance.get("dph_total"))
    if price is None:
        return None
    return price / max(int(instance.get("num_gpus", 1) or 1), 1)
