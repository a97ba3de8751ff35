"""What every stand-in network shares: API-key check, fault injection, statistics, the clock.

Control endpoints on every port (no credential needed, loopback only):

* ``POST /_faults`` sets the faults (a JSON object, keys below; unspecified keys reset),
  ``GET /_faults`` reads them.
* ``GET /_stats``: requests seen, submissions per idempotency key, creations per job id.
* ``POST /_reset``: forget jobs, faults and statistics.

Faults: ``errorRate`` (share of calls answered ``errorStatus``, default 503), ``failNext``
(the next N calls fail), ``rateLimitNext`` (the next N calls get 429, with ``Retry-After:
retryAfterSeconds`` unless that is null), ``latencyMs`` (added to every call),
``vanishRunning`` (a job seen running disappears: 404 from then on), ``priceFactor``
(multiplies every price, listed and charged), ``silentPriceFactor`` (multiplies only what
is charged: created instances, leases - the network quoting one price and charging another),
``failExitCode`` (Nosana jobs started meanwhile exit with it), ``malformedNext`` (the next N
calls answer 200 with a body that is not JSON) and ``replaceFields`` (in every JSON answer,
each key named here, at any depth, gets the given value; ``{"$raw": "1E+999999"}`` is written
as that literal JSON text, for numbers no JSON library would produce).

Time: jobs progress at ``timeScale`` simulated seconds per real second, and every timestamp a
stand-in returns (job start and end times, lease dates, the HTTP ``Date`` header) is read off
the network's :class:`SimClock`, so durations and charges are those of the simulated run: a
1-hour job at 0.29 USD/h bills 0.29 USD although it takes 1/timeScale hours of real time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import formatdate
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from hybridgpu.api.common import Money
from hybridgpu.standins.config import Network, StandinConfig
from hybridgpu.units import format_money

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[int, str], Any]
"""A network's error body for a status and message (an object, or Nosana's bare string)."""


class Faults(BaseModel):
    """Faults injected into one stand-in network."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    fail_next: int = Field(default=0, ge=0)
    rate_limit_next: int = Field(default=0, ge=0)
    retry_after_seconds: float | None = Field(default=1.0, ge=0)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    vanish_running: bool = False
    price_factor: Money = Decimal(1)
    silent_price_factor: Money = Decimal(1)
    echo_credential: bool = False
    """Injected errors quote the request's credential back (a careless server), to test
    that adapters redact what they are told."""
    fail_exit_code: int = Field(default=0, ge=0, le=255)
    """Exit code of the container jobs started while it is set (Nosana reports it)."""
    malformed_next: int = Field(default=0, ge=0)
    replace_fields: dict[str, Any] = Field(default_factory=dict)


@dataclass
class SimJob:
    """A job (instance, deployment, Nosana job) that takes simulated time."""

    id: str
    key: str
    created: float
    start_delay: float
    run_seconds: float
    price_per_hour: Decimal
    data: dict[str, Any] = field(default_factory=dict)
    stopped_at: float | None = None

    def phase(self, now: float) -> str:
        """pending, running, done or stopped, from the clock."""
        if self.stopped_at is not None:
            return "stopped"
        if now < self.created + self.start_delay:
            return "pending"
        if now < self.created + self.start_delay + self.run_seconds:
            return "running"
        return "done"

    def started_at(self) -> float:
        """Monotonic time the job started (or will start) running."""
        return self.created + self.start_delay

    def ended_at(self, now: float) -> float | None:
        """Monotonic time the job ended, if it has."""
        phase = self.phase(now)
        if phase == "stopped" and self.stopped_at is not None:
            return max(self.stopped_at, self.started_at())
        if phase == "done":
            return self.started_at() + self.run_seconds
        return None


@dataclass
class SimClock:
    """A network's simulated wall clock: it started at the real time and runs ``scale`` fast."""

    scale: float
    start_wall: float = field(default_factory=time.time)
    start_mono: float = field(default_factory=time.monotonic)

    def epoch(self, mono: float) -> float:
        """Simulated seconds since the epoch at monotonic time ``mono``."""
        return self.start_wall + (mono - self.start_mono) * self.scale

    def now(self) -> float:
        """Simulated seconds since the epoch now."""
        return self.epoch(time.monotonic())


class NetworkState:
    """One stand-in network's jobs, faults and counters."""

    def __init__(self, network: Network, config: StandinConfig, error_body: ErrorBody) -> None:
        self.network = network
        self.config = config
        self.error_body = error_body
        self.rng = random.Random(config.seed)
        self.clock = SimClock(config.time_scale)
        self.faults = Faults()
        self.jobs: dict[str, SimJob] = {}
        self.requests = 0
        self.unauthorized = 0
        self.in_flight = self.max_in_flight = 0
        self.submissions: Counter[str] = Counter()
        self.created: Counter[str] = Counter()
        self._next_id = 1

    def new_id(self) -> int:
        """A fresh numeric id."""
        value = self._next_id
        self._next_id += 1
        return value

    def reset(self) -> None:
        """Forget jobs, faults and counters."""
        self.faults = Faults()
        self.jobs.clear()
        self.requests = self.unauthorized = self.in_flight = self.max_in_flight = 0
        self.submissions.clear()
        self.created.clear()

    def price(self, base: Decimal, *, charged: bool = False) -> Decimal:
        """A configured price with the price faults applied."""
        factor = self.faults.price_factor
        if charged:
            factor *= self.faults.silent_price_factor
        return base * factor

    @staticmethod
    def money(value: Decimal, places: int = 6) -> str:
        """Money as a decimal string."""
        return format_money(value, places)

    def start_epoch(self, job: SimJob) -> float:
        """Simulated time the job started running."""
        return self.clock.epoch(job.started_at())

    def end_epoch(self, job: SimJob) -> float | None:
        """Simulated time the job ended, if it has."""
        end = job.ended_at(time.monotonic())
        return None if end is None else self.clock.epoch(end)

    def live_job(self, job_id: str) -> SimJob | None:
        """The job, unless it vanished (``vanishRunning`` removes it once seen running)."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if self.faults.vanish_running and job.phase(time.monotonic()) == "running":
            del self.jobs[job_id]
            return None
        return job

    def stats(self) -> dict[str, Any]:
        """The ``/_stats`` document."""
        return {
            "network": self.network,
            "requests": self.requests,
            "unauthorized": self.unauthorized,
            "maxInFlight": self.max_in_flight,
            "submissions": dict(self.submissions),
            "created": dict(self.created),
            "jobs": {jid: job.phase(time.monotonic()) for jid, job in self.jobs.items()},
        }

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the network's credential in the network's header."""
        expected = self.config.api_keys.get(self.network)
        if self.network == "akash":
            given = request.headers.get("x-api-key", "")
        else:
            auth = request.headers.get("Authorization", "")
            given = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
            if self.network == "vastai" and not given:
                given = request.query.get("api_key", "")
        return bool(given) and (expected is None or given == expected)

    def middleware(self, public: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
        """aiohttp middleware: latency, credential, 429 bursts and injected errors."""

        @web.middleware
        async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith(("/_", "/stream/")):
                # Control routes, and generated media fetched after the answer (not calls of
                # the network's API: no faults, no counting).
                return await handler(request)
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                response = await self._handle(request, handler, public)
            finally:
                self.in_flight -= 1
            # Adapters take "now" from the server's Date header; here it is simulated time.
            response.headers["Date"] = formatdate(self.clock.now(), usegmt=True)
            return response

        return handle

    async def _handle(
        self, request: web.Request, handler: Handler, public: tuple[str, ...]
    ) -> web.StreamResponse:
        """Latency, credential, 429 bursts and injected errors, then the handler."""
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if request.path not in public and not self.authorized(request):
            self.unauthorized += 1
            return web.json_response(self.error_body(401, "Unauthorized"), status=401)
        if faults.rate_limit_next > 0:
            faults.rate_limit_next -= 1
            headers = {}
            if faults.retry_after_seconds is not None:
                headers["Retry-After"] = str(int(faults.retry_after_seconds))
            return web.json_response(
                self.error_body(429, "API requests too frequent"), status=429, headers=headers
            )
        if faults.fail_next > 0 or (faults.error_rate and self.rng.random() < faults.error_rate):
            faults.fail_next = max(faults.fail_next - 1, 0)
            status = faults.error_status
            message = "injected fault"
            if faults.echo_credential:
                sent = request.headers.get("Authorization") or request.headers.get("x-api-key")
                message += f" (you sent {sent})"
            return web.json_response(self.error_body(status, message), status=status)
        if faults.malformed_next > 0:
            faults.malformed_next -= 1
            return web.Response(text="<html>upstream hiccup</html>", content_type="text/html")
        response = await handler(request)
        if faults.replace_fields and isinstance(response, web.Response):
            return replace_fields(response, faults.replace_fields)
        return response

    def control_routes(self) -> list[web.RouteDef]:
        """``/_faults``, ``/_stats`` and ``/_reset``."""

        async def set_faults(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                self.faults = Faults.model_validate(body)
            except (ValueError, ValidationError) as exc:
                return web.json_response({"error": f"bad faults: {exc}"}, status=400)
            return web.json_response(self.faults.model_dump(mode="json", by_alias=True))

        async def get_faults(_: web.Request) -> web.Response:
            return web.json_response(self.faults.model_dump(mode="json", by_alias=True))

        async def get_stats(_: web.Request) -> web.Response:
            return web.json_response(self.stats())

        async def reset(_: web.Request) -> web.Response:
            self.reset()
            return web.json_response({"reset": True})

        return [
            web.post("/_faults", set_faults),
            web.get("/_faults", get_faults),
            web.get("/_stats", get_stats),
            web.post("/_reset", reset),
        ]


async def read_json(request: web.Request, state: NetworkState) -> dict[str, Any]:
    """The request's JSON object, or a 400 in the network's error shape naming the problem."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=_dumps(state.error_body(400, "body is not JSON")), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=_dumps(state.error_body(400, "body must be a JSON object")),
            content_type="application/json",
        )
    return body


def replace_fields(response: web.Response, fields: dict[str, Any]) -> web.Response:
    """``response`` with the values of ``fields`` put in place of its JSON body's own."""
    if response.content_type != "application/json" or not isinstance(response.body, bytes):
        return response
    raw: dict[str, str] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: placed(fields[k]) if k in fields else swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    def placed(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$raw"}:
            token = f"@@raw{len(raw)}@@"
            raw[f'"{token}"'] = str(value["$raw"])
            return token
        return value

    text = json.dumps(swap(json.loads(response.body)))
    for token, literal in raw.items():
        text = text.replace(token, literal)
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return web.Response(
        text=text, status=response.status, headers=headers, content_type="application/json"
    )


def fail(state: NetworkState, status: int, message: str) -> web.Response:
    """An error response in the network's shape."""
    return web.json_response(state.error_body(status, message), status=status)


def _dumps(value: Any) -> str:
    return json.dumps(value)
