"""The other replay inputs: the in-cluster node list and the price book, plus bundled paths."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from pathlib import Path

from hybridgpu.gpu_products import TRACE_GPU_PRODUCTS
from hybridgpu.simulate.workload import TraceError

DATA = Path(str(files("hybridgpu") / "data"))
DEFAULT_JOBS = DATA / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
DEFAULT_NODES = DATA / "alibaba-gpu-v2023" / "openb_node_list_gpu_node.csv"
DEFAULT_PRICES = DATA / "prices.csv"
DEFAULT_POLICIES = tuple(sorted((DATA / "policies").glob("*.yaml")))

NODE_COLUMNS = ("sn", "gpu", "model")
PRICE_COLUMNS = ("provider", "kind", "gpu_product", "gpu_memory_gib", "usd_per_gpu_hour", "as_of")
GIB = 2**30
MIB = 2**20


@dataclass(frozen=True, slots=True)
class Node:
    """One in-cluster GPU node."""

    name: str
    gpu_product: str
    memory_bytes: int
    gpus: int


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One price of the price book."""

    provider: str
    kind: str
    """owned (in-cluster), depin, marketplace or cloud."""
    gpu_product: str
    memory_bytes: int
    usd_per_gpu_hour: Decimal
    as_of: str


def _csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    if not rows:
        raise TraceError(f"{path}:1:1: empty file, expected a CSV header")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(f"{path}:1:1: missing column(s) {', '.join(missing)}")
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(x.strip() for x in r)]
    for number, row in body:
        if len(row) != len(header):
            raise TraceError(f"{path}:{number}:1: expected {len(header)} fields, found {len(row)}")
    return header, body


def _col(header: list[str], row: list[str], name: str) -> tuple[str, int]:
    i = header.index(name)
    return row[i].strip(), 1 + sum(len(x) + 1 for x in row[:i])


def load_nodes(path: Path, *, scale: float = 1.0) -> tuple[Node, ...]:
    """GPU nodes of an Alibaba node list, keeping ``scale`` of each product's nodes (rounded)."""
    if not 0 < scale <= 1:
        raise ValueError(f"--capacity-scale must be in (0, 1], got {scale}")
    header, body = _csv(path, NODE_COLUMNS)
    by_product: dict[str, list[Node]] = {}
    for number, row in body:
        model, mcol = _col(header, row, "model")
        gpus_text, gcol = _col(header, row, "gpu")
        try:
            gpus = int(gpus_text)
        except ValueError:
            raise TraceError(
                f"{path}:{number}:{gcol}: gpu must be an integer, got {gpus_text!r}"
            ) from None
        if gpus == 0 and not model:
            continue
        mapped = TRACE_GPU_PRODUCTS.get(model)
        if mapped is None:
            raise TraceError(
                f"{path}:{number}:{mcol}: unknown GPU model {model!r}; known: "
                f"{', '.join(sorted(TRACE_GPU_PRODUCTS))}"
            )
        if gpus < 1:
            raise TraceError(f"{path}:{number}:{gcol}: gpu must be at least 1 for model {model}")
        product, mib = mapped
        by_product.setdefault(product, []).append(
            Node(_col(header, row, "sn")[0], product, mib * MIB, gpus)
        )
    nodes: list[Node] = []
    for product in sorted(by_product):
        group = sorted(by_product[product], key=lambda n: (-n.gpus, n.name))
        # Keep the biggest nodes first so multi-GPU jobs still fit a shrunken cluster.
        keep = math.floor(len(group) * scale + 0.5)
        nodes.extend(group[:keep])
    if not nodes:
        raise TraceError(f"{path}: no GPU nodes left (capacity scale {scale})")
    return tuple(nodes)


def load_prices(path: Path) -> tuple[PriceRow, ...]:
    """The price book: one row per provider, product and price, US dollars per GPU-hour."""
    header, body = _csv(path, PRICE_COLUMNS)
    out: list[PriceRow] = []
    for number, row in body:
        usd_text, ucol = _col(header, row, "usd_per_gpu_hour")
        try:
            usd = Decimal(usd_text)
        except InvalidOperation:
            raise TraceError(
                f"{path}:{number}:{ucol}: usd_per_gpu_hour must be a decimal such as 1.29, "
                f"got {usd_text!r}"
            ) from None
        if not usd.is_finite() or usd < 0:
            raise TraceError(f"{path}:{number}:{ucol}: usd_per_gpu_hour must be >= 0")
        mem_text, mcol = _col(header, row, "gpu_memory_gib")
        try:
            # Rows that do not state memory (e.g. "H100, variant not stated") count as 80 GiB.
            mem = int(Decimal(mem_text) * GIB) if mem_text else 80 * GIB
        except InvalidOperation:
            raise TraceError(f"{path}:{number}:{mcol}: gpu_memory_gib must be a number") from None
        product, pcol = _col(header, row, "gpu_product")
        if not product:
            raise TraceError(f"{path}:{number}:{pcol}: gpu_product is empty")
        out.append(
            PriceRow(
                _col(header, row, "provider")[0],
                _col(header, row, "kind")[0],
                product,
                mem,
                usd,
                _col(header, row, "as_of")[0],
            )
        )
    return tuple(out)


def in_cluster_prices(prices: tuple[PriceRow, ...]) -> dict[str, Decimal]:
    """The owned (in-cluster) amortised price per product."""
    return {p.gpu_product: p.usd_per_gpu_hour for p in prices if p.kind == "owned"}


def latest_offers(prices: tuple[PriceRow, ...], kinds: frozenset[str]) -> tuple[PriceRow, ...]:
    """One row per (provider, product) of ``kinds``: the newest, then the cheapest."""
    best: dict[tuple[str, str], PriceRow] = {}
    for p in prices:
        if p.kind not in kinds:
            continue
        key = (p.provider, p.gpu_product)
        cur = best.get(key)
        if cur is None or (p.as_of, -p.usd_per_gpu_hour) > (cur.as_of, -cur.usd_per_gpu_hour):
            best[key] = p
    return tuple(best[k] for k in sorted(best))
