#!/usr/bin/env python3
"""Create fake KWOK GPU nodes from a node list in the Alibaba GPU trace format.

Input CSV columns: ``sn,cpu_milli,memory_mib,gpu,model`` (cluster-trace-gpu-v2023,
``openb_node_list_gpu_node.csv``). Each row becomes a Node with capacity/allocatable
``cpu``, ``memory``, ``pods`` and ``nvidia.com/gpu``, the NVIDIA GPU Feature Discovery labels
``nvidia.com/gpu.{product,memory,count,family,present}``, the label ``type=kwok`` and the
annotation ``kwok.x-k8s.io/node=fake`` that makes our kwok (hack/cluster-up.sh) manage it and
report it Ready. Nodes are not tainted.

The trace-code -> product table lives in operator/hybridgpu/gpu_products.py (single source of
truth); this script imports it from there. Stdlib only; talks to the cluster through our own
kubectl (``kubectl apply -f -``), so it runs under a bare ``python3``.

    hack/load-gpu-nodes.py --limit 16
    hack/load-gpu-nodes.py --csv my_nodes.csv --kubeconfig /path/to/kubeconfig
    hack/load-gpu-nodes.py --limit 4 --dry-run     # print the Node objects as JSON
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO_ROOT / "hack" / "data" / "openb_node_list_gpu_node.csv"
DEFAULT_KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
PODS_PER_NODE = 110


def _load_gpu_products() -> ModuleType:
    """Import hybridgpu.gpu_products from the repo's operator/ dir.

    Falls back to loading the file directly if the package's __init__ cannot be imported
    without the virtualenv (the module itself is stdlib only).
    """
    operator_dir = str(REPO_ROOT / "operator")
    if operator_dir not in sys.path:
        sys.path.insert(0, operator_dir)
    try:
        import hybridgpu.gpu_products as mod

        return mod
    except ImportError as err:
        path = REPO_ROOT / "operator" / "hybridgpu" / "gpu_products.py"
        spec = importlib.util.spec_from_file_location("_hybridgpu_gpu_products", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}") from err
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("sn")]
    missing = {"sn", "cpu_milli", "memory_mib", "gpu", "model"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{path}: missing columns {sorted(missing)}")
    return rows


def select(rows: list[dict[str, str]], limit: int | None, mode: str) -> list[dict[str, str]]:
    """Pick ``limit`` rows: in file order ("head"), or round-robin over GPU models in order of
    first appearance ("spread", default) so even a small cluster has every model."""
    if limit is None or limit >= len(rows):
        return rows
    if mode == "head":
        return rows[:limit]
    by_model: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    out: list[dict[str, str]] = []
    i = 0
    while len(out) < limit:
        for group in by_model.values():
            if i < len(group) and len(out) < limit:
                out.append(group[i])
        i += 1
    return out


def cpu_quantity(milli: int) -> str:
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def node_object(row: dict[str, str], products: ModuleType) -> dict[str, Any]:
    name = row["sn"].strip().lower()
    model = row["model"].strip()
    gpus = int(row["gpu"])
    table: dict[str, tuple[str, int]] = products.TRACE_GPU_PRODUCTS
    if model not in table:
        raise SystemExit(f"node {name}: unknown GPU model {model!r}; add it to gpu_products.py")
    product, memory_mib = table[model]
    resources = {
        "cpu": cpu_quantity(int(row["cpu_milli"])),
        "memory": f"{int(row['memory_mib'])}Mi",
        "pods": str(PODS_PER_NODE),
        "nvidia.com/gpu": str(gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": str(memory_mib),
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.family": products.GPU_PRODUCT_FAMILY.get(product, "unknown"),
            },
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                "hybridgpu.io/trace-gpu-model": model,
            },
        },
        "spec": {},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def default_kubectl() -> str:
    bin_dir = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-controlplane.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return str(Path(bin_dir) / "kubectl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="node list (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="create at most N nodes")
    p.add_argument(
        "--select",
        choices=["spread", "head"],
        default="spread",
        help="with --limit: round-robin over GPU models (spread) or first N rows (head)",
    )
    p.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG)
    p.add_argument("--kubectl", default=None, help="kubectl binary (default: ours)")
    p.add_argument("--dry-run", action="store_true", help="print the objects, create nothing")
    p.add_argument("--wait", type=int, default=120, help="seconds to wait for Ready (0: no wait)")
    args = p.parse_args(argv)

    products = _load_gpu_products()
    rows = select(read_rows(args.csv), args.limit, args.select)
    nodes = [node_object(r, products) for r in rows]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}, indent=1)
    if args.dry_run:
        print(doc)
        return 0

    kubectl = [args.kubectl or default_kubectl(), "--kubeconfig", str(args.kubeconfig)]
    # A Node's status is kept on create, so one apply sets capacity/allocatable on new nodes.
    subprocess.run([*kubectl, "apply", "-f", "-"], input=doc, text=True, check=True)
    # For nodes that already existed, apply does not touch status: patch it explicitly.
    existing = [n for n in nodes if not _status_matches(kubectl, n)]
    for n in existing:
        patch = json.dumps({"status": n["status"]})
        subprocess.run(
            [*kubectl, "patch", "node", n["metadata"]["name"], "--subresource=status",
             "--type=merge", "-p", patch],
            check=True,
        )  # fmt: skip
    if args.wait > 0 and nodes:
        names = [f"node/{n['metadata']['name']}" for n in nodes]
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", f"--timeout={args.wait}s", *names],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["model"]] = counts.get(r["model"], 0) + 1
    summary = ", ".join(f"{m}={c}" for m, c in sorted(counts.items()))
    print(f"loaded {len(nodes)} fake GPU nodes ({summary})", file=sys.stderr)
    return 0


_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def _quantity(q: str) -> Fraction:
    """Value of a Kubernetes quantity ("256Gi" == "262144Mi", "500m" == "0.5")."""
    for suffix, mult in _SUFFIXES.items():
        if q.endswith(suffix):
            return Fraction(q[: -len(suffix)]) * mult
    if q.endswith("m"):
        return Fraction(q[:-1]) / 1000
    return Fraction(q)


def _status_matches(kubectl: list[str], node: dict[str, Any]) -> bool:
    out = subprocess.run(
        [*kubectl, "get", "node", node["metadata"]["name"], "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    alloc = json.loads(out).get("status", {}).get("allocatable", {})
    want: dict[str, str] = node["status"]["allocatable"]
    return all(k in alloc and _quantity(alloc[k]) == _quantity(v) for k, v in want.items())


if __name__ == "__main__":
    sys.exit(main())
