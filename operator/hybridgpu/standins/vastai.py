"""Stand-in Vast.ai REST API (``/api/v0``).

Machines: each configured vastai offer becomes machines of up to 8 GPUs holding its
``available`` GPUs. As on Vast.ai, a search returns one offer per (machine, bundle size):
``num_gpus`` is the bundle's GPU count and ``machine_id`` its machine's. A machine offers
bundles of 1, 2, 4 and 8 GPUs that fit in its free GPUs, and one of all of them; renting a
bundle takes its GPUs from the machine until the instance exits, is stopped, destroyed or
vanishes. ``POST|GET
/api/v0/bundles/`` searches (``eq``/``neq``/``gt``/``gte``/``lt``/``lte``/``in`` filters,
``order``, ``limit``); ``PUT /api/v0/asks/{id}/`` rents one (``{"success": true,
"new_contract": id}``); ``GET /api/v0/instances/[{id}/]`` shows ``actual_status`` going
``null`` → ``loading`` → ``running`` → ``exited`` on the simulated clock (the run lasts the
``HYBRIDGPU_ESTIMATED_DURATION`` env the job was created with, default 10m), with
``start_date`` and ``uptime_mins`` in simulated time; ``DELETE /api/v0/instances/{id}/``
destroys. Errors are ``{"success": false, "error": ..., "msg": ...}``. Prices are decimal
strings here (the real API sends JSON numbers; the adapter reads both).
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from hybridgpu.networks.gpu_names import names_for
from hybridgpu.standins.config import OfferConfig, StandinConfig
from hybridgpu.standins.state import NetworkState, SimJob, fail, read_json
from hybridgpu.units import parse_duration

_STATUS = {"pending": None, "running": "running", "done": "exited", "stopped": "stopped"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Vast.ai's error shape."""
    kind = {401: "unauthorized", 404: "no_such_object", 429: "rate_limited"}.get(status, "error")
    return {"success": False, "error": kind, "msg": message}


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


def _matches(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return bool(value == condition)
    for op, raw in condition.items():
        check = _OPS.get(op)
        if check is None:
            continue
        left, right = value, raw
        try:
            if isinstance(value, str) and op in ("gt", "gte", "lt", "lte"):
                left, right = Decimal(value), Decimal(str(raw))
            if not check(left, right):
                return False
        except (TypeError, ArithmeticError):
            return False
    return True


def _sort_key(field: str) -> Callable[[dict[str, Any]], Decimal]:
    def key(row: dict[str, Any]) -> Decimal:
        return Decimal(str(row.get(field, 0)))

    return key


MACHINE_GPUS = 8
BUNDLE_SIZES = (1, 2, 4, 8)
_HELD = ("pending", "running")


def ask_id(machine_id: int, gpus: int) -> int:
    """The id of the offer renting ``gpus`` GPUs of a machine (unique per bundle)."""
    return machine_id * 100 + gpus


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Vast.ai stand-in."""
    state = NetworkState("vastai", config, error_body)
    machines: dict[int, tuple[OfferConfig, int]] = {}
    for offer in config.offers_for("vastai"):
        left = offer.available
        while left > 0:
            machines[100 + len(machines) + 1] = (offer, min(left, MACHINE_GPUS))
            left -= MACHINE_GPUS

    def free_gpus(machine_id: int) -> int:
        now = time.monotonic()
        held: int = sum(
            job.data["gpus"]
            for job in state.jobs.values()
            if job.data["machine"] == machine_id and job.phase(now) in _HELD
        )
        return machines[machine_id][1] - held

    def offer_json(machine_id: int, gpus: int) -> dict[str, Any]:
        offer = machines[machine_id][0]
        per_gpu = state.price(offer.usd_per_gpu_hour)
        return {
            "id": ask_id(machine_id, gpus),
            "ask_contract_id": ask_id(machine_id, gpus),
            "bundle_id": ask_id(machine_id, gpus),
            "machine_id": machine_id,
            "gpu_name": names_for(offer.gpu_product).vast,
            "num_gpus": gpus,
            "gpu_ram": offer.memory_gi_b * 1024,
            "gpu_total_ram": offer.memory_gi_b * 1024 * gpus,
            "dph_base": state.money(per_gpu * gpus),
            "dph_total": state.money(per_gpu * gpus),
            "geolocation": offer.region,
            "rentable": True,
            "rented": False,
            "verified": True,
            "reliability2": 0.99,
        }

    def open_offers() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for machine_id in machines:
            free = free_gpus(machine_id)
            sizes = sorted({n for n in BUNDLE_SIZES if n <= free} | ({free} if free else set()))
            rows.extend(offer_json(machine_id, n) for n in sizes)
        return rows

    async def search(request: web.Request) -> web.Response:
        if request.method == "GET":
            try:
                query = json.loads(request.query.get("q", "{}"))
            except ValueError:
                return fail(state, 400, "q is not JSON")
        else:
            query = await read_json(request, state)
        rows = open_offers()
        for field, condition in query.items():
            if field in ("limit", "order", "type", "allocated_storage"):
                continue
            rows = [r for r in rows if field in r and _matches(r[field], condition)]
        for field, direction in reversed(query.get("order") or []):
            rows.sort(key=_sort_key(field), reverse=direction == "desc")
        return web.json_response({"offers": rows[: int(query.get("limit", 64))]})

    def instance_json(job: SimJob) -> dict[str, Any]:
        now = time.monotonic()
        phase = job.phase(now)
        actual = _STATUS[phase]
        if phase == "pending" and now >= job.created + job.start_delay / 2:
            actual = "loading"
        offer = job.data["offer"]
        started = phase != "pending"
        end = state.end_epoch(job)
        uptime = ((end or state.clock.now()) - state.start_epoch(job)) / 60 if started else None
        return {
            "id": int(job.id),
            "machine_id": job.data["machine"],
            "label": job.data["label"],
            "actual_status": actual,
            "intended_status": "stopped" if phase == "stopped" else "running",
            "cur_state": "running" if phase in _HELD else "stopped",
            "gpu_name": names_for(offer.gpu_product).vast,
            "num_gpus": job.data["gpus"],
            "gpu_ram": offer.memory_gi_b * 1024,
            "dph_total": state.money(job.price_per_hour),
            "start_date": round(state.start_epoch(job), 3) if started else None,
            "uptime_mins": round(max(uptime, 0.0), 4) if uptime is not None else None,
            "public_ipaddr": "127.0.0.1",
            "image_uuid": job.data["image"],
            "status_msg": {"done": "container exited with code 0"}.get(phase, actual or ""),
        }

    async def create(request: web.Request) -> web.Response:
        offer_id = int(request.match_info["offer"])
        body = await read_json(request, state)
        machine_id, gpus = divmod(offer_id, 100)
        if machine_id not in machines or not 1 <= gpus <= MACHINE_GPUS:
            return fail(state, 404, f"no such ask {offer_id}")
        if not isinstance(body.get("image"), str) or not body["image"]:
            return web.json_response(
                {"success": False, "error": "invalid_args", "msg": "image is required"}, status=400
            )
        label = str(body.get("label", ""))
        state.submissions[label or "-"] += 1
        if free_gpus(machine_id) < gpus:
            return web.json_response(
                {"success": False, "error": "no_such_ask", "msg": "offer is no longer available"},
                status=400,
            )
        env = body.get("env")
        if not isinstance(env, dict):
            env = {}
        try:
            duration = parse_duration(str(env.get("HYBRIDGPU_ESTIMATED_DURATION", "10m")))
        except ValueError:
            return fail(state, 400, "env HYBRIDGPU_ESTIMATED_DURATION is not a duration")
        instance_id = str(20_000 + state.new_id())
        offer = machines[machine_id][0]
        price = state.price(offer.usd_per_gpu_hour, charged=True) * gpus
        state.jobs[instance_id] = SimJob(
            id=instance_id,
            key=label,
            created=time.monotonic(),
            start_delay=config.start_delay("vastai"),
            run_seconds=duration.total_seconds() / config.time_scale,
            price_per_hour=price,
            data={
                "label": label,
                "offer": offer,
                "gpus": gpus,
                "image": body["image"],
                "machine": machine_id,
            },
        )
        state.created[instance_id] += 1
        return web.json_response({"success": True, "new_contract": int(instance_id)})

    async def list_instances(_: web.Request) -> web.Response:
        rows = []
        for job_id in list(state.jobs):
            job = state.live_job(job_id)
            if job is not None:
                rows.append(instance_json(job))
        return web.json_response({"instances": rows})

    async def show(request: web.Request) -> web.Response:
        job = state.live_job(request.match_info["id"])
        if job is None:
            return fail(state, 404, "no such instance")
        return web.json_response({"instances": instance_json(job)})

    async def destroy(request: web.Request) -> web.Response:
        if state.jobs.pop(request.match_info["id"], None) is None:
            return fail(state, 404, "no such instance")
        return web.json_response({"success": True})

    app = web.Application(middlewares=[state.middleware(public=())])
    app.add_routes(state.control_routes())
    app.add_routes(
        [
            web.post("/api/v0/bundles/", search),
            web.get("/api/v0/bundles/", search),
            web.put("/api/v0/asks/{offer:[0-9]+}/", create),
            web.get("/api/v0/instances/", list_instances),
            web.get("/api/v0/instances/{id:[0-9]+}/", show),
            web.delete("/api/v0/instances/{id:[0-9]+}/", destroy),
        ]
    )
    return app, state
