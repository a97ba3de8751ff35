"""Where the dcgm-exporter stand-in learns about nodes and pods: a static JSON file or a cluster."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hybridgpu.inventory.pools import NodeRecord, PodRecord, node_record, pod_record


class SourceError(RuntimeError):
    """Nodes and pods could not be read (the message names the file, line and column if any)."""


@dataclass(frozen=True, slots=True)
class ClusterState:
    nodes: tuple[NodeRecord, ...]
    pods: tuple[PodRecord, ...]


class Source(Protocol):
    def read(self) -> ClusterState:
        """The current GPU nodes and GPU pods."""
        ...


def state_from_objects(objects: list[Mapping[str, Any]]) -> ClusterState:
    """Records of the GPU Nodes and GPU Pods among Kubernetes objects of any kind."""
    nodes: list[NodeRecord] = []
    pods: list[PodRecord] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Node" and (node := node_record(obj)) is not None:
            nodes.append(node)
        elif kind == "Pod" and (pod := pod_record(obj)) is not None:
            pods.append(pod)
    return ClusterState(tuple(nodes), tuple(pods))


def _items(doc: Any, path: Path) -> list[Mapping[str, Any]]:
    """Accept ``{"nodes": [...], "pods": [...]}`` or a kubectl ``List`` (``-o json``)."""
    if isinstance(doc, dict) and ("nodes" in doc or "pods" in doc):
        items: list[Mapping[str, Any]] = []
        for key, kind in (("nodes", "Node"), ("pods", "Pod")):
            values = doc.get(key) or []
            if not isinstance(values, list):
                raise SourceError(f"{path}: {key!r} must be a list of {kind} objects")
            items += [{"kind": kind, **v} for v in values if isinstance(v, dict)]
        return items
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [i for i in doc["items"] if isinstance(i, dict)]
    raise SourceError(f"{path}: expected {{'nodes': [...], 'pods': [...]}} or a List with 'items'")


class StaticSource:
    """Nodes and pods from a JSON file, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._state = ClusterState((), ())

    def read(self) -> ClusterState:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read ({exc.strerror})") from None
        if mtime != self._mtime:
            try:
                doc = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise SourceError(
                    f"{self.path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
                ) from None
            try:
                self._state = state_from_objects(_items(doc, self.path))
            except ValueError as exc:
                raise SourceError(f"{self.path}: {exc}") from None
            self._mtime = mtime
        return self._state


class KubernetesSource:
    """Nodes and Running pods listed from the cluster of ``kubeconfig``.

    Lists raw JSON (``_preload_content=False``) so the records are built from the same dicts the
    API serves, camelCase and all, without the client's model objects.
    """

    def __init__(self, kubeconfig: Path, request_timeout_s: float = 10.0) -> None:
        from kubernetes import client, config

        try:
            api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        except Exception as exc:  # the loader raises several unrelated types
            raise SourceError(
                f"{kubeconfig}: cannot load kubeconfig ({type(exc).__name__})"
            ) from None
        self._api = client.CoreV1Api(api_client)
        self._timeout = request_timeout_s

    def _list(self, method: Any, **kwargs: Any) -> list[Mapping[str, Any]]:
        response = method(_preload_content=False, _request_timeout=self._timeout, **kwargs)
        doc = json.loads(response.data)
        kind = doc.get("kind", "").removesuffix("List")
        return [{"kind": kind, **item} for item in doc.get("items") or []]

    def read(self) -> ClusterState:
        try:
            nodes = self._list(self._api.list_node)
            pods = self._list(
                self._api.list_pod_for_all_namespaces, field_selector="status.phase=Running"
            )
        except Exception as exc:  # ApiException's text can carry response headers: keep it out
            status = getattr(exc, "status", None)
            detail = f"HTTP {status}" if status else type(exc).__name__
            raise SourceError(f"listing nodes and pods failed ({detail})") from None
        return state_from_objects([*nodes, *pods])
