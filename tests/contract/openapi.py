"""OpenAPI 3.0 documents as JSON Schema validators, and a recorder of an adapter's traffic.

OpenAPI 3.0 schemas are JSON Schema with ``nullable`` instead of a null type; :func:`schema`
rewrites that and inlines ``$ref``s, so ``jsonschema`` can check bodies against them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema

SPECS = Path(__file__).parent / "specs"


def load(name: str) -> dict[str, Any]:
    """A vendored spec, with the known upstream pattern bug (``^d+$`` for ``^\\d+$``) fixed."""
    text = (SPECS / name).read_text()
    return json.loads(text.replace('"^d+$"', '"^\\\\d+$"'))


def _convert(node: Any, spec: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, spec) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _convert(target, spec)
    out = {k: _convert(v, spec) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema for an OpenAPI schema object."""
    converted: dict[str, Any] = _convert(node, spec)
    return converted


def operation(spec: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The path template and operation object that ``method path`` is an instance of."""
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not an operation of the spec")


def _decimal_free(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if isinstance(value, Decimal) else value


def validate_request(
    spec: dict[str, Any], method: str, path: str, query: dict[str, str], body: Any
) -> None:
    """``body`` and ``query`` against the operation's request body and query parameters."""
    _, op = operation(spec, method, path)
    for param in op.get("parameters", []):
        if param["in"] == "query" and param["name"] in query:
            value: Any = query[param["name"]]
            param_schema = schema(spec, param["schema"])
            branches = param_schema.get("anyOf", [param_schema])
            if any(b.get("type") in ("number", "integer") for b in branches):
                value = float(value)  # a query string holds the number's text
            jsonschema.validate(value, param_schema)
        if param["in"] == "query" and param.get("required"):
            assert param["name"] in query, f"{method} {path}: query {param['name']} is required"
    content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if content is None:
        assert body is None, f"{method} {path} takes no JSON body"
        return
    jsonschema.validate(body, schema(spec, content["schema"]))


def validate_response(spec: dict[str, Any], method: str, path: str, status: int, body: Any) -> bool:
    """``body`` against the operation's response for ``status``; False when it declares none
    (the Console's spec declares no error responses)."""
    _, op = operation(spec, method, path)
    declared = op.get("responses", {}).get(str(status))
    if declared is None:
        assert status >= 400, f"{method} {path}: {status} is not a declared response"
        return False
    content = declared.get("content", {}).get("application/json")
    if content is not None:
        jsonschema.validate(body, schema(spec, content["schema"]))
    return True


@dataclass
class Exchange:
    """One request the adapter sent and the answer it got."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    answer: Any


def record(adapter: Any) -> list[Exchange]:
    """Record every request an adapter's HTTP client sends, with its response."""
    seen: list[Exchange] = []

    async def on_response(response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        body = json.loads(request.content) if request.content else None
        try:
            answer = response.json()
        except ValueError:
            answer = response.text
        seen.append(
            Exchange(
                request.method,
                request.url.path,
                dict(request.url.params),
                body,
                response.status_code,
                answer,
            )
        )

    adapter.client._client.event_hooks["response"].append(on_response)
    return seen
