"""Vast.ai adapter: search offers, rent the cheapest acceptable one, poll, destroy.

Calls, as the official ``vastai`` client (1.9.1, ``vastai/api/*.py``) makes them:
``POST /api/v0/bundles/`` (search: ``{field: {op: value}}`` filters, ``order``, ``type``,
``limit``, ``allocated_storage``), ``PUT /api/v0/asks/{offer}/`` (create; ``{"success": true,
"new_contract": id}``; an offer taken meanwhile answers 410 and the next one is tried),
``GET /api/v1/instances/`` (paged with ``next_token``), ``GET /api/v0/instances/{id}/?owner=me``
(``{"instances": row | null}``), ``DELETE /api/v0/instances/{id}/``. Bearer auth.

Offers are per bundle, not per machine: ``num_gpus`` is the bundle's GPU count, and a machine
with 8 free GPUs is listed as several offers (1, 2, 4, 8 GPUs) sharing its ``machine_id``. So
submit searches ``num_gpus == spec.gpu.count``, and the free GPUs of a product are counted
once per machine (its largest bundle), not summed over bundles. Offers come from one search
per known GPU name (``gpu_names``), so the cheapest consumer cards cannot crowd data-centre
GPUs out of a single page; searches count against Vast.ai's daily search quota (a 429
``search_quota_exceeded`` that only resets at UTC midnight). ``dph_total`` includes storage
for ``allocated_storage``, so searches ask for the disk the instance gets (``DISK_GB``).

Cost: ``dph_total`` times the instance's run time: ``uptime_mins`` when the instance reports
it, else nothing (``start_date`` is the creation time). GPU charges stop when the container
stops, so what was accrued while running is kept after that.

States (Vast.ai's instance status docs): ``null``/created/loading/scheduling/rebooting →
Pending; running → Running; ``exited`` means the container exited unexpectedly and
``offline``/``unknown`` never come back to running, so all three are Failed (a failed
instance is destroyed by the operator's cancel, which stops its billing), as is ``stopped``
and any unknown status. Vast.ai reports no exit code, so success is explicit: the container
sets its own instance's label to ``HYBRIDGPU_COMPLETION_LABEL`` (``PUT
/api/v0/instances/$CONTAINER_ID/`` with the per-instance ``CONTAINER_API_KEY`` Vast.ai puts
in its environment) and exits; an exited instance with that label is Succeeded.

Idempotency: the instance ``label`` is ``hybridgpu-<key>`` (``...:succeeded`` once done);
submit lists instances first. A destroyed instance is forgotten by Vast.ai, so a submit after
cancel rents again (the operator uses a new key per attempt).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.networks.adapter import bearer
from hybridgpu.networks.base import RemoteRef, RemoteState
from hybridgpu.networks.container import (
    DEFAULT_IMAGE,
    ContainerAdapter,
    RemoteJob,
    decimal_of,
    job_env,
    server_time,
)
from hybridgpu.networks.errors import BadRequest, NotFound
from hybridgpu.networks.gpu_names import from_vast, names_for, vast_names
from hybridgpu.networks.http import HttpPolicy
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour

API = "/api/v0"
TYPICAL_START_SECONDS = 60.0
DISK_GB = 40
CREATE_TRIES = 3
"""Offers tried in price order when the cheapest is taken meanwhile (410)."""
_PENDING = frozenset({None, "created", "loading", "scheduling", "rebooting"})
_FAILED_MESSAGES = {
    "exited": "the container exited without signalling success",
    "offline": "the host went offline",
    "unknown": "the host's state is unknown",
    "stopped": "the instance was stopped",
}


def label_for(key: str) -> str:
    """The instance label that makes submission idempotent."""
    return f"hybridgpu-{key}"


def completion_label(key: str) -> str:
    """The label a container sets on its own instance to say it finished successfully."""
    return f"{label_for(key)}:succeeded"


def _largest_bundles(offers: list[dict[str, Any]]) -> dict[tuple[str, Any], int]:
    """Per (product, machine): the GPUs of its largest bundle."""
    per_machine: dict[tuple[str, Any], int] = {}
    for offer in offers:
        product = _product(offer)
        machine = offer.get("machine_id", ("offer", offer.get("id")))
        gpus = max(int(offer.get("num_gpus", 1) or 1), 1)
        per_machine[(product, machine)] = max(per_machine.get((product, machine), 0), gpus)
    return per_machine


def free_gpus_by_product(offers: list[dict[str, Any]]) -> dict[str, int]:
    """Free GPUs per product: each machine counted once, by its largest bundle."""
    free: dict[str, int] = {}
    for (product, _), gpus in _largest_bundles(offers).items():
        free[product] = free.get(product, 0) + gpus
    return free


def largest_bundle_by_product(offers: list[dict[str, Any]]) -> dict[str, int]:
    """The most GPUs one instance of each product can have: a job's GPUs share a machine."""
    largest: dict[str, int] = {}
    for (product, _), gpus in _largest_bundles(offers).items():
        largest[product] = max(largest.get(product, 0), gpus)
    return largest


class VastAdapter(ContainerAdapter):
    """Rents one Vast.ai instance per job."""

    def __init__(
        self, name: str, spec: ComputeProviderSpec, credential: str | None, policy: HttpPolicy
    ) -> None:
        super().__init__(name, spec, credential, policy, bearer(credential))

    async def _search(self, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {
            "limit": 64,
            "type": "on-demand",
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "order": [["dph_total", "asc"]],
            "allocated_storage": DISK_GB,
        }
        query.update(extra or {})
        response = await self.client.request("POST", f"{API}/bundles/", json=query, retry=True)
        offers = json.loads(response.text, parse_float=Decimal).get("offers", [])
        return [o for o in offers if isinstance(o, dict)]

    async def list_offers(self) -> list[ExternalOffer]:
        """The cheapest bundle per GPU product, with the GPUs free across all machines."""
        found: list[dict[str, Any]] = []
        for name in vast_names():
            found += await self._search({"gpu_name": {"eq": name}})
        best: dict[str, tuple[Decimal, dict[str, Any]]] = {}
        for offer in found:
            per_gpu = _per_gpu(offer)
            if per_gpu is None:
                continue
            product = _product(offer)
            if product not in best or per_gpu < best[product][0]:
                best[product] = (per_gpu, offer)
        free = free_gpus_by_product(found)
        largest = largest_bundle_by_product(found)
        return [
            self.offer(
                product,
                memory_bytes=int(offer.get("gpu_ram", 0)) * 2**20,
                pricing=PerGPUHour(price),
                available=free[product],
                typical_start_seconds=TYPICAL_START_SECONDS,
                region=str(offer.get("geolocation") or ""),
                max_gpus_per_job=largest[product],
            )
            for product, (price, offer) in sorted(best.items())
        ]

    async def _find(self, key: str) -> dict[str, Any] | None:
        """The account's instance labelled for ``key`` (done or not), paging through all."""
        labels = (label_for(key), completion_label(key))
        params: dict[str, str] = {
            "select_filters": json.dumps({"label": {"in": list(labels)}}),
            "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
            "limit": "25",
        }
        while True:
            response = await self.client.request(
                "GET", "/api/v1/instances/", params=params, retry=True
            )
            body = response.json()
            for instance in body.get("instances") or []:
                if isinstance(instance, dict) and instance.get("label") in labels:
                    return instance
            token = body.get("next_token")
            if not token:
                return None
            params["after_token"] = json.dumps(token)

    async def lookup(
        self, job: InferenceJobSpec, key: str, gpu_product: str, cap: Decimal | None
    ) -> str | None:
        """The instance labelled for the key."""
        del job, gpu_product, cap
        found = await self._find(key)
        return None if found is None else str(found["id"])

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
        self.check_cap(usable[0][0], cap, "before submission")
        env = job_env(job, key)
        env["HYBRIDGPU_COMPLETION_LABEL"] = completion_label(key)
        body = {
            "client_id": "me",
            "image": job.image or DEFAULT_IMAGE,
            "disk": DISK_GB,
            "runtype": "args",
            "label": label_for(key),
            "env": env,
            "args": [*(job.command or []), *(job.args or [])],
        }
        created: dict[str, Any] = {}
        for attempt, (price, offer) in enumerate(usable[:CREATE_TRIES]):
            self.check_cap(price, cap, "before submission")
            try:
                response = await self.client.request(
                    "PUT", f"{API}/asks/{offer['id']}/", json=body, retry=False
                )
            except NotFound:  # 410: taken since the search; the next cheapest, if any
                if attempt + 1 >= min(len(usable), CREATE_TRIES):
                    raise
                continue
            created = response.json()
            break
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
        try:
            response = await self.client.request(
                "GET", f"{API}/instances/{ref.id}/", params={"owner": "me"}, retry=True
            )
        except NotFound:
            return None
        body = json.loads(response.text, parse_float=Decimal)
        instance = body.get("instances") if isinstance(body, dict) else None
        return (instance, server_time(response)) if isinstance(instance, dict) else None

    async def inspect(self, ref: RemoteRef) -> RemoteJob | None:
        """``actual_status`` mapped to the operator's states; cost from ``dph_total``."""
        found = await self._instance(ref)
        if found is None:
            return None
        instance, now = found
        actual = instance.get("actual_status")
        label = instance.get("label")
        state: RemoteState
        if actual in _PENDING:
            state, message = "Pending", str(actual or "scheduling")
        elif actual == "running":
            state, message = "Running", "running"
        elif actual == "exited" and isinstance(label, str) and label.endswith(":succeeded"):
            state, message = "Succeeded", "the container signalled success and exited"
        else:
            state = "Failed"
            message = _FAILED_MESSAGES.get(str(actual), f"unknown status {actual!r}")
        status_msg = instance.get("status_msg")
        if status_msg and state == "Failed":
            message = f"{message}: {status_msg}"
        uptime = decimal_of(instance.get("uptime_mins"))
        return RemoteJob(
            state,
            message=message,
            price_per_hour=decimal_of(instance.get("dph_total")),
            gpus=max(int(instance.get("num_gpus", 1) or 1), 1),
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
