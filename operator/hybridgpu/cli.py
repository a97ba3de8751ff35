"""The ``hybridgpu`` command. Each subcommand lives in ``hybridgpu.commands.<module>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hybridgpu import __version__

# Subcommand -> module with register(subparsers) that sets args.func. Only the module of the
# command being run is imported, so `hybridgpu run` does not pay for the simulator's SciPy and
# Matplotlib, and one command's import error cannot break the others.
COMMANDS: dict[str, str] = {
    "crds": "crds",
    "run": "run",
    "explain": "explain",
    "results": "results",
    "dcgm-exporter": "dcgm",
    "networks": "networks",
    "quote": "quote",
    "simulate": "simulate",
    "runner": "runner",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand is registered."""
    parser = argparse.ArgumentParser(
        prog="hybridgpu",
        description="Route inference jobs between in-cluster GPUs and decentralized GPU networks.",
    )
    parser.add_argument("--version", action="version", version=f"hybridgpu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module in COMMANDS.items():
        if only is None or command == only:
            importlib.import_module(f"hybridgpu.commands.{module}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    only = args_list[0] if args_list and args_list[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
