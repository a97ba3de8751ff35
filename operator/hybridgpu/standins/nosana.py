"""Stand-in Nosana API, shaped by the ``@nosana/api`` package's types (2.1.8).

Every body follows ``dist/client/schema.d.ts`` of the npm package (generated upstream from
Nosana's production swagger); the contract tests validate the answers against schemas derived
from it (``tests/contract/specs/nosana-*.json``):

* ``GET /api/markets/`` (public): ``address``, ``slug``, ``name``, ``sft``, ``type``,
  ``usd_reward_per_hour`` (a number), NOS rates, ``gpu_types``, ``lowest_vram``, ``nodes``
  (the idle hosts of the market's node queue), ``client``, ...; no ``available_nodes``.
* Deployment manager: ``GET /api/deployments?name=``, ``POST /api/deployments/create``
  (``DRAFT``), ``GET /api/deployments/{id}``, ``POST .../start`` (``STARTING``: lists one job
  per replica), ``GET .../jobs``, ``POST .../stop`` (``STOPPING``; idempotent).
* Jobs: ``GET /api/jobs/{address}`` (public) with numeric ``state`` (0 QUEUED, 1 RUNNING,
  2 COMPLETED, 3 STOPPED), epoch-second ``timeStart``/``timeEnd`` (``timeEnd`` 0 until the
  job ends), ``usdRewardPerHour``, ``jobResult`` with ``opStates[].exitCode`` once completed,
  ``ipfsResult``. ``POST /api/jobs/{address}/stop`` as typed.
* ``GET /api/credits/balance``.

A job runs for the definition's ``HYBRIDGPU_ESTIMATED_DURATION`` env, capped by the
deployment's timeout (minutes), and exits 0; the fault ``failExitCode`` makes jobs started
while it is set exit with that code instead. Errors: ``{"error": "..."}``; 401 is the JSON
string ``"Unauthorized"`` as typed.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hybridgpu.networks.gpu_names import names_for
from hybridgpu.standins.config import StandinConfig
from hybridgpu.standins.state import NetworkState, SimJob, fail, read_json
from hybridgpu.units import parse_duration

_STATE_NAME = {"pending": "QUEUED", "running": "RUNNING", "done": "COMPLETED", "stopped": "STOPPED"}
_STATE_NUMBER = {"pending": 0, "running": 1, "done": 2, "stopped": 3}
OWNER = "Own3rStandin1111111111111111111111111111111"


def error_body(status: int, message: str) -> Any:
    """Nosana's error shape: ``{"error": ...}``, or the string ``"Unauthorized"`` for 401."""
    return "Unauthorized" if status == 401 else {"error": message}


def _address(prefix: str, seed: str) -> str:
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:40]


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Nosana stand-in."""
    state = NetworkState("nosana", config, error_body)
    markets = {
        _address("mkt", f"{o.gpu_product}/{o.market_type}/{i}"): o
        for i, o in enumerate(config.offers_for("nosana"))
    }
    deployments: dict[str, dict[str, Any]] = {}
    addresses: dict[str, str] = {}
    """Job address -> deployment id. A deployment's SimJob is keyed by the deployment id, the
    id hybridgpu holds, so ``/_stats`` speaks of what the operator stores."""

    def iso(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")

    def busy(address: str) -> int:
        now = time.monotonic()
        return sum(
            1
            for j in state.jobs.values()
            if j.data["market"] == address and j.phase(now) in ("pending", "running")
        )

    def market_json(address: str) -> dict[str, Any]:
        offer = markets[address]
        gpu = names_for(offer.gpu_product).nosana
        price = state.price(offer.usd_per_gpu_hour)
        idle = max(offer.available - busy(address), 0)
        return {
            "address": address,
            "slug": f"{gpu.lower().replace(' ', '-')}-{offer.market_type.lower()}",
            "name": f"{gpu} {offer.market_type.title()}",
            "sft": _address("sft", address),
            "type": offer.market_type,
            "usd_reward_per_hour": float(price),
            "nos_reward_per_second": 0.0001,
            "nos_job_price_per_second": 0.0001,
            "network_fee_percentage": 10,
            "premium_community_relation": None,
            "gpu_types": [gpu],
            "required_images": [],
            "required_remote_resources": [],
            "nodes": [_address("node", f"{address}/{i}") for i in range(idle)],
            "client": False,
            "lowest_vram": offer.memory_gi_b,
        }

    async def list_markets(_: web.Request) -> web.Response:
        return web.json_response([market_json(a) for a in markets])

    def job_of(deployment: dict[str, Any]) -> SimJob | None:
        return state.live_job(deployment["id"]) if deployment.get("job") else None

    def by_address(address: str) -> SimJob | None:
        deployment_id = addresses.get(address)
        return state.live_job(deployment_id) if deployment_id else None

    def deployment_json(deployment: dict[str, Any]) -> dict[str, Any]:
        job = job_of(deployment)
        phase = job.phase(time.monotonic()) if job else None
        if deployment.get("stopped"):
            status = "STOPPED"
        elif job is None:
            status = "STARTING" if deployment.get("job") else "DRAFT"
        elif phase in ("done", "stopped"):
            status = "STOPPED"
        else:
            status = "RUNNING" if phase == "running" else "STARTING"
        return {
            "id": deployment["id"],
            "name": deployment["name"],
            "vault": _address("vault", deployment["id"]),
            "market": deployment["market"],
            "owner": OWNER,
            "status": status,
            "replicas": deployment["replicas"],
            "timeout": deployment["timeout"],
            "endpoints": [],
            "confidential": False,
            "active_revision": 1,
            "active_jobs": 1 if phase in ("pending", "running") else 0,
            "created_at": iso(deployment["created"]),
            "updated_at": iso(state.clock.now()),
            "strategy": deployment["strategy"],
        }

    def owned(request: web.Request) -> dict[str, Any] | None:
        deployment = deployments.get(request.match_info["deployment"])
        if deployment is not None and deployment["job"] and job_of(deployment) is None:
            del deployments[deployment["id"]]  # its job vanished (fault): all of it is gone
            return None
        return deployment

    async def list_deployments(request: web.Request) -> web.Response:
        name = request.query.get("name")
        rows = [deployment_json(d) for d in deployments.values() if name in (None, d["name"])]
        pagination = {"cursor_next": None, "cursor_prev": None, "total_items": len(rows)}
        return web.json_response({"deployments": rows, "pagination": pagination})

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        name, market = body.get("name"), body.get("market")
        replicas, timeout = body.get("replicas"), body.get("timeout")
        definition = body.get("job_definition")
        if not isinstance(name, str) or not name:
            return fail(state, 400, "name: required")
        if market not in markets:
            return fail(state, 400, "market: no such market")
        if body.get("strategy") not in ("SIMPLE", "SIMPLE-EXTEND"):
            return fail(state, 400, "strategy: the stand-in runs SIMPLE and SIMPLE-EXTEND")
        if not isinstance(replicas, int) or replicas != 1:
            return fail(state, 400, "replicas: the stand-in runs one replica")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            return fail(state, 400, "timeout: at least 1 minute")
        ops = definition.get("ops") if isinstance(definition, dict) else None
        if (
            not isinstance(definition, dict)
            or definition.get("version") != "0.1"
            or definition.get("type") != "container"
            or not isinstance(ops, list)
            or not ops
            or not all(isinstance(op, dict) and (op.get("args") or {}).get("image") for op in ops)
        ):
            return fail(state, 400, "job_definition: version 0.1, type container, ops with images")
        env: dict[str, Any] = {}
        for op in ops:
            env.update((op.get("args") or {}).get("env") or {})
        key = str(env.get("HYBRIDGPU_IDEMPOTENCY_KEY", "-"))
        try:
            duration = parse_duration(str(env.get("HYBRIDGPU_ESTIMATED_DURATION", "10m")))
        except ValueError:
            return fail(state, 400, "HYBRIDGPU_ESTIMATED_DURATION is not a duration")
        state.submissions[key] += 1
        deployment_id = _address("dep", f"{name}/{state.new_id()}")
        deployments[deployment_id] = {
            "id": deployment_id,
            "name": name,
            "market": market,
            "replicas": replicas,
            "timeout": timeout,
            "strategy": body["strategy"],
            "key": key,
            "seconds": min(duration.total_seconds(), timeout * 60.0),
            "created": state.clock.now(),
            "job": None,
            "stopped": False,
        }
        return web.json_response(deployment_json(deployments[deployment_id]))

    async def show(request: web.Request) -> web.Response:
        deployment = owned(request)
        if deployment is None:
            return fail(state, 404, "Deployment not found")
        return web.json_response(deployment_json(deployment))

    async def start(request: web.Request) -> web.Response:
        deployment = owned(request)
        if deployment is None:
            return fail(state, 404, "Deployment not found")
        if deployment["job"] is None and not deployment["stopped"]:
            address = _address("job", f"{deployment['id']}/{state.new_id()}")
            offer = markets[deployment["market"]]
            state.jobs[deployment["id"]] = SimJob(
                id=deployment["id"],
                key=deployment["key"],
                created=time.monotonic(),
                start_delay=config.start_delay("nosana"),
                run_seconds=deployment["seconds"] / config.time_scale,
                price_per_hour=state.price(offer.usd_per_gpu_hour, charged=True),
                data={
                    "market": deployment["market"],
                    "deployment": deployment["id"],
                    "address": address,
                    "timeout": deployment["timeout"] * 60,
                    "listed": state.clock.now(),
                    "exit": state.faults.fail_exit_code,
                },
            )
            state.created[deployment["id"]] += 1
            addresses[address] = deployment["id"]
            deployment["job"] = address
        return web.json_response({"status": "STARTING", "updated_at": iso(state.clock.now())})

    async def stop(request: web.Request) -> web.Response:
        deployment = owned(request)
        if deployment is None:
            return fail(state, 404, "Deployment not found")
        deployment["stopped"] = True
        job = state.jobs.get(deployment["id"])
        if job is not None and job.phase(time.monotonic()) in ("pending", "running"):
            job.stopped_at = time.monotonic()
        return web.json_response({"status": "STOPPING", "updated_at": iso(state.clock.now())})

    async def deployment_jobs(request: web.Request) -> web.Response:
        deployment = owned(request)
        if deployment is None:
            return fail(state, 404, "Deployment not found")
        rows = []
        job = job_of(deployment)
        if job is not None:
            phase = job.phase(time.monotonic())
            rows.append(
                {
                    "tx": _address("tx", job.data["address"]),
                    "job": job.data["address"],
                    "deployment": deployment["id"],
                    "market": deployment["market"],
                    "revision": 1,
                    "state": _STATE_NAME[phase],
                    "time_start": int(state.start_epoch(job)) if phase != "pending" else 0,
                    "created_at": iso(job.data["listed"]),
                    "updated_at": iso(state.clock.now()),
                }
            )
        pagination = {"cursor_next": None, "cursor_prev": None, "total_items": len(rows)}
        return web.json_response({"jobs": rows, "pagination": pagination})

    def job_json(job: SimJob) -> dict[str, Any]:
        phase = job.phase(time.monotonic())
        end = state.end_epoch(job)
        result: dict[str, Any] | None = None
        if phase in ("done", "stopped"):
            code = job.data["exit"] if phase == "done" else None
            result = {
                "status": "success" if code == 0 else "failed",
                "startTime": int(state.start_epoch(job) * 1000),
                "endTime": int(end * 1000) if end is not None else None,
                "opStates": [
                    {
                        "providerId": None,
                        "operationId": "hybridgpu",
                        "group": None,
                        "status": "success" if code == 0 else "failed",
                        "startTime": int(state.start_epoch(job) * 1000),
                        "endTime": int(end * 1000) if end is not None else None,
                        "exitCode": code,
                        "logs": [],
                        "diagnostics": {
                            "reason": {
                                "hostShutDown": False,
                                "jobStopped": phase == "stopped",
                                "jobExpired": False,
                            }
                        },
                    }
                ],
            }
        return {
            "ipfsJob": "Qm" + hashlib.sha256(job.data["address"].encode()).hexdigest()[:44],
            "ipfsResult": _address("Qmres", job.data["address"]) if phase == "done" else None,
            "market": job.data["market"],
            "node": _address("node", job.data["address"]) if phase != "pending" else "",
            "payer": OWNER,
            "price": 0.0001,
            "project": OWNER,
            "state": _STATE_NUMBER[phase],
            "type": None,
            "jobDefinition": None,
            "jobResult": result,
            "jobStatus": None if result is None else result["status"],
            # Epoch seconds; timeEnd stays 0 until the job ends, timeStart until it starts.
            "timeEnd": int(end) if end is not None else 0,
            "timeStart": int(state.start_epoch(job)) if phase != "pending" else 0,
            "benchmarkProcessedAt": None,
            "timeout": job.data["timeout"],
            "usdRewardPerHour": float(job.price_per_hour),
            "listedAt": int(job.data["listed"]),
        }

    async def show_job(request: web.Request) -> web.Response:
        job = by_address(request.match_info["address"])
        if job is None:
            return fail(state, 404, "Job not found")
        return web.json_response(job_json(job))

    async def stop_job(request: web.Request) -> web.Response:
        address = request.match_info["address"]
        job = by_address(address)
        if job is None:
            return fail(state, 404, "Job not found")
        delisted = job.phase(time.monotonic()) == "pending"
        if job.phase(time.monotonic()) in ("pending", "running"):
            job.stopped_at = time.monotonic()
        return web.json_response(
            {"tx": _address("tx", address + "stop"), "job": address, "delisted": delisted}
        )

    async def balance(_: web.Request) -> web.Response:
        return web.json_response(
            {"assignedCredits": 100, "reservedCredits": 0, "settledCredits": 0}
        )

    public = ("/api/markets/",)
    app = web.Application(middlewares=[state.middleware(public=public)])
    app.add_routes(state.control_routes())
    app.add_routes(
        [
            web.get("/api/markets/", list_markets),
            web.get("/api/deployments", list_deployments),
            web.post("/api/deployments/create", create),
            web.get("/api/deployments/{deployment}", show),
            web.post("/api/deployments/{deployment}/start", start),
            web.post("/api/deployments/{deployment}/stop", stop),
            web.get("/api/deployments/{deployment}/jobs", deployment_jobs),
            web.get("/api/jobs/{address}", show_job),
            web.post("/api/jobs/{address}/stop", stop_job),
            web.get("/api/credits/balance", balance),
        ]
    )
    return app, state
