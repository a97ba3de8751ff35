"""``hybridgpu crds``: print or write the CRDs generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hybridgpu.api import crdgen


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("crds", help="print the CustomResourceDefinitions")
    parser.add_argument(
        "--write", metavar="DIR", type=Path, help="write one file per CRD into DIR instead"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.write:
        for path in crdgen.write_all(args.write):
            print(path)
    else:
        sys.stdout.write(crdgen.render_all())
    return 0
