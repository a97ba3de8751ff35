"""Generate CustomResourceDefinitions from the pydantic models.

The models are the one source of truth; ``crds/*.yaml`` is their rendering, and a test fails
when the two drift. The conversion follows what the API server wants of a structural schema:
``$ref`` inlined, ``anyOf: [X, null]`` folded into ``X``, no titles, free-form objects marked
with ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from hybridgpu.api.common import GROUP, VERSION
from hybridgpu.api.computeprovider import ComputeProviderSpec, ComputeProviderStatus
from hybridgpu.api.inferencejob import InferenceJobSpec, InferenceJobStatus
from hybridgpu.api.routingpolicy import RoutingPolicySpec, RoutingPolicyStatus
from hybridgpu.units import DURATION_PATTERN, format_duration

Schema = dict[str, Any]
_TIMEDELTA = TypeAdapter(timedelta)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[dict[str, Any], ...]
    spec_required: bool = True


KINDS: tuple[Kind, ...] = (
    Kind(
        kind="InferenceJob",
        plural="inferencejobs",
        short_names=("ij",),
        scope="Namespaced",
        spec=InferenceJobSpec,
        status=InferenceJobStatus,
        description=(
            "A batch of inference work that hybridgpu places on the cluster's own GPUs or on an "
            "external GPU network, by price, latency and capacity under a RoutingPolicy."
        ),
        columns=(
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Target", "type": "string", "jsonPath": ".status.placement.provider"},
            {"name": "GPU", "type": "string", "jsonPath": ".status.placement.gpuProduct"},
            {
                "name": "Results",
                "type": "string",
                "jsonPath": ".status.output.summary",
                "description": "Output records written / requests in the batch",
            },
            {
                "name": "Cost",
                "type": "string",
                "jsonPath": ".status.cost.accrued",
                "description": "US dollars accrued so far",
            },
            {
                "name": "Est",
                "type": "string",
                "jsonPath": ".status.cost.estimated",
                "priority": 1,
                "description": "Estimated total in US dollars",
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
    Kind(
        kind="RoutingPolicy",
        plural="routingpolicies",
        short_names=("rp",),
        scope="Namespaced",
        spec=RoutingPolicySpec,
        status=RoutingPolicyStatus,
        description=(
            "How a namespace's InferenceJobs are routed: weights of price, latency, reliability "
            "and carbon, in-cluster prices, allowed external networks, budget and failover."
        ),
        columns=(
            {"name": "Limit", "type": "string", "jsonPath": ".spec.budget.limit"},
            {"name": "Committed", "type": "string", "jsonPath": ".status.committed"},
            {"name": "Spent", "type": "string", "jsonPath": ".status.spent"},
            {"name": "Remaining", "type": "string", "jsonPath": ".status.remaining"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
        spec_required=False,
    ),
    Kind(
        kind="ComputeProvider",
        plural="computeproviders",
        short_names=("cp",),
        scope="Cluster",
        spec=ComputeProviderSpec,
        status=ComputeProviderStatus,
        description=(
            "An external GPU network (Livepeer, Akash, an OpenAI-compatible endpoint, Nosana, "
            "Vast.ai) that InferenceJobs may be sent to. Cluster-scoped: created by admins."
        ),
        columns=(
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Region", "type": "string", "jsonPath": ".spec.region"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Circuit", "type": "string", "jsonPath": ".status.circuit"},
            {"name": "Active", "type": "integer", "jsonPath": ".status.activeJobs"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
)


_ABSENT_BY_DEFAULT = "x-hybridgpu-absent-by-default"
"""Marks, while generating, an optional object whose model default is None."""


def _structural(node: Any, defs: dict[str, Schema], in_status: bool) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs, in_status) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # siblings of $ref (description, default) win
        node = target
    if "anyOf" in node:
        any_of = node.pop("anyOf")
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) == 1:
            rest = node
            node = dict(options[0])
            for key, value in rest.items():
                node.setdefault(key, value)
            if "description" in rest:
                node["description"] = rest["description"]
            structural = _structural(node, defs, in_status)
            if len(any_of) > 1 and "default" in rest and rest["default"] is None:
                # Absent means something (e.g. "off"): it must not be defaulted to {}.
                structural[_ABSENT_BY_DEFAULT] = True
            return structural
        node["anyOf"] = options
    node = {k: v for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node.get("description"), str):
        node["description"] = " ".join(node["description"].split())
    if in_status:
        node.pop("default", None)
    if node.get("default") is None:
        node.pop("default", None)
    elif node.get("pattern") == DURATION_PATTERN and str(node["default"]).startswith("P"):
        # pydantic renders timedelta defaults as ISO 8601; the API speaks Go durations.
        node["default"] = format_duration(_TIMEDELTA.validate_python(node["default"]))
    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _structural(v, defs, in_status) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs, in_status)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out:
        extra = out.get("additionalProperties")
        if extra is True or extra is None or extra == {}:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    if "properties" in out:
        out["type"] = "object"
        if not in_status:
            _default_empty_objects(out)
    return out


def _default_empty_objects(schema: Schema) -> None:
    """Give optional sub-objects without required fields ``default: {}``, so the API server
    fills in their own defaults and users see them with ``kubectl get -o yaml``; not those
    whose absence means something (a model default of None, e.g. ``deferral``)."""
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        if prop.pop(_ABSENT_BY_DEFAULT, False):
            continue
        if (
            name not in required
            and prop.get("type") == "object"
            and "properties" in prop
            and not prop.get("required")
            and "default" not in prop
        ):
            prop["default"] = {
                key: sub["default"] for key, sub in prop["properties"].items() if "default" in sub
            }


def openapi_schema(model: type[BaseModel], in_status: bool = False) -> Schema:
    """The structural OpenAPI v3 schema of ``model``."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = dict(_structural(raw, defs, in_status))
    _strip_markers(schema)
    return schema


def _strip_markers(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(_ABSENT_BY_DEFAULT, None)
        for value in node.values():
            _strip_markers(value)
    elif isinstance(node, list):
        for item in node:
            _strip_markers(item)


def crd(kind: Kind) -> Schema:
    """The CustomResourceDefinition object of one kind."""
    spec_schema = openapi_schema(kind.spec)
    status_schema = openapi_schema(kind.status, in_status=True)
    properties: Schema = {
        "apiVersion": {"type": "string", "description": "hybridgpu.dev/v1alpha1"},
        "kind": {"type": "string", "description": kind.kind},
        "metadata": {"type": "object"},
        "spec": spec_schema,
        "status": status_schema,
    }
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "properties": properties,
    }
    if kind.spec_required:
        root["required"] = ["spec"]
    else:
        spec_schema["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "hybridgpu",
                "app.kubernetes.io/part-of": "hybridgpu",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["hybridgpu"],
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    """The YAML text of one CRD, as stored under ``crds/``."""
    header = (
        "# Generated by `hybridgpu crds --write crds/` from operator/hybridgpu/api. Do not edit.\n"
    )
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def render_all() -> str:
    """Every CRD as one multi-document YAML stream."""
    return "---\n".join(render(k) for k in KINDS)


def write_all(directory: Path) -> list[Path]:
    """Write one file per kind into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = directory / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render(kind))
        paths.append(path)
    return paths
