"""Helpers of hack/build-image.sh (stdlib only).

image_sbom.py PYTHON.cdx.json STATUS_D --version V --suite S --arch A -o OUT
    The SBOM cyclonedx-py wrote for the Python set, with the Debian packages of the image
    (the control fields in STATUS_D) added as components with deb package URLs.
image_sbom.py --describe LAYOUT --name N --tag T --archive A --sbom S -o OUT
    image.json: the reference of the image just built (name, tag, manifest digest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote


def control_fields(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def debian_components(status_d: Path, suite: str, arch: str) -> list[dict[str, Any]]:
    distro = {"bookworm": "debian-12"}.get(suite, suite)
    components = []
    for entry in sorted(status_d.iterdir()):
        fields = control_fields(entry)
        name, version = fields["Package"], fields["Version"]
        package_arch = fields.get("Architecture", arch)
        purl = (
            f"pkg:deb/debian/{name}@{quote(version, safe='')}?arch={package_arch}&distro={distro}"
        )
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
            "supplier": {"name": fields.get("Maintainer", "Debian")},
        }
        if fields.get("Source"):
            component["properties"] = [{"name": "deb:source", "value": fields["Source"]}]
        components.append(component)
    return components


def merge(args: argparse.Namespace) -> None:
    bom = json.loads(Path(args.python_bom).read_text())
    debs = debian_components(Path(args.status_d), args.suite, args.arch)
    bom["components"] = [*bom.get("components", []), *debs]
    root = bom.get("metadata", {}).get("component", {}).get("bom-ref")
    if root:
        for dependency in bom.setdefault("dependencies", []):
            if dependency.get("ref") == root:
                dependency.setdefault("dependsOn", []).extend(d["bom-ref"] for d in debs)
        bom["dependencies"].extend({"ref": d["bom-ref"]} for d in debs)
    Path(args.output).write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")


def describe(args: argparse.Namespace) -> None:
    layout = Path(args.describe)
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag
    ]
    blob = layout / "blobs" / "sha256" / manifest["digest"].removeprefix("sha256:")
    body = json.loads(blob.read_text())
    layers = body["layers"]
    info = {
        "name": args.name,
        "tag": args.tag,
        "digest": manifest["digest"],
        "reference": f"{args.name}:{args.tag}@{manifest['digest']}",
        "archive": os.path.relpath(args.archive),
        "archiveBytes": Path(args.archive).stat().st_size,
        "layerBytes": sum(layer["size"] for layer in layers),
        "sbom": os.path.relpath(args.sbom),
        "revision": args.revision,
        "created": args.created,
        "buildSeconds": args.seconds,
    }
    Path(args.output).write_text(json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("python_bom", nargs="?")
    parser.add_argument("status_d", nargs="?")
    parser.add_argument("--version")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--describe")
    parser.add_argument("--name")
    parser.add_argument("--tag")
    parser.add_argument("--archive")
    parser.add_argument("--sbom")
    parser.add_argument("--seconds", type=int, default=0)
    parser.add_argument("--revision", default="unknown")
    parser.add_argument("--created", default="")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    if args.describe:
        describe(args)
    else:
        merge(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
