"""Akash manifests and manifest versions, computed from an SDL the way the Console computes them.

The Console (akash-network/console ``apps/api/src/deployment/services/deployment-writer``)
turns the posted SDL into a manifest with ``@akashnetwork/chain-sdk``'s ``generateManifest``,
returns ``manifestToSortedJSON(manifest.groups)`` as ``data.manifest`` and writes
``generateManifestVersion`` (SHA-256 of that JSON) into the deployment on chain, where every
deployment listing shows it, base64-encoded, as ``deployment.hash``.

That hash is what makes an Akash submission idempotent: hybridgpu's SDL carries the
idempotency key in the service env, so the manifest, and therefore the hash, is a function
of (job, key). Before creating, the adapter computes the hash and looks for a deployment
with it; nothing is stored on the hybridgpu side.

This is a port of chain-sdk's ``generateManifest``/``manifestToSortedJSON`` (version
1.0.0-alpha.25) for the SDL subset hybridgpu writes: services with ``image``, ``command``,
``args`` and ``env``; compute profiles with ``cpu``, ``memory``, ``storage`` (one or a list)
and ``gpu``; any number of placements. SDL features outside it (``expose``, ``params``,
``credentials``) raise ValueError. ``tests/unit/test_akash_manifest.py`` checks it against
fixtures produced by chain-sdk itself (``hack/upstream/akash-manifest-fixtures.mjs``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

import yaml

from hybridgpu.units import quantity_value

_UNSUPPORTED = ("expose", "params", "credentials")
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")


def _number(value: Decimal) -> str:
    """A number as JavaScript's ``toString`` prints an integral value."""
    if value != value.to_integral_value():
        raise ValueError(f"{value} is not a whole number of units")
    return str(int(value))


def _cpu_millis(units: Any) -> str:
    if isinstance(units, bool) or units is None:
        raise ValueError("cpu.units: required")
    if isinstance(units, int | float):
        return _number(Decimal(str(units)) * 1000)
    match = _CPU.fullmatch(str(units))
    if not match:
        raise ValueError(f"cpu.units: {units!r} is not a CPU amount")
    value = Decimal(match.group(1))
    return _number(value if match.group(2) else value * 1000)


def _bytes(size: Any, where: str) -> str:
    try:
        return _number(quantity_value(str(size)))
    except ValueError:
        raise ValueError(f"{where}: {size!r} is not a size such as '16Gi'") from None


def _gpu_attributes(gpu: dict[str, Any]) -> list[dict[str, str]]:
    vendors = (gpu.get("attributes") or {}).get("vendor") or {}
    out: list[dict[str, str]] = []
    for vendor in sorted(vendors):
        models = vendors[vendor]
        if not models:
            out.append({"key": f"vendor/{vendor}/model/*", "value": "true"})
            continue
        for model in models:
            key = f"vendor/{vendor}/model/{model['model']}"
            if model.get("ram"):
                key += f"/ram/{model['ram']}"
            if model.get("interface"):
                key += f"/interface/{model['interface']}"
            out.append({"key": key, "value": "true"})
    return out


def _resources(res_id: int, resources: dict[str, Any]) -> dict[str, Any]:
    storage = resources.get("storage") or []
    storage = storage if isinstance(storage, list) else [storage]
    gpu = resources.get("gpu") or {}
    units = int(gpu.get("units", 0))
    gpu_out: dict[str, Any] = {"units": {"val": str(units)}}
    attributes = _gpu_attributes(gpu) if gpu.get("attributes") else []
    if attributes:  # chain-sdk omits an empty attribute list
        gpu_out["attributes"] = attributes
    return {
        "cpu": {"units": {"val": _cpu_millis((resources.get("cpu") or {}).get("units"))}},
        "endpoints": [],
        "gpu": gpu_out,
        "id": res_id,
        "memory": {
            "size": {"val": _bytes((resources.get("memory") or {}).get("size"), "memory.size")}
        },
        "storage": [
            {"name": s.get("name") or "default", "size": {"val": _bytes(s.get("size"), "storage")}}
            for s in storage
        ],
    }


def manifest_groups(sdl: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest groups chain-sdk's ``generateManifest`` builds from an SDL document."""
    services: dict[str, Any] = sdl.get("services") or {}
    deployment: dict[str, Any] = sdl.get("deployment") or {}
    compute: dict[str, Any] = (sdl.get("profiles") or {}).get("compute") or {}
    if not services or not deployment or not compute:
        raise ValueError("sdl: services, profiles.compute and deployment are required")
    by_placement: dict[str, list[str]] = {}
    for svc, placements in deployment.items():
        if svc not in services:
            raise ValueError(f"sdl.deployment.{svc}: no such service")
        for placement in placements or {}:
            by_placement.setdefault(placement, []).append(svc)
    resource_ids: dict[tuple[str, str], int] = {}
    for svc in sorted(services):
        for placement, entry in (deployment.get(svc) or {}).items():
            key = (placement, str(entry["profile"]))
            if key not in resource_ids:
                resource_ids[key] = sum(1 for p, _ in resource_ids if p == placement) + 1
    groups = []
    for placement in sorted(by_placement):
        out_services = []
        for svc in sorted(by_placement[placement]):
            service = services[svc] or {}
            for field in _UNSUPPORTED:
                if service.get(field):
                    raise ValueError(f"sdl.services.{svc}.{field}: not supported by hybridgpu")
            entry = deployment[svc][placement]
            profile = compute.get(str(entry["profile"]))
            if not isinstance(profile, dict):
                raise ValueError(f"sdl.profiles.compute.{entry['profile']}: missing")
            out_services.append(
                {
                    "args": list(service.get("args") or []) or None,
                    "command": list(service.get("command") or []) or None,
                    "count": int(entry.get("count", 1)),
                    "credentials": None,
                    "env": [str(e) for e in service.get("env") or []] or None,
                    "expose": [],
                    "image": str(service["image"]),
                    "name": svc,
                    "resources": _resources(
                        resource_ids[(placement, str(entry["profile"]))],
                        profile.get("resources") or {},
                    ),
                }
            )
        groups.append({"name": placement, "services": out_services})
    return groups


def sorted_json(groups: list[dict[str, Any]]) -> str:
    """chain-sdk's ``manifestToSortedJSON``: keys sorted, no spaces, ``<>&`` escaped as Go does."""
    text = json.dumps(groups, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return re.sub(r"[<>&]", lambda m: _HTML_ESCAPES[m.group(0)], text)


def manifest_version(manifest_json: str) -> str:
    """``deployment.hash`` of a deployment with this manifest: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(manifest_json.encode()).digest()).decode()


def manifest_of(sdl_text: str) -> tuple[str, str]:
    """The manifest JSON the Console returns for an SDL, and its version hash."""
    try:
        sdl = yaml.safe_load(sdl_text)
    except yaml.YAMLError as exc:
        raise ValueError(f"sdl: not YAML: {exc}") from None
    if not isinstance(sdl, dict):
        raise ValueError("sdl: must be a mapping")
    text = sorted_json(manifest_groups(sdl))
    return text, manifest_version(text)
