"""The ``hybridgpu`` command. Each subcommand lives in ``hybridgpu.commands.<name>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hybridgpu import __version__

# One module per subcommand; each has register(subparsers) and sets args.func.
COMMANDS: tuple[str, ...] = ("crds", "run", "explain", "dcgm", "networks", "quote", "simulate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridgpu",
        description="Route inference jobs between in-cluster GPUs and decentralized GPU networks.",
    )
    parser.add_argument("--version", action="version", version=f"hybridgpu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hybridgpu.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
