"""Start the five stand-in networks: one aiohttp server per network, one port each.

Ports are ``base_port + i`` in the order livepeer, akash, openai, nosana, vastai (default
18081-18085); ``base_port=0`` picks free ports (for tests). Endpoints to put in
ComputeProviders: livepeer ``http://HOST:PORT``, akash ``http://HOST:PORT``, openai
``http://HOST:PORT/v1``, nosana ``http://HOST:PORT``, vastai ``http://HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import web

from hybridgpu.standins import akash, livepeer, nosana, openai, vastai
from hybridgpu.standins.config import NETWORKS, Network, StandinConfig, default_config
from hybridgpu.standins.state import NetworkState

_BUILDERS = {
    "livepeer": livepeer.build_app,
    "akash": akash.build_app,
    "openai": openai.build_app,
    "nosana": nosana.build_app,
    "vastai": vastai.build_app,
}
_SUFFIX = {"openai": "/v1"}


@dataclass
class Standins:
    """Running stand-ins: their ports, endpoints and state (for in-process tests)."""

    host: str
    ports: dict[Network, int] = field(default_factory=dict)
    states: dict[Network, NetworkState] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)

    def base_url(self, network: Network) -> str:
        """``http://host:port`` of a network (control endpoints live here)."""
        return f"http://{self.host}:{self.ports[network]}"

    def endpoint(self, network: Network) -> str:
        """The ``spec.endpoint`` a ComputeProvider of this network should use."""
        return self.base_url(network) + _SUFFIX.get(network, "")

    async def close(self) -> None:
        """Stop every server."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()


async def start_standins(
    config: StandinConfig | None = None, host: str = "127.0.0.1", base_port: int = 0
) -> Standins:
    """Start all five stand-ins in the running event loop and return where they listen."""
    config = config or default_config()
    running = Standins(host)
    try:
        for index, network in enumerate(NETWORKS):
            app, state = _BUILDERS[network](config)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            running._runners.append(runner)
            site = web.TCPSite(runner, host, base_port + index if base_port else 0)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            running.ports[network] = int(sockets[0].getsockname()[1])
            running.states[network] = state
    except BaseException:
        await running.close()
        raise
    return running


async def serve_forever(config: StandinConfig, host: str, base_port: int) -> None:
    """Run the stand-ins until cancelled (Ctrl-C)."""
    running = await start_standins(config, host, base_port)
    for network in NETWORKS:
        print(f"{network:9s} {running.endpoint(network)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await running.close()
