"""How each network names a GPU, mapped to NVIDIA GPU Feature Discovery product names.

Vast.ai ``gpu_name`` values follow its offer listings ("RTX 4090", "H100 SXM"); Akash SDL
models are lower-case (``a100``, ``rtx4090``) with ``ram`` and ``interface``; Nosana markets
are named after the card. Products missing here are passed through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True, slots=True)
class GpuNames:
    """One product's names on each network."""

    product: str
    memory_gib: int
    vast: str
    akash_model: str
    akash_interface: str
    nosana: str


_TABLE = (
    GpuNames("NVIDIA-H100-80GB-HBM3", 80, "H100 SXM", "h100", "sxm", "NVIDIA H100 SXM"),
    GpuNames("NVIDIA-H100-PCIe", 80, "H100 PCIE", "h100", "pcie", "NVIDIA H100 PCIe"),
    GpuNames("NVIDIA-H100", 80, "H100", "h100", "", "NVIDIA H100"),
    GpuNames("NVIDIA-A100-SXM4-80GB", 80, "A100 SXM4", "a100", "sxm", "NVIDIA A100 80GB"),
    GpuNames("NVIDIA-A100-80GB-PCIe", 80, "A100 PCIE", "a100", "pcie", "NVIDIA A100 80GB PCIe"),
    GpuNames("NVIDIA-A100-SXM4-40GB", 40, "A100 SXM4", "a100", "sxm", "NVIDIA A100 40GB"),
    GpuNames("NVIDIA-GeForce-RTX-4090", 24, "RTX 4090", "rtx4090", "pcie", "NVIDIA 4090"),
    GpuNames("NVIDIA-L40S", 48, "L40S", "l40s", "pcie", "NVIDIA L40S"),
    GpuNames("NVIDIA-A10", 24, "A10", "a10", "pcie", "NVIDIA A10"),
    GpuNames("NVIDIA-RTX-A6000", 48, "RTX A6000", "a6000", "pcie", "NVIDIA A6000"),
    GpuNames("Tesla-T4", 16, "Tesla T4", "t4", "pcie", "NVIDIA T4"),
)
_BY_PRODUCT = {row.product: row for row in _TABLE}


def names_for(product: str) -> GpuNames:
    """The network names of a GFD product (a pass-through row for unknown products)."""
    row = _BY_PRODUCT.get(product)
    if row is not None:
        return row
    return GpuNames(product, 0, product, product.lower(), "", product)


def vast_names() -> list[str]:
    """The distinct Vast.ai ``gpu_name`` values of the known products, in table order."""
    return list(dict.fromkeys(row.vast for row in _TABLE))


def from_vast(gpu_name: str, gpu_ram_mb: int) -> str:
    """GFD product for a Vast.ai offer (``gpu_ram`` in MB tells 40GB from 80GB A100s)."""
    matches = [row for row in _TABLE if row.vast == gpu_name]
    if not matches:
        return gpu_name.replace(" ", "-")
    return min(matches, key=lambda row: abs(row.memory_gib * 1024 - gpu_ram_mb)).product


def from_akash(model: str, ram: str, interface: str) -> str:
    """GFD product for an Akash GPU model entry such as ``a100``/``80Gi``/``sxm``."""
    gib = int(ram.removesuffix("Gi")) if ram.removesuffix("Gi").isdigit() else 0
    matches = [row for row in _TABLE if row.akash_model == model.lower()]
    for row in matches:
        if row.memory_gib == gib and row.akash_interface == interface.lower():
            return row.product
    for row in matches:
        if row.memory_gib == gib or not gib:
            return row.product
    return matches[0].product if matches else model


def from_nosana(gpu: str) -> str:
    """GFD product for a Nosana market's GPU name."""
    for row in _TABLE:
        if row.nosana == gpu:
            return row.product
    return gpu.replace(" ", "-")
