"""Stand-in Akash Console API (managed wallet), responses wrapped in ``{"data": ...}``.

``GET /v1/providers`` (no key) lists one provider per configured akash offer with
``gpuModels`` and ``stats.gpu``. ``POST /v1/deployments`` takes ``{"data": {"sdl", "deposit"}}``
or the unwrapped form, parses the SDL and opens bids once the start latency has passed; a
provider bids when its GPU model and memory satisfy the SDL (price: ``usd`` per hour for the
lease). ``GET /v1/bids?dseq=`` returns chain-shaped bids (``bid.id``, ``bid.state``,
``bid.price{denom, amount}``). ``POST /v1/leases`` takes ``{"manifest", "leases": [{dseq,
gseq, oseq, provider}]}`` or ``{"dseq", "bidId"}``. ``GET /v1/deployments[/{dseq}]`` and
``DELETE /v1/deployments/{dseq}`` as documented. A leased deployment runs for the
``HYBRIDGPU_ESTIMATED_DURATION`` in its SDL env and then closes by itself (a finished batch).
Errors: ``{"error": "...", "message": "..."}``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import yaml
from aiohttp import web

from hybridgpu.networks.gpu_names import names_for
from hybridgpu.standins.config import OfferConfig, StandinConfig
from hybridgpu.standins.state import NetworkState, SimJob, fail, read_json
from hybridgpu.units import parse_duration, parse_quantity

_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Akash Console's error shape."""
    return {"error": _ERRORS.get(status, "InternalServerError"), "message": message}


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def parse_sdl(text: str) -> tuple[list[dict[str, Any]], int, dict[str, str]]:
    """GPU model requirements, GPU units and service env of an SDL; ValueError names the field."""
    try:
        sdl = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"sdl: not YAML: {exc}") from None
    if not isinstance(sdl, dict) or str(sdl.get("version")) not in ("2.0", "2.1"):
        raise ValueError("sdl.version: must be 2.0 or 2.1")
    profiles = (sdl.get("profiles") or {}).get("compute") or {}
    if not profiles:
        raise ValueError("sdl.profiles.compute: missing")
    resources = next(iter(profiles.values())).get("resources") or {}
    gpu = resources.get("gpu") or {}
    units = int(gpu.get("units", 0))
    if units < 1:
        raise ValueError("sdl.profiles.compute.*.resources.gpu.units: at least 1 GPU required")
    nvidia = ((gpu.get("attributes") or {}).get("vendor") or {}).get("nvidia")
    models = [m for m in nvidia or [] if isinstance(m, dict)]
    env: dict[str, str] = {}
    for service in (sdl.get("services") or {}).values():
        for item in service.get("env") or []:
            name, _, value = str(item).partition("=")
            env[name] = value
    return models, units, env


def _satisfies(offer: OfferConfig, models: list[dict[str, Any]]) -> bool:
    if not models:
        return True
    names = names_for(offer.gpu_product)
    for model in models:
        if str(model.get("model", "")).lower() != names.akash_model:
            continue
        ram = model.get("ram")
        if ram and parse_quantity(str(ram)) > offer.memory_gi_b * 2**30:
            continue
        iface = model.get("interface")
        if iface and names.akash_interface and str(iface).lower() != names.akash_interface:
            continue
        return True
    return False


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Akash Console stand-in."""
    state = NetworkState("akash", config, error_body)
    offers = config.offers_for("akash")
    owners = {f"akash1standin{i:04d}": offer for i, offer in enumerate(offers)}

    def busy(owner: str) -> int:
        now = time.monotonic()
        return sum(
            j.data["units"]
            for j in state.jobs.values()
            if j.data.get("provider") == owner and j.phase(now) in ("pending", "running")
        )

    async def providers(_: web.Request) -> web.Response:
        rows = []
        for owner, offer in owners.items():
            names = names_for(offer.gpu_product)
            active = busy(owner)
            rows.append(
                {
                    "owner": owner,
                    "isOnline": True,
                    "gpuModels": [
                        {
                            "vendor": "nvidia",
                            "model": names.akash_model,
                            "ram": f"{offer.memory_gi_b}Gi",
                            "interface": names.akash_interface,
                        }
                    ],
                    "stats": {
                        "gpu": {
                            "active": active,
                            "available": max(offer.available - active, 0),
                            "pending": 0,
                            "total": offer.available,
                        }
                    },
                }
            )
        return web.json_response(rows)

    def bids_for(job: SimJob) -> list[dict[str, Any]]:
        if time.monotonic() < job.created + job.start_delay:
            return []
        rows = []
        for owner, offer in owners.items():
            free = offer.available - busy(owner)
            if not _satisfies(offer, job.data["models"]) or free < job.data["units"]:
                continue
            price = state.price(offer.usd_per_gpu_hour) * job.data["units"]
            rows.append(
                {
                    "bid": {
                        "id": {
                            "owner": "akash1standinowner",
                            "dseq": job.id,
                            "gseq": 1,
                            "oseq": 1,
                            "provider": owner,
                        },
                        "state": "open",
                        "price": {"denom": "usd", "amount": state.money(price)},
                        "created_at": _iso(state.clock.now()),
                    },
                    "escrow_account": {"state": "open"},
                }
            )
        return rows

    def deployment_json(job: SimJob) -> dict[str, Any]:
        now = time.monotonic()
        leased = job.data.get("provider") is not None
        phase = job.phase(now) if leased else ("stopped" if job.stopped_at else "open")
        closed = phase in ("done", "stopped")
        spent = Decimal(0)
        if leased:
            end = state.end_epoch(job) if closed else state.clock.now()
            hours = Decimal(str(max((end or 0.0) - state.start_epoch(job), 0.0))) / 3600
            spent = job.price_per_hour * hours
        deposit: Decimal = job.data["deposit"]
        leases = []
        if leased:
            leases.append(
                {
                    "id": {
                        "owner": "akash1standinowner",
                        "dseq": job.id,
                        "gseq": 1,
                        "oseq": 1,
                        "provider": job.data["provider"],
                    },
                    "state": "closed" if closed else "active",
                    "price": {"denom": "usd", "amount": state.money(job.price_per_hour)},
                    "created_at": _iso(state.start_epoch(job)),
                    "closed_on": _iso(state.end_epoch(job)) if closed else None,
                }
            )
        return {
            "deployment": {
                "dseq": job.id,
                "state": "closed" if closed else "active",
                "created_at": _iso(job.data["created_epoch"]),
            },
            "leases": leases,
            "escrow_account": {
                "state": "closed" if closed else "open",
                "balance": {"denom": "usd", "amount": state.money(deposit - spent)},
                "transferred": {"denom": "usd", "amount": state.money(spent)},
            },
            "sdl": job.data["sdl"],
        }

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        inner = body.get("data", body)
        sdl = inner.get("sdl") if isinstance(inner, dict) else None
        if not isinstance(sdl, str):
            return fail(state, 400, "data.sdl: an SDL YAML string is required")
        try:
            models, units, env = parse_sdl(sdl)
            duration = parse_duration(env.get("HYBRIDGPU_ESTIMATED_DURATION", "10m"))
        except ValueError as exc:
            return fail(state, 400, str(exc))
        try:
            deposit = Decimal(str(inner.get("deposit", 5)))
        except ArithmeticError:
            return fail(state, 400, "data.deposit: a number of USD is required")
        if not deposit.is_finite() or deposit <= 0:
            return fail(state, 400, "data.deposit: must be a positive number of USD")
        key = env.get("HYBRIDGPU_IDEMPOTENCY_KEY", "-")
        state.submissions[key] += 1
        dseq = str(1_000_000 + state.new_id())
        state.jobs[dseq] = SimJob(
            id=dseq,
            key=key,
            created=time.monotonic(),
            start_delay=config.start_delay("akash"),
            run_seconds=duration.total_seconds() / config.time_scale,
            price_per_hour=Decimal(0),
            data={
                "models": models,
                "units": units,
                "sdl": sdl,
                "deposit": deposit,
                "created_epoch": state.clock.now(),
                "provider": None,
            },
        )
        state.created[dseq] += 1
        return web.json_response({"data": {"dseq": dseq, "manifest": sdl}}, status=201)

    async def bids(request: web.Request) -> web.Response:
        job = state.live_job(request.query.get("dseq", ""))
        if job is None:
            return fail(state, 404, "deployment not found")
        return web.json_response({"data": bids_for(job)})

    async def lease(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        wanted = body.get("leases")
        if isinstance(wanted, list) and wanted and isinstance(wanted[0], dict):
            dseq, provider = str(wanted[0].get("dseq", "")), wanted[0].get("provider")
        else:
            dseq, provider = str(body.get("dseq", "")), None
            bid_id = body.get("bidId")
            if isinstance(bid_id, str):
                provider = bid_id.rsplit("/", 1)[-1]
        job = state.live_job(dseq)
        if job is None:
            return fail(state, 404, f"deployment {dseq} not found")
        if job.data.get("provider") is not None:
            return fail(state, 409, "lease already exists")
        chosen = [b for b in bids_for(job) if b["bid"]["id"]["provider"] == provider]
        if not chosen:
            return fail(state, 400, "no open bid from that provider")
        amount = Decimal(chosen[0]["bid"]["price"]["amount"])
        job.price_per_hour = amount * state.faults.silent_price_factor
        job.data["provider"] = provider
        # The run starts at the lease: shift creation so the pending phase ends now.
        job.created = time.monotonic() - job.start_delay
        return web.json_response({"data": deployment_json(job)}, status=201)

    async def show(request: web.Request) -> web.Response:
        job = state.live_job(request.match_info["dseq"])
        if job is None:
            return fail(state, 404, "deployment not found")
        return web.json_response({"data": deployment_json(job)})

    async def listing(request: web.Request) -> web.Response:
        skip = int(request.query.get("skip", 0))
        limit = min(int(request.query.get("limit", 10)), 100)
        rows = [deployment_json(j) for jid in list(state.jobs) if (j := state.live_job(jid))]
        return web.json_response(
            {
                "data": {
                    "deployments": rows[skip : skip + limit],
                    "pagination": {"total": len(rows), "skip": skip, "limit": limit},
                }
            }
        )

    async def close(request: web.Request) -> web.Response:
        dseq = request.match_info["dseq"]
        job = state.jobs.get(dseq)
        if job is None:
            return fail(state, 404, "deployment not found")
        if job.stopped_at is None and job.phase(time.monotonic()) != "done":
            job.stopped_at = time.monotonic()
        return web.json_response(
            {
                "data": {
                    "dseq": dseq,
                    "status": "closed",
                    "refundedAmount": "0",
                    "closedAt": _iso(state.clock.now()),
                }
            }
        )

    app = web.Application(middlewares=[state.middleware(public=("/v1/providers",))])
    app.add_routes(state.control_routes())
    app.add_routes(
        [
            web.get("/v1/providers", providers),
            web.post("/v1/deployments", create),
            web.get("/v1/deployments", listing),
            web.get("/v1/deployments/{dseq}", show),
            web.delete("/v1/deployments/{dseq}", close),
            web.get("/v1/bids", bids),
            web.post("/v1/leases", lease),
        ]
    )
    return app, state
