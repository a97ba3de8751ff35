"""Stand-in Nosana API (credits flavour).

``GET /api/markets/`` (no credential) lists one market per configured nosana offer;
``POST /api/ipfs/pin`` pins a job definition and answers its ``ipfsHash``;
``POST /api/jobs/create-with-credits`` ``{ipfsHash, market, timeout}`` → ``{jobAddress,
transactionSignature}``; ``GET /api/jobs[/{address}]`` shows ``state`` QUEUED → RUNNING →
COMPLETED on the simulated clock (run length: the definition's
``HYBRIDGPU_ESTIMATED_DURATION`` env, capped by ``timeout`` seconds); ``POST
/api/jobs/stop-with-credits`` ``{jobAddress}`` → STOPPED. ``GET /api/credits/balance`` as
documented. Prices are decimal strings (the real API sends numbers).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from hybridgpu.networks.gpu_names import names_for
from hybridgpu.standins.config import StandinConfig
from hybridgpu.standins.state import NetworkState, SimJob, fail, read_json
from hybridgpu.units import parse_duration

_STATE = {"pending": "QUEUED", "running": "RUNNING", "done": "COMPLETED", "stopped": "STOPPED"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Nosana's error shape (``{"error": ...}``)."""
    return {"error": message, "statusCode": status}


def _address(prefix: str, seed: str) -> str:
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:40]


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Nosana stand-in."""
    state = NetworkState("nosana", config, error_body)
    markets = {
        _address("mkt", f"{o.gpu_product}/{o.market_type}/{i}"): o
        for i, o in enumerate(config.offers_for("nosana"))
    }
    pinned: dict[str, dict[str, Any]] = {}

    def busy(address: str) -> int:
        now = time.monotonic()
        return sum(
            1
            for j in state.jobs.values()
            if j.data["market"] == address and j.phase(now) in ("pending", "running")
        )

    async def list_markets(_: web.Request) -> web.Response:
        rows = []
        for address, offer in markets.items():
            gpu = names_for(offer.gpu_product).nosana
            price = state.price(offer.usd_per_gpu_hour)
            rows.append(
                {
                    "address": address,
                    "name": f"{gpu} {offer.market_type.title()}",
                    "slug": f"{gpu.lower().replace(' ', '-')}-{offer.market_type.lower()}",
                    "type": offer.market_type,
                    "usd_reward_per_hour": state.money(price),
                    "nos_job_price_per_second": state.money(price / 3600),
                    "network_fee_percentage": 10,
                    "gpu_types": [gpu],
                    "lowest_vram": offer.memory_gi_b,
                    "available_nodes": max(offer.available - busy(address), 0),
                }
            )
        return web.json_response(rows)

    async def pin(request: web.Request) -> web.Response:
        definition = await read_json(request, state)
        if definition.get("version") != "0.1" or not isinstance(definition.get("ops"), list):
            return fail(state, 400, "job definition: version '0.1' and an ops list are required")
        text = json.dumps(definition, sort_keys=True)
        ipfs_hash = "Qm" + hashlib.sha256(text.encode()).hexdigest()[:44]
        pinned[ipfs_hash] = definition
        return web.json_response({"ipfsHash": ipfs_hash})

    def job_json(job: SimJob) -> dict[str, Any]:
        now = time.monotonic()
        phase = job.phase(now)
        return {
            "address": job.id,
            "ipfsHash": job.data["ipfsHash"],
            "market": job.data["market"],
            "state": _STATE[phase],
            "timeStart": round(state.start_epoch(job), 3) if phase != "pending" else None,
            "timeEnd": round(end, 3) if (end := state.end_epoch(job)) is not None else None,
            "usd_reward_per_hour": state.money(job.price_per_hour),
            "ipfsResult": _address("Qmres", job.id) if phase == "done" else None,
        }

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        ipfs_hash, market, timeout = body.get("ipfsHash"), body.get("market"), body.get("timeout")
        if ipfs_hash not in pinned:
            return fail(state, 400, "ipfsHash: not a pinned job definition")
        if market not in markets:
            return fail(state, 400, "market: no such market")
        if not isinstance(timeout, int) or timeout < 1:
            return fail(state, 400, "timeout: a positive number of seconds is required")
        definition = pinned[ipfs_hash]
        key = str((definition.get("meta") or {}).get("hybridgpuKey", "-"))
        state.submissions[key] += 1
        env = (definition.get("global") or {}).get("env") or {}
        try:
            duration = parse_duration(str(env.get("HYBRIDGPU_ESTIMATED_DURATION", "10m")))
        except ValueError:
            return fail(state, 400, "HYBRIDGPU_ESTIMATED_DURATION is not a duration")
        seconds = min(duration.total_seconds(), float(timeout))
        address = _address("job", f"{ipfs_hash}/{state.new_id()}")
        state.jobs[address] = SimJob(
            id=address,
            key=key,
            created=time.monotonic(),
            start_delay=config.start_delay("nosana"),
            run_seconds=seconds / config.time_scale,
            price_per_hour=state.price(markets[market].usd_per_gpu_hour, charged=True),
            data={"ipfsHash": ipfs_hash, "market": market},
        )
        state.created[address] += 1
        return web.json_response(
            {"jobAddress": address, "transactionSignature": _address("tx", address)}
        )

    async def list_jobs(_: web.Request) -> web.Response:
        return web.json_response(
            [job_json(j) for jid in list(state.jobs) if (j := state.live_job(jid))]
        )

    async def show(request: web.Request) -> web.Response:
        job = state.live_job(request.match_info["address"])
        if job is None:
            return fail(state, 404, "job not found")
        return web.json_response(job_json(job))

    async def stop(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        job = state.jobs.get(str(body.get("jobAddress", "")))
        if job is None:
            return fail(state, 404, "job not found")
        if job.phase(time.monotonic()) in ("pending", "running"):
            job.stopped_at = time.monotonic()
        return web.json_response(
            {"jobAddress": job.id, "transactionSignature": _address("tx", job.id + "stop")}
        )

    async def balance(_: web.Request) -> web.Response:
        return web.json_response(
            {"assignedCredits": "100", "reservedCredits": "0", "settledCredits": "0"}
        )

    app = web.Application(middlewares=[state.middleware(public=("/api/markets/",))])
    app.add_routes(state.control_routes())
    app.add_routes(
        [
            web.get("/api/markets/", list_markets),
            web.post("/api/ipfs/pin", pin),
            web.post("/api/jobs/create-with-credits", create),
            web.post("/api/jobs/stop-with-credits", stop),
            web.get("/api/jobs", list_jobs),
            web.get("/api/jobs/{address}", show),
            web.get("/api/credits/balance", balance),
        ]
    )
    return app, state
