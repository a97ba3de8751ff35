"""GPU model codes of the Alibaba GPU trace (cluster-trace-gpu-v2023) mapped to NVIDIA products.

This is the single source of truth for that mapping: ``hack/load-gpu-nodes.py`` imports it to
label fake nodes, and the operator uses it to reason about trace workloads. Stdlib only, so the
hack scripts can import it without the project's virtualenv.

``TRACE_GPU_PRODUCTS[code] == (product, memory_mib)`` where

* ``product`` is the value NVIDIA GPU Feature Discovery (GFD) puts in the node label
  ``nvidia.com/gpu.product``: the NVML product name with spaces replaced by ``-``
  (e.g. ``Tesla-T4``, ``NVIDIA-A10``);
* ``memory_mib`` is the value of the GFD label ``nvidia.com/gpu.memory``: the per-GPU framebuffer
  size in MiB as NVML reports it (a little less than the marketing size for some boards).

The trace's codes ``V100M16``/``V100M32``/``P100``/``T4``/``A10`` are disclosed models; the
form factors (SXM2 for V100, PCIe for P100) are our choice, matching what Alibaba Cloud's
8-GPU V100 instance families and its P100 instances used. ``G2`` and ``G3`` are *undisclosed*
internal codes ("G1, G2, G3 are undisclosed internal GPU codes", trace README). Mapping them to
A100 SXM4 40GB/80GB is an ASSUMPTION, documented in hack/README.md: both only ever appear as
8-GPU nodes with more host CPU and memory than the V100 boxes (G2: 96 cores/384 GiB, G3:
128 cores/768 GiB), which fits the datacenter generation after V100, and G3's doubled host
memory mirrors A100 40GB -> 80GB. Nothing in hybridgpu may depend on these two being right.
"""

from __future__ import annotations

TRACE_GPU_PRODUCTS: dict[str, tuple[str, int]] = {
    "A10": ("NVIDIA-A10", 23028),
    "G2": ("NVIDIA-A100-SXM4-40GB", 40960),  # assumption: undisclosed code
    "G3": ("NVIDIA-A100-SXM4-80GB", 81920),  # assumption: undisclosed code
    "P100": ("Tesla-P100-PCIE-16GB", 16280),
    "T4": ("Tesla-T4", 15360),
    "V100M16": ("Tesla-V100-SXM2-16GB", 16160),
    "V100M32": ("Tesla-V100-SXM2-32GB", 32510),
}

# GFD's ``nvidia.com/gpu.family`` label (architecture) for each product above.
GPU_PRODUCT_FAMILY: dict[str, str] = {
    "NVIDIA-A10": "ampere",
    "NVIDIA-A100-SXM4-40GB": "ampere",
    "NVIDIA-A100-SXM4-80GB": "ampere",
    "Tesla-P100-PCIE-16GB": "pascal",
    "Tesla-T4": "turing",
    "Tesla-V100-SXM2-16GB": "volta",
    "Tesla-V100-SXM2-32GB": "volta",
}
