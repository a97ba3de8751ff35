"""Vast.ai adapter: search offers, rent the cheapest acceptable one, poll, destroy.

API: ``POST /api/v0/bundles/`` (search), ``PUT /api/v0/asks/{offer}/`` (create; answers
``{"success": true, "new_contract": id}``), ``GET /api/v0/instances/`` and
``GET /api/v0/instances/{id}/`` (``actual_status``), ``DELETE /api/v0/instances/{id}/``.
``spec.endpoint`` is the host (``https://console.vast.ai``). Offers are priced per bundle
(``dph_total``); per GPU-hour is ``dph_total / num_gpus``.

Offers are per bundle, not per machine: ``num_gpus`` is the bundle's GPU count, and a machine
with 8 free GPUs is listed as several offers (1, 2, 4, 8 GPUs) sharing its ``machine_id``. So
submit searches ``num_gpus == spec.gpu.count``, and the free GPUs of a product are counted
once per machine (its largest bundle), not summed over bundles.

Cost: ``dph_total`` times the instance's run time: ``uptime_mins`` when the instance reports
it (assumption: Vast.ai documents the field without its unit beyond the name), else the time
since ``start_date`` by the server's clock while running. GPU charges stop when the container
stops (Vast.ai's status table), so what was accrued while running is kept after that.

Idempotency: the instance ``label`` is ``hybridgpu-<key>``; submit lists instances first.
States: ``null``/created/loading → Pending; running → Running; exited (the batch container
returned) → Succeeded; stopped → Failed; an instance that is gone → Lost.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import bearer
from hybridgpu.networks.base import RemoteRef
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    job_env,
)
from hybridgpu.networks.errors import BadRequest, NotFound
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


def free_gpus_by_product(offers: list[dict[str, Any]]) -> dict[str, int]:
    """Free GPUs per product: each machine counted once, by its largest bundle."""
    per_machine: dict[tuple[str, Any], int] = {}
    for offer in offers:
        product = _product(offer)
        machine = offer.get("machine_id", ("offer", offer.get("id")))
        gpus = max(int(offer.get("num_gpus", 1) or 1), 1)
        per_machine[(product, machine)] = max(per_machine.get((product, machine), 0), gpus)
    free: dict[str, int] = {}
    for (product, _), gpus in per_machine.items():
        free[product] = free.get(product, 0) + gpus
    return free


class VastAdapter(ContainerAdapter):
    """Rents one Vast.ai instance per job."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        super().__init__(name, spec, credential, policy, bearer(credential))

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
        """The cheapest bundle per GPU product, with the GPUs free across all machines."""
        found = await self._search()
        best: dict[str, tuple[Decimal, dict[str, Any]]] = {}
        for offer in found:
            per_gpu = _per_gpu(offer)
            if per_gpu is None:
                continue
            product = _product(offer)
            if product not in best or per_gpu < best[product][0]:
                best[product] = (per_gpu, offer)
        free = free_gpus_by_product(found)
        return [
            self.offer(
                product,
                memory_bytes=int(offer.get("gpu_ram", 0)) * 2**20,
                pricing=PerGPUHour(price),
                available=free[product],
                typical_start_seconds=TYPICAL_START_SECONDS,
                region=str(offer.get("geolocation") or ""),
            )
            for product, (price, offer) in sorted(best.items())
        ]

    async def _find(self, key: str) -> dict[str, Any] | None:
        response = await self.client.request("GET", f"{API}/instances/", retry=True)
        for instance in response.json().get("instances", []) or []:
            if isinstance(instance, dict) and instance.get("label") == label_for(key):
                return instance
        return None

    async def start(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str:
        """Rent the cheapest matching bundle, unless an instance has the key's label."""
        existing = await self._find(key)
        if existing is not None:
            return str(existing["id"])
        names = names_for(gpu_product)
        query = {"gpu_name": {"eq": names.vast}, "num_gpus": {"eq": job.gpu.count}}
        usable = sorted(
            (
                (price, o)
                for o in await self._search(query)
                if (price := _per_gpu(o)) is not None
                and _product(o) == gpu_product
                and int(o.get("gpu_ram", 0)) * 2**20 >= job.gpu.min_memory_bytes()
            ),
            key=lambda item: item[0],
        )
        if not usable:
            raise BadRequest(
                self.name, f"no rentable {gpu_product} offer with {job.gpu.count} GPU(s)"
            )
        price, offer = usable[0]
        self.check_cap(price, cap, "before submission")
        body = {
            "image": job.image or DEFAULT_IMAGE,
            "disk": 40,
            "runtype": "args",
            "label": label_for(key),
            "env": job_env(job, key),
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
        return str(created["new_contract"])

    async def confirm(self, ref: RemoteRef, job: InferenceJobSpec, cap: Decimal | None) -> None:
        """Check the rented instance's price against the cap."""
        del job
        remote = await self.inspect(ref)
        self.check_cap(remote.price_per_gpu_hour if remote else None, cap, "after submission")

    async def _instance(self, ref: RemoteRef) -> tuple[dict[str, Any], float] | None:
        found = await self.fetch(f"{API}/instances/{ref.id}/")
        body = found[0] if found else None
        instance = body.get("instances") if isinstance(body, dict) else None
        return (instance, found[1]) if found and isinstance(instance, dict) else None

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """``actual_status`` mapped to the operator's states; cost from ``dph_total``."""
        found = await self._instance(ref)
        if found is None:
            return None
        instance, now = found
        actual = instance.get("actual_status")
        state = _STATES.get(actual, "Running")
        uptime = decimal_of(instance.get("uptime_mins"))
        start = instance.get("start_date")
        return RemoteJob(
            state,  # type: ignore[arg-type]
            message=str(instance.get("status_msg") or actual or ""),
            price_per_hour=decimal_of(instance.get("dph_total")),
            gpus=max(int(instance.get("num_gpus", 1) or 1), 1),
            started=float(start) if isinstance(start, int | float) and state == "Running" else None,
            now=now,
            ran_seconds=float(uptime) * 60 if uptime is not None else None,
        )

    async def cancel(self, ref: RemoteRef) -> None:
        """Destroy the instance; an instance already gone is fine."""
        try:
            await self.client.request("DELETE", f"{API}/instances/{ref.id}/", retry=True)
        except NotFound:
            return

    async def result(self, ref: RemoteRef) -> str | None:
        """The instance's address, where the container serves or leaves its output."""
        found = await self._instance(ref)
        if found and found[0].get("public_ipaddr"):
            return f"vastai://{found[0]['public_ipaddr']}/instances/{ref.id}"
        return None


def _product(offer: dict[str, Any]) -> str:
    return from_vast(str(offer.get("gpu_name", "")), int(offer.get("gpu_ram", 0) or 0))


def _per_gpu(offer: dict[str, Any]) -> Decimal | None:
    price = decimal_of(offer.get("dph_total"))
    if price is None:
        return None
    return price / max(int(offer.get("num_gpus", 1) or 1), 1)
