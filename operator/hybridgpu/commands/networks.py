"""``hybridgpu networks``: run the local stand-in GPU networks, or print their config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import yaml

from hybridgpu.standins.config import DEFAULT_BASE_PORT, default_config, load_config
from hybridgpu.standins.server import serve_forever

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("networks", help="local stand-ins of the external GPU networks")
    actions = parser.add_subparsers(dest="networks_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve the five stand-in networks in the foreground",
        description=(
            "Serve stand-ins of Livepeer, Akash, OpenAI-compatible, Nosana and Vast.ai on "
            "BASE_PORT..BASE_PORT+4 (in that order) until interrupted."
        ),
    )
    serve.add_argument("--config", type=Path, help="YAML or JSON stand-in config")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    serve.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT, help="first port (default 18081)"
    )
    serve.set_defaults(func=run_serve)
    config = actions.add_parser("config", help="print the default stand-in config as YAML")
    config.set_defaults(func=run_config)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    if args.host not in LOOPBACK:
        print(f"--host: stand-ins listen on loopback only, not {args.host!r}", file=sys.stderr)
        return 2
    if not 0 < args.base_port <= 65535 - 4:
        print(f"--base-port: {args.base_port} is not a usable port", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config) if args.config else default_config()
    except (OSError, ValueError) as exc:
        print(f"--config: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(config, args.host, args.base_port))
    return 0


def run_config(args: argparse.Namespace) -> int:
    """Print the default configuration (a starting point for --config)."""
    del args
    data = default_config().model_dump(mode="json", by_alias=True)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    return 0
