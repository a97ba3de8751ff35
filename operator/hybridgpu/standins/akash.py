"""Stand-in Akash Console API (managed wallet), shaped by the Console's generated OpenAPI file.

Every body here follows akash-network/console ``apps/api/swagger/openapi.json`` (vendored in
``tests/contract/specs/akash-console.openapi.json``; the contract tests validate each
response against it) and the services behind the routes:

* ``POST /v1/deployments`` ``{"data": {"sdl", "deposit"}}`` → 201 ``{"data": {"dseq",
  "manifest", "signTx"}}``. The SDL's pricing denom is rewritten to the grant denom
  (``akashDenom``, default ``uact`` as on mainnet) as ``SdlService.generateManifest`` does;
  ``dseq`` is the creation time in ms; ``manifest`` and the on-chain ``deployment.hash`` are
  chain-sdk's manifest JSON and version (:mod:`hybridgpu.networks.akash_manifest`).
* ``GET /v1/bids?dseq=`` → ``{"data": [{"bid": {id, state, price {denom, amount},
  created_at, resources_offer}, "escrow_account"}]}``: prices are micro-denom **per block**,
  and a provider bids only at or under the SDL's pricing amount (the order's max price).
* ``POST /v1/leases`` ``{"manifest", "leases": [{dseq, gseq, oseq, provider}]}``: the
  manifest must be the one the create call returned (a provider refuses another version).
* ``GET /v1/deployments[/{dseq}]`` and ``DELETE /v1/deployments/{dseq}`` (``{"data":
  {"success": true}}``, idempotent). The list carries no SDL; ``pagination.hasMore``.
* Public: ``GET /v1/gpu-prices`` (USD per GPU-hour, numbers), ``GET /v1/blocks?limit=``,
  ``GET /v1/market-data/akt``.

Heights: ``created_at`` / ``closed_on`` (``"0"`` while open) / ``settled_at`` are block
heights on the simulated clock, one block per 6 simulated seconds. As on Akash, a leased
deployment runs until it is closed: an exited container would be restarted, nothing ends by
itself, except when the escrow (the deposit, in micro-denom) runs out: the lease then closes
as ``insufficient_funds``. Errors: ``{"error": "...", "message": "..."}``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import yaml
from aiohttp import web

from hybridgpu.networks.akash_manifest import manifest_of
from hybridgpu.networks.gpu_names import names_for
from hybridgpu.standins.config import OfferConfig, StandinConfig
from hybridgpu.standins.state import NetworkState, SimJob, fail, read_json
from hybridgpu.units import parse_quantity

_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
}
OWNER = "akash1standinowner0000000000000000000000000"
BLOCK_SECONDS = 6
BLOCKS_PER_HOUR = 600
GENESIS_HEIGHT = 20_000_000
AKT_USD = Decimal("2.5")
"""The stand-in's AKT price (``/v1/market-data/akt``), used when ``akashDenom`` is uakt."""
_AMOUNT = Decimal("0.000000000000000001")


def error_body(status: int, message: str) -> dict[str, Any]:
    """Akash Console's error shape."""
    return {"error": _ERRORS.get(status, "InternalServerError"), "message": message}


def _amount(value: Decimal) -> str:
    """A chain DecCoin amount: 18 decimal places."""
    return str(value.quantize(_AMOUNT, rounding=ROUND_DOWN))


def parse_sdl(text: str) -> tuple[dict[str, Any], list[dict[str, Any]], int, dict[str, str]]:
    """The SDL document, its GPU model requirements, GPU units and service env.

    ValueError names the field."""
    try:
        sdl = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"Invalid SDL: not YAML: {exc}") from None
    if not isinstance(sdl, dict) or str(sdl.get("version")) not in ("2.0", "2.1"):
        raise ValueError("Invalid SDL: version must be 2.0 or 2.1")
    profiles = (sdl.get("profiles") or {}).get("compute") or {}
    if not profiles:
        raise ValueError("Invalid SDL: profiles.compute missing")
    resources = next(iter(profiles.values())).get("resources") or {}
    gpu = resources.get("gpu") or {}
    units = int(gpu.get("units", 0))
    if units < 1:
        raise ValueError("Invalid SDL: at least 1 GPU required")
    nvidia = ((gpu.get("attributes") or {}).get("vendor") or {}).get("nvidia")
    models = [m for m in nvidia or [] if isinstance(m, dict)]
    env: dict[str, str] = {}
    for service in (sdl.get("services") or {}).values():
        for item in service.get("env") or []:
            name, _, value = str(item).partition("=")
            env[name] = value
    return sdl, models, units, env


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


def _ceiling(sdl: dict[str, Any]) -> Decimal:
    """The order's max price per block: the first placement pricing amount."""
    for placement in ((sdl.get("profiles") or {}).get("placement") or {}).values():
        for price in (placement.get("pricing") or {}).values():
            return Decimal(str(price.get("amount", 0)))
    raise ValueError("Invalid SDL: profiles.placement.*.pricing missing")


def build_app(config: StandinConfig) -> tuple[web.Application, NetworkState]:
    """The Akash Console stand-in."""
    state = NetworkState("akash", config, error_body)
    offers = config.offers_for("akash")
    owners = {f"akash1standin{i:04d}": offer for i, offer in enumerate(offers)}
    denom = config.akash_denom

    def height(mono: float | None = None) -> int:
        now = state.clock.now() if mono is None else state.clock.epoch(mono)
        return GENESIS_HEIGHT + int((now - state.clock.start_wall) // BLOCK_SECONDS)

    def per_block(usd_per_hour: Decimal) -> Decimal:
        """Micro-denom per block of a USD/hour price, in the grant denom."""
        units = usd_per_hour * 10**6 / BLOCKS_PER_HOUR
        return units if denom == "uact" else units / AKT_USD

    def leased(job: SimJob) -> bool:
        return job.data.get("provider") is not None

    def lease_end(job: SimJob) -> tuple[int | None, str]:
        """The height the lease closed at and why (None, "active" while open)."""
        if not leased(job):
            return None, "active"
        start = job.data["lease_height"]
        stop = height(job.stopped_at) if job.stopped_at is not None else None
        rate: Decimal = job.data["charged"]
        funds: Decimal = job.data["funds"]
        broke = start + int(funds / rate) if rate > 0 else None
        if broke is not None and broke <= (stop if stop is not None else height()):
            return broke, "insufficient_funds"
        return (stop, "closed") if stop is not None else (None, "active")

    def busy(owner: str) -> int:
        return sum(
            j.data["units"]
            for j in state.jobs.values()
            if j.data.get("provider") == owner and lease_end(j)[0] is None
        )

    def coin(amount: Decimal) -> dict[str, str]:
        return {"denom": denom, "amount": _amount(amount)}

    def escrow(job: SimJob, spent: Decimal, open_: bool) -> dict[str, Any]:
        funds: Decimal = job.data["funds"]
        return {
            "id": {"scope": "deployment", "xid": f"{OWNER}/{job.id}"},
            "state": {
                "owner": OWNER,
                "state": "open" if open_ else "closed",
                "transferred": [coin(spent)],
                "settled_at": str(height()),
                "funds": [coin(max(funds - spent, Decimal(0)))],
                "deposits": [
                    {
                        "owner": OWNER,
                        "height": str(job.data["created_height"]),
                        "source": "grant",
                        "balance": coin(funds),
                    }
                ],
            },
        }

    def resources_offer(job: SimJob, offer: OfferConfig) -> list[dict[str, Any]]:
        names = names_for(offer.gpu_product)
        key = f"vendor/nvidia/model/{names.akash_model}/ram/{offer.memory_gi_b}Gi"
        if names.akash_interface:
            key += f"/interface/{names.akash_interface}"
        return [
            {
                "resources": {
                    "cpu": {"units": {"val": "4000"}, "attributes": []},
                    "gpu": {
                        "units": {"val": str(job.data["units"])},
                        "attributes": [{"key": key, "value": "true"}],
                    },
                    "memory": {"quantity": {"val": str(16 * 2**30)}, "attributes": []},
                    "storage": [
                        {"name": "default", "quantity": {"val": str(40 * 2**30)}, "attributes": []}
                    ],
                    "endpoints": [],
                },
                "count": 1,
            }
        ]

    def bids_for(job: SimJob) -> list[dict[str, Any]]:
        if time.monotonic() < job.created + job.start_delay or leased(job):
            return []
        rows = []
        for bseq, (owner, offer) in enumerate(owners.items()):
            free = offer.available - busy(owner)
            if not _satisfies(offer, job.data["models"]) or free < job.data["units"]:
                continue
            price = per_block(state.price(offer.usd_per_gpu_hour) * job.data["units"])
            if price > job.data["ceiling"]:
                continue  # the chain refuses bids above the order's max price
            rows.append(
                {
                    "bid": {
                        "id": {
                            "owner": OWNER,
                            "dseq": job.id,
                            "gseq": 1,
                            "oseq": 1,
                            "provider": owner,
                            "bseq": bseq,
                        },
                        "state": "open",
                        "price": coin(price),
                        "created_at": str(job.data["created_height"] + 1),
                        "resources_offer": resources_offer(job, offer),
                    },
                    "escrow_account": escrow(job, Decimal(0), True),
                }
            )
        return rows

    def deployment_json(job: SimJob, *, detail: bool) -> dict[str, Any]:
        closed_at, lease_state = lease_end(job)
        closed = job.stopped_at is not None or lease_state == "insufficient_funds"
        leases = []
        spent = Decimal(0)
        if leased(job):
            end = closed_at if closed_at is not None else height()
            spent = job.data["charged"] * max(end - job.data["lease_height"], 0)
            lease: dict[str, Any] = {
                "id": {
                    "owner": OWNER,
                    "dseq": job.id,
                    "gseq": 1,
                    "oseq": 1,
                    "provider": job.data["provider"],
                    "bseq": job.data["bseq"],
                },
                "state": lease_state,
                "price": coin(job.data["charged"]),
                "created_at": str(job.data["lease_height"]),
                "closed_on": str(closed_at or 0),
            }
            if detail:
                lease["status"] = (
                    None
                    if closed
                    else {
                        "forwarded_ports": {},
                        "ips": {},
                        "services": {
                            "job": {
                                "name": "job",
                                "available": 1,
                                "total": 1,
                                "uris": [],
                                "observed_generation": 1,
                                "replicas": 1,
                                "updated_replicas": 1,
                                "ready_replicas": 1,
                                "available_replicas": 1,
                            }
                        },
                    }
                )
            leases.append(lease)
        return {
            "deployment": {
                "id": {"owner": OWNER, "dseq": job.id},
                "state": "closed" if closed else "active",
                "hash": job.data["hash"],
                "created_at": str(job.data["created_height"]),
            },
            "leases": leases,
            "escrow_account": escrow(job, spent, not closed),
        }

    async def gpu_prices(_: web.Request) -> web.Response:
        models: dict[tuple[str, str, str], dict[str, Any]] = {}
        for owner, offer in owners.items():
            names = names_for(offer.gpu_product)
            ident = (names.akash_model, f"{offer.memory_gi_b}Gi", names.akash_interface)
            row = models.setdefault(ident, {"total": 0, "free": 0, "prices": [], "providers": 0})
            free = max(offer.available - busy(owner), 0)
            row["total"] += offer.available
            row["free"] += free
            row["providers"] += 1
            row["prices"].append(float(state.price(offer.usd_per_gpu_hour)))
        out = []
        for (model, ram, iface), row in sorted(models.items()):
            prices = sorted(row["prices"])
            mid = len(prices) // 2
            med = prices[mid] if len(prices) % 2 else (prices[mid - 1] + prices[mid]) / 2
            avg = round(sum(prices) / len(prices), 2)
            out.append(
                {
                    "vendor": "nvidia",
                    "model": model,
                    "ram": ram,
                    "interface": iface,
                    "availability": {"total": row["total"], "available": row["free"]},
                    "providerAvailability": {
                        "total": row["providers"],
                        "available": row["providers"] if row["free"] else 0,
                    },
                    "price": {
                        "currency": "USD",
                        "min": prices[0],
                        "max": prices[-1],
                        "avg": avg,
                        "weightedAverage": avg,
                        "med": med,
                    },
                }
            )
        total = sum(r["total"] for r in models.values())
        free = sum(r["free"] for r in models.values())
        return web.json_response(
            {"availability": {"total": total, "available": free}, "models": out}
        )

    async def blocks(request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", 20)), 1), 100)
        except ValueError:
            return fail(state, 400, "limit: a number from 1 to 100")
        top = height()
        now = state.clock.now()
        rows = [
            {
                "height": top - i,
                "proposer": {
                    "address": "akashvalcons1standin",
                    "operatorAddress": "akashvaloper1standin",
                    "moniker": "stand-in",
                    "avatarUrl": None,
                },
                "transactionCount": 0,
                "totalTransactionCount": 0,
                "datetime": datetime.fromtimestamp(now - i * BLOCK_SECONDS, UTC).isoformat(),
            }
            for i in range(limit)
        ]
        return web.json_response(rows)

    async def market_data(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "price": float(AKT_USD),
                "volume": 0,
                "marketCap": 0,
                "marketCapRank": 0,
                "priceChange24h": 0,
                "priceChangePercentage24": 0,
            }
        )

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        inner = body.get("data")
        sdl_text = inner.get("sdl") if isinstance(inner, dict) else None
        if not isinstance(sdl_text, str):
            return fail(state, 400, "data.sdl: an SDL YAML string is required")
        deposit_raw = inner.get("deposit") if isinstance(inner, dict) else None
        if isinstance(deposit_raw, bool) or not isinstance(deposit_raw, int | float):
            return fail(state, 400, "deposit is required (a number of dollars)")
        deposit = Decimal(str(deposit_raw))
        if not deposit.is_finite() or deposit <= 0:
            return fail(state, 400, "data.deposit: must be a positive number of dollars")
        try:
            sdl, models, units, env = parse_sdl(sdl_text)
            for placement in ((sdl.get("profiles") or {}).get("placement") or {}).values():
                for price in (placement.get("pricing") or {}).values():
                    price["denom"] = denom  # SdlService.generateManifest
            ceiling = _ceiling(sdl)
            manifest, version = manifest_of(sdl_text)
        except (ValueError, KeyError, TypeError) as exc:
            return fail(state, 400, str(exc))
        key = env.get("HYBRIDGPU_IDEMPOTENCY_KEY", "-")
        state.submissions[key] += 1
        dseq = str(int(state.clock.now() * 1000) + state.new_id())
        state.jobs[dseq] = SimJob(
            id=dseq,
            key=key,
            created=time.monotonic(),
            start_delay=config.start_delay("akash"),
            run_seconds=float("inf"),
            price_per_hour=Decimal(0),
            data={
                "models": models,
                "units": units,
                "ceiling": ceiling,
                "manifest": manifest,
                "hash": version,
                # The deposit in dollars, as micro-denom in escrow.
                "funds": deposit * 10**6 / (1 if denom == "uact" else AKT_USD),
                "created_height": height(),
                "provider": None,
            },
        )
        state.created[dseq] += 1
        sign = {"code": 0, "transactionHash": f"{state.new_id():064X}", "rawLog": "[]"}
        return web.json_response(
            {"data": {"dseq": dseq, "manifest": manifest, "signTx": sign}}, status=201
        )

    async def bids(request: web.Request) -> web.Response:
        dseq = request.query.get("dseq", "")
        if not dseq.isdigit():
            return fail(state, 400, "dseq: a deployment sequence number is required")
        job = state.live_job(dseq)
        if job is None:
            return fail(state, 404, "deployment not found")
        return web.json_response({"data": bids_for(job)})

    async def lease(request: web.Request) -> web.Response:
        body = await read_json(request, state)
        manifest, wanted = body.get("manifest"), body.get("leases")
        if not isinstance(manifest, str) or not isinstance(wanted, list) or not wanted:
            return fail(state, 400, "manifest (string) and leases (non-empty list) are required")
        first = wanted[0]
        if not isinstance(first, dict) or not {"dseq", "gseq", "oseq", "provider"} <= set(first):
            return fail(state, 400, "leases[0]: dseq, gseq, oseq and provider are required")
        if not isinstance(first["gseq"], int) or not isinstance(first["oseq"], int):
            return fail(state, 400, "leases[0].gseq, oseq: numbers")
        job = state.live_job(str(first["dseq"]))
        if job is None:
            return fail(state, 404, f"deployment {first['dseq']} not found")
        if leased(job):
            return fail(state, 409, "lease already exists")
        if job.stopped_at is not None:
            return fail(state, 400, "deployment is closed")
        if manifest != job.data["manifest"]:
            return fail(state, 400, "manifest version does not match the deployment's hash")
        chosen = [b for b in bids_for(job) if b["bid"]["id"]["provider"] == first["provider"]]
        if not chosen:
            return fail(state, 400, "no open bid from that provider")
        bid = chosen[0]["bid"]
        amount = Decimal(bid["price"]["amount"])
        job.data["charged"] = amount * state.faults.silent_price_factor
        job.data["bseq"] = bid["id"]["bseq"]
        job.data["provider"] = first["provider"]
        job.data["lease_height"] = height()
        job.price_per_hour = job.data["charged"] * BLOCKS_PER_HOUR / 10**6
        # The run starts at the lease: shift creation so the pending phase ends now.
        job.created = time.monotonic() - job.start_delay
        return web.json_response({"data": deployment_json(job, detail=True)})

    async def show(request: web.Request) -> web.Response:
        dseq = request.match_info["dseq"]
        if not dseq.isdigit():
            return fail(state, 400, "dseq: digits")
        job = state.live_job(dseq)
        if job is None:
            return fail(state, 404, "deployment not found")
        return web.json_response({"data": deployment_json(job, detail=True)})

    async def listing(request: web.Request) -> web.Response:
        try:
            skip = max(int(request.query.get("skip", 0)), 0)
            limit = max(int(request.query.get("limit", 1000)), 1)
        except ValueError:
            return fail(state, 400, "skip, limit: numbers")
        jobs = [j for jid in list(state.jobs) if (j := state.live_job(jid))]
        rows = [deployment_json(j, detail=False) for j in jobs[skip : skip + limit]]
        return web.json_response(
            {
                "data": {
                    "deployments": rows,
                    "pagination": {
                        "total": len(jobs),
                        "skip": skip,
                        "limit": limit,
                        "hasMore": skip + limit < len(jobs),
                    },
                }
            }
        )

    async def close(request: web.Request) -> web.Response:
        dseq = request.match_info["dseq"]
        job = state.jobs.get(dseq)
        if job is None:
            return fail(state, 404, "deployment not found")
        if job.stopped_at is None:  # closing a closed deployment is a no-op
            job.stopped_at = time.monotonic()
        return web.json_response({"data": {"success": True}})

    public = ("/v1/gpu-prices", "/v1/blocks", "/v1/market-data/akt")
    app = web.Application(middlewares=[state.middleware(public=public)])
    app.add_routes(state.control_routes())
    app.add_routes(
        [
            web.get("/v1/gpu-prices", gpu_prices),
            web.get("/v1/blocks", blocks),
            web.get("/v1/market-data/akt", market_data),
            web.post("/v1/deployments", create),
            web.get("/v1/deployments", listing),
            web.get("/v1/deployments/{dseq}", show),
            web.delete("/v1/deployments/{dseq}", close),
            web.get("/v1/bids", bids),
            web.post("/v1/leases", lease),
        ]
    )
    return app, state
