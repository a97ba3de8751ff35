"""Stand-in Vast.ai REST API (``/api/v0``).

Machines: for each configured vastai offer with ``available`` GPUs, one machine each with 1,
2, 4 and 8 GPUs that fit. ``POST|GET /api/v0/bundles/`` searches them (``eq``/``neq``/``gt``/
``gte``/``lt``/``lte``/``in`` filters, ``order``, ``limit``); ``PUT /api/v0/asks/{id}/`` rents
one (``{"success": true, "new_contract": id}``); ``GET /api/v0/instances/[{id}/]`` shows
``actual_status`` going ``null`` → ``loading`` → ``running`` → ``exited`` on the simulated clock
(the run lasts the ``HYBRIDGPU_ESTIMATED_DURATION`` env the job was created with, default
10m); ``DELETE /api/v0/instances/{id}/`` destroys. Errors are
``{"success": false, "error": ..., "msg": ...}``. Prices are decimal strings here (the real
API sends JSON numbers; the adapter reads both).
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
from hybridgpu.standins.config import StandinConfig
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


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Vast.ai stand-in."""
    state = NetworkState("vastai", config, error_body)
    machines: dict[int, dict[str, Any]] = {}
    for offer in config.offers_for("vastai"):
        for gpus in (1, 2, 4, 8):
            if gpus <= offer.available:
                machine_id = 10_000 + len(machines) + 1
                machines[machine_id] = {"offer": offer, "gpus": gpus, "rented_by": None}

    def offer_json(machine_id: int) -> dict[str, Any]:
        machine = machines[machine_id]
        offer = machine["offer"]
        per_gpu = state.price(offer.usd_per_gpu_hour)
        return {
            "id": machine_id,
            "ask_contract_id": machine_id,
            "bundle_id": machine_id,
            "gpu_name": names_for(offer.gpu_product).vast,
            "num_gpus": machine["gpus"],
            "gpu_ram": offer.memory_gi_b * 1024,
            "gpu_total_ram": offer.memory_gi_b * 1024 * machine["gpus"],
            "dph_base": state.money(per_gpu * machine["gpus"]),
            "dph_total": state.money(per_gpu * machine["gpus"]),
            "geolocation": offer.region,
            "rentable": machine["rented_by"] is None,
            "rented": machine["rented_by"] is not None,
            "verified": True,
            "reliability2": 0.99,
        }

    async def search(request: web.Request) -> web.Response:
        if request.method == "GET":
            try:
                query = json.loads(request.query.get("q", "{}"))
            except ValueError:
                return fail(state, 400, "q is not JSON")
        else:
            query = await read_json(request, state)
        rows = [offer_json(m) for m in machines]
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
        return {
            "id": int(job.id),
            "label": job.data["label"],
            "actual_status": actual,
            "intended_status": "stopped" if phase == "stopped" else "running",
            "cur_state": "running" if phase in ("pending", "running") else "stopped",
            "gpu_name": names_for(offer.gpu_product).vast,
            "num_gpus": job.data["gpus"],
            "gpu_ram": offer.memory_gi_b * 1024,
            "dph_total": state.money(job.price_per_hour),
            "start_date": job.start_epoch() if phase != "pending" else None,
            "public_ipaddr": "127.0.0.1",
            "image_uuid": job.data["image"],
            "status_msg": {"done": "container exited with code 0"}.get(phase, actual or ""),
        }

    async def create(request: web.Request) -> web.Response:
        machine_id = int(request.match_info["offer"])
        body = await read_json(request, state)
        machine = machines.get(machine_id)
        if machine is None:
            return fail(state, 404, f"no such ask {machine_id}")
        if not isinstance(body.get("image"), str) or not body["image"]:
            return web.json_response(
                {"success": False, "error": "invalid_args", "msg": "image is required"}, status=400
            )
        label = str(body.get("label", ""))
        state.submissions[label or "-"] += 1
        if machine["rented_by"] is not None:
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
        offer = machine["offer"]
        price = state.price(offer.usd_per_gpu_hour, charged=True) * machine["gpus"]
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
                "gpus": machine["gpus"],
                "image": body["image"],
                "machine": machine_id,
            },
        )
        machine["rented_by"] = instance_id
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
        job = state.jobs.pop(request.match_info["id"], None)
        if job is None:
            return fail(state, 404, "no such instance")
        machines[job.data["machine"]]["rented_by"] = None
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
