"""Stand-in Vast.ai REST API, as the official ``vastai`` client (1.9.1) calls it.

Machines: each configured vastai offer becomes machines of up to 8 GPUs holding its
``available`` GPUs. As on Vast.ai, a search returns one offer per (machine, bundle size):
``num_gpus`` is the bundle's GPU count and ``machine_id`` its machine's. A machine offers
bundles of 1, 2, 4 and 8 GPUs that fit in its free GPUs, and one of all of them; renting a
bundle takes its GPUs from the machine until the instance exits, is stopped, destroyed or
vanishes.

* ``POST|GET /api/v0/bundles/`` searches (``eq``/``neq``/``gt``/``gte``/``lt``/``lte``/
  ``in``/``notin`` filters, ``order``, ``limit``, ``allocated_storage``); prices are JSON
  numbers, ``dph_total`` per bundle.
* ``PUT /api/v0/asks/{id}/`` rents one (``{"success": true, "new_contract": id}``); an offer
  taken meanwhile answers 410.
* ``GET /api/v1/instances/`` (``select_filters``, ``order_by``, ``limit``, ``after_token``,
  each a JSON value in the query string; ``{instances, next_token, total_instances,
  label_counts}``) and ``GET /api/v0/instances/{id}/`` (``{"instances": row}``, ``null`` for
  an instance that is gone); rows carry ``start_date`` (epoch seconds, at creation) and
  ``extra_env`` (``[[name, value], ...]``) as the client reads them.
* ``PUT /api/v0/instances/{id}/`` ``{"label"}`` relabels; ``DELETE /api/v0/instances/{id}/``
  destroys.

``actual_status`` goes ``null`` → ``loading`` → ``running`` → ``exited`` on the simulated
clock (the run lasts the ``HYBRIDGPU_ESTIMATED_DURATION`` env, default 10m). Vast.ai reports
no exit code and documents ``exited`` as an unexpected exit, so the simulated container
signals a successful end itself before exiting, as hybridgpu asks a container to: it sets
its instance's label to ``HYBRIDGPU_COMPLETION_LABEL`` (with the fault ``failExitCode`` set
it exits without doing so). Errors are ``{"success": false, "error": ..., "msg": ...}``.
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
    kinds = {401: "unauthorized", 404: "no_such_object", 410: "no_such_ask", 429: "rate_limited"}
    kind = kinds.get(status, "error")
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
            numeric = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
            if numeric and isinstance(raw, str | int | float) and not isinstance(raw, bool):
                # The official client sends numbers as strings ({"num_gpus": {"eq": "1"}}).
                left, right = Decimal(str(value)), Decimal(str(raw))
            elif numeric and isinstance(raw, list):
                left, right = Decimal(str(value)), [Decimal(str(r)) for r in raw]
            elif isinstance(value, str) and op in ("gt", "gte", "lt", "lte"):
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
            "dph_base": float(per_gpu * gpus),
            "dph_total": float(per_gpu * gpus),
            "storage_cost": 0.0,
            "geolocation": offer.region,
            "rentable": True,
            "rented": False,
            "verified": True,
            "external": False,
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

    def label_of(job: SimJob) -> str:
        """The label, as the container leaves it: relabelled on a successful exit."""
        if job.phase(time.monotonic()) == "done" and job.data["exit"] == 0:
            return str(job.data["env"].get("HYBRIDGPU_COMPLETION_LABEL") or job.data["label"])
        return str(job.data["label"])

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
            "label": label_of(job),
            "actual_status": actual,
            "intended_status": "stopped" if phase == "stopped" else "running",
            "cur_state": "running" if phase in _HELD else "stopped",
            "gpu_name": names_for(offer.gpu_product).vast,
            "num_gpus": job.data["gpus"],
            "gpu_ram": offer.memory_gi_b * 1024,
            "dph_total": float(job.price_per_hour),
            "disk_space": job.data["disk"],
            "start_date": round(job.data["created_epoch"], 3),
            "uptime_mins": round(max(uptime, 0.0), 4) if uptime is not None else None,
            "public_ipaddr": "127.0.0.1",
            "image_uuid": job.data["image"],
            "extra_env": [[k, str(v)] for k, v in sorted(job.data["env"].items())],
            "status_msg": actual or "",
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
            return fail(state, 410, "offer is no longer available")
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
                "env": {str(k): str(v) for k, v in env.items()},
                "disk": float(body.get("disk") or 10),
                "created_epoch": state.clock.now(),
                "exit": state.faults.fail_exit_code,
            },
        )
        state.created[instance_id] += 1
        return web.json_response({"success": True, "new_contract": int(instance_id)})

    def query_value(request: web.Request, name: str, default: Any) -> Any:
        raw = request.query.get(name)
        return default if raw is None else json.loads(raw)

    async def list_instances(request: web.Request) -> web.Response:
        try:
            filters = query_value(request, "select_filters", {})
            limit = int(query_value(request, "limit", 25))
            after = query_value(request, "after_token", None)
        except (ValueError, TypeError):
            return fail(state, 400, "select_filters, limit, after_token: JSON values")
        rows = [instance_json(j) for jid in list(state.jobs) if (j := state.live_job(jid))]
        for field, condition in (filters or {}).items():
            rows = [r for r in rows if field in r and _matches(r[field], condition)]
        rows.sort(key=lambda r: int(r["id"]))
        if after is not None:
            rows = [r for r in rows if int(r["id"]) > int(after)]
        page = rows[: max(limit, 1)]
        more = len(rows) > len(page)
        labels: dict[str, int] = {}
        for row in rows:
            labels[row["label"]] = labels.get(row["label"], 0) + 1
        return web.json_response(
            {
                "instances": page,
                "next_token": str(page[-1]["id"]) if more else None,
                "total_instances": len(rows),
                "label_counts": labels,
            }
        )

    async def show(request: web.Request) -> web.Response:
        job = state.live_job(request.match_info["id"])
        return web.json_response({"instances": instance_json(job) if job else None})

    async def relabel(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        job = state.live_job(request.match_info["id"])
        if job is None:
            return fail(state, 404, "no such instance")
        if "label" in body:
            job.data["label"] = str(body["label"])
        return web.json_response({"success": True})

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
            web.get("/api/v1/instances/", list_instances),
            web.get("/api/v0/instances/{id:[0-9]+}/", show),
            web.put("/api/v0/instances/{id:[0-9]+}/", relabel),
            web.delete("/api/v0/instances/{id:[0-9]+}/", destroy),
        ]
    )
    return app, state
