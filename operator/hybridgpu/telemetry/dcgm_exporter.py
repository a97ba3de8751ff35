"""Fake GPUs of (KWOK) nodes, reported in NVIDIA dcgm-exporter's text format.

Each GPU node yields ``nvidia.com/gpu`` allocatable devices; Running pods bound to the node take
device indexes in a stable order (by namespace/name), as the device plugin would hand them out.
A held GPU reports a deterministic utilisation in 70-95 % with a little noise that changes every
``NOISE_PERIOD_S`` seconds; a free one reports 0. Framebuffer use follows from the node's GPU
memory (GFD label ``nvidia.com/gpu.memory``).

The exposition mirrors dcgm-exporter's Go template (``internal/pkg/rendermetrics``): per counter
``# HELP``/``# TYPE`` then one line per GPU with labels ``gpu, UUID, pci_bus_id, device,
modelName, Hostname``, then the "label" counters (``DCGM_FI_DRIVER_VERSION``), then, only when a
pod holds the GPU, the attribution labels ``container, namespace, pod`` (sorted, like Go's map
iteration in templates). Counters, types and help texts come from ``default-counters.csv``, a
copy of dcgm-exporter's ``etc/default-counters.csv``.

Faults are injected as DCGM's own ``dcgmi test --inject`` does, by field and value: a faults
document maps ``NODE`` (every GPU of it) or ``NODE/INDEX`` (one GPU) to ``{DCGM field: value}``,
e.g. ``{"t1/0": {"DCGM_FI_DEV_XID_ERRORS": 79}}``; those values replace the made-up ones.
``DCGM_EXP_GPU_HEALTH_STATUS`` (0 pass, 10 warn, 20 fail) appears only when the counters
enable it, as with the real exporter.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hybridgpu.inventory.pools import NodeRecord, PodRecord

DEFAULT_DRIVER_VERSION = "535.129.03"
NOISE_PERIOD_S = 10.0
BOOT_TIME = 1_764_000_000.0  # 2025-11-24, a made-up boot time for the energy counter
BUSY_MIN, BUSY_MAX = 70, 95
PROMETHEUS_TYPES = frozenset({"gauge", "counter", "label"})

# NVML model names (what dcgm-exporter puts in modelName) for GFD product labels; GFD derives the
# label by turning the name's spaces into dashes, which is not reversible on its own.
NVML_MODEL_NAMES: dict[str, str] = {
    "NVIDIA-A10": "NVIDIA A10",
    "NVIDIA-A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB": "NVIDIA A100-SXM4-80GB",
    "NVIDIA-A100-80GB-PCIe": "NVIDIA A100 80GB PCIe",
    "NVIDIA-H100-80GB-HBM3": "NVIDIA H100 80GB HBM3",
    "NVIDIA-L4": "NVIDIA L4",
    "NVIDIA-L40S": "NVIDIA L40S",
    "Tesla-P100-PCIE-16GB": "Tesla P100-PCIE-16GB",
    "Tesla-T4": "Tesla T4",
    "Tesla-V100-SXM2-16GB": "Tesla V100-SXM2-16GB",
    "Tesla-V100-SXM2-32GB": "Tesla V100-SXM2-32GB",
}

# DCGM fields whose values are doubles; dcgm-exporter prints those with Go's %f.
_DOUBLE_FIELDS = frozenset(
    {
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_SM_ACTIVE",
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
    }
)


Faults = Mapping[str, Mapping[str, float]]
"""``NODE`` or ``NODE/INDEX`` -> {DCGM field name: injected value}."""


class FaultsError(ValueError):
    """A faults document that cannot be used (the message names the key)."""


def parse_faults(doc: object, source: str = "faults") -> dict[str, dict[str, float]]:
    """Validate a faults document: ``{"NODE[/INDEX]": {"DCGM_...": number}}``."""
    if not isinstance(doc, dict):
        raise FaultsError(f"{source}: expected an object of NODE or NODE/INDEX keys")
    out: dict[str, dict[str, float]] = {}
    for key, fields in doc.items():
        node, _, index = str(key).partition("/")
        if not node or (index and not index.isdigit()):
            raise FaultsError(f"{source}: key {key!r} must be NODE or NODE/INDEX")
        if not isinstance(fields, dict):
            raise FaultsError(f"{source}: {key}: expected an object of DCGM field values")
        values: dict[str, float] = {}
        for field, value in fields.items():
            if not str(field).startswith("DCGM_"):
                raise FaultsError(f"{source}: {key}.{field}: not a DCGM field name")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultsError(f"{source}: {key}.{field}: must be a number, got {value!r}")
            values[str(field)] = float(value)
        out[str(key)] = values
    return out


def injected(gpu: FakeGpu, faults: Faults | None) -> Mapping[str, float]:
    """The injected values for ``gpu``: its node's, then its own on top."""
    if not faults:
        return {}
    return {**faults.get(gpu.node, {}), **faults.get(f"{gpu.node}/{gpu.index}", {})}


class CountersFileError(ValueError):
    """The counters CSV is malformed (the message names line and column)."""


@dataclass(frozen=True, slots=True)
class Counter:
    """One line of dcgm-exporter's counters CSV."""

    field: str
    prom_type: str
    help: str


@dataclass(frozen=True, slots=True)
class FakeGpu:
    """One GPU of one node, and the pod holding it (if any)."""

    node: str
    index: int
    product: str
    memory_mib: int
    holder: PodRecord | None = None

    @property
    def uuid(self) -> str:
        """Stable per node and index, shaped like NVML's ``GPU-xxxxxxxx-...``."""
        return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{self.node}.gpu{self.index}.hybridgpu')}"

    @property
    def model_name(self) -> str:
        return NVML_MODEL_NAMES.get(self.product, self.product.replace("-", " ", 1))

    @property
    def pci_bus_id(self) -> str:
        return f"00000000:{0x07 + self.index * 0x10:02X}:00.0"


def parse_counters(text: str, source: str = "counters CSV") -> tuple[Counter, ...]:
    """Parse dcgm-exporter's counters CSV (``FIELD, type, help``; ``#`` starts a comment)."""
    counters: list[Counter] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = line.split(",", 2)
        if len(parts) != 3:
            raise CountersFileError(
                f"{source}:{lineno}:{len(line) + 1}: expected 'FIELD, type, help' (two commas)"
            )
        field, prom_type, help_text = (p.strip() for p in parts)
        if not field.startswith("DCGM_"):
            raise CountersFileError(f"{source}:{lineno}:1: {field!r} is not a DCGM field name")
        if prom_type not in PROMETHEUS_TYPES:
            column = len(parts[0]) + 2 + len(parts[1]) - len(parts[1].lstrip())
            raise CountersFileError(
                f"{source}:{lineno}:{column}: type {prom_type!r} is not one of "
                f"{sorted(PROMETHEUS_TYPES)}"
            )
        counters.append(Counter(field, prom_type, help_text))
    return tuple(counters)


def load_counters(path: Path | None = None) -> tuple[Counter, ...]:
    """The counters of ``path``, or of the bundled copy of dcgm-exporter's defaults."""
    if path is None:
        text = resources.files(__package__).joinpath("default-counters.csv").read_text()
        return parse_counters(text, "default-counters.csv")
    return parse_counters(path.read_text(), str(path))


def fake_gpus(nodes: Iterable[NodeRecord], pods: Iterable[PodRecord]) -> list[FakeGpu]:
    """Every GPU of every node, with Running pods bound to the node holding theirs."""
    by_node: dict[str, list[PodRecord]] = defaultdict(list)
    for pod in pods:
        if pod.node and pod.phase == "Running":
            by_node[pod.node].append(pod)
    gpus: list[FakeGpu] = []
    for node in sorted(nodes, key=lambda n: n.name):
        holders: list[PodRecord] = []
        for pod in sorted(by_node.get(node.name, ()), key=lambda p: p.key):
            holders.extend([pod] * pod.gpus)
        gpus.extend(
            FakeGpu(
                node=node.name,
                index=i,
                product=node.gpu_product,
                memory_mib=node.memory_mib,
                holder=holders[i] if i < len(holders) else None,
            )
            for i in range(node.allocatable)
        )
    return gpus


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def gpu_utilization(gpu: FakeGpu, now: float, noise: float = 3.0) -> int:
    """Percent busy: 0 when free; else a per-GPU base in 70-95 moved by up to ``noise``."""
    if gpu.holder is None:
        return 0
    base = BUSY_MIN + _unit(gpu.uuid, gpu.holder.key) * (BUSY_MAX - BUSY_MIN)
    jitter = (_unit(gpu.uuid, int(now // NOISE_PERIOD_S)) * 2 - 1) * noise
    return round(min(max(base + jitter, BUSY_MIN), BUSY_MAX))


def framebuffer_mib(gpu: FakeGpu) -> tuple[int, int, int]:
    """(used, free, reserved) MiB; a held GPU has 55-90 % of its memory in use."""
    reserved = min(gpu.memory_mib, round(gpu.memory_mib * 0.006))
    usable = gpu.memory_mib - reserved
    used = 0 if gpu.holder is None else round(usable * (0.55 + 0.35 * _unit(gpu.uuid, "fb")))
    return used, usable - used, reserved


def gpu_values(gpu: FakeGpu, now: float, noise: float = 3.0) -> dict[str, float]:
    """Plausible values of every default counter for ``gpu`` at ``now`` (Unix seconds)."""
    util = gpu_utilization(gpu, now, noise)
    used, free, reserved = framebuffer_mib(gpu)
    busy = util / 100
    power = 60.0 + 240.0 * busy + _unit(gpu.uuid, "power", int(now // NOISE_PERIOD_S)) * 5
    return {
        "DCGM_FI_DEV_SM_CLOCK": 1410 if util else 210,
        "DCGM_FI_DEV_MEM_CLOCK": 1593,
        "DCGM_FI_DEV_MEMORY_TEMP": round(34 + 30 * busy),
        "DCGM_FI_DEV_GPU_TEMP": round(31 + 35 * busy),
        "DCGM_FI_DEV_POWER_USAGE": power,
        # A counter must only grow: charge a flat 150 W since a fixed "boot" time.
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": round(max(now - BOOT_TIME, 0) * 150_000),
        "DCGM_FI_DEV_GPU_UTIL": util,
        "DCGM_FI_DEV_MEM_COPY_UTIL": round(util * 0.45),
        "DCGM_FI_DEV_FB_FREE": free,
        "DCGM_FI_DEV_FB_USED": used,
        "DCGM_FI_DEV_FB_RESERVED": reserved,
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": busy * 0.98,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": busy * 0.6,
        "DCGM_FI_PROF_DRAM_ACTIVE": busy * 0.5,
        "DCGM_FI_PROF_PCIE_TX_BYTES": round(busy * 2.5e8),
        "DCGM_FI_PROF_PCIE_RX_BYTES": round(busy * 4.0e8),
        # Healthy unless a fault is injected: no XID, no remapped rows, DCGM health PASS.
        "DCGM_FI_DEV_XID_ERRORS": 0,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
        "DCGM_EXP_GPU_HEALTH_STATUS": 0,
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(field: str, value: float) -> str:
    if field in _DOUBLE_FIELDS:
        return f"{value:f}"
    return str(round(value))


def _labels(gpu: FakeGpu, static_labels: Mapping[str, str]) -> str:
    pairs = [
        ("gpu", str(gpu.index)),
        ("UUID", gpu.uuid),
        ("pci_bus_id", gpu.pci_bus_id),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", gpu.model_name),
        ("Hostname", gpu.node),
        *sorted(static_labels.items()),
    ]
    if gpu.holder is not None:
        pairs += [
            ("container", gpu.holder.container),
            ("namespace", gpu.holder.namespace),
            ("pod", gpu.holder.name),
        ]
    return ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)


def render_metrics(
    gpus: Iterable[FakeGpu],
    now: float,
    counters: Iterable[Counter] | None = None,
    *,
    driver_version: str = DEFAULT_DRIVER_VERSION,
    noise: float = 3.0,
    faults: Faults | None = None,
) -> str:
    """The ``/metrics`` body for ``gpus`` at ``now``: one block per counter, one line per GPU."""
    counter_list = tuple(counters) if counters is not None else load_counters()
    # Of the "label" fields only the driver version has a value we can make up credibly.
    label_fields = {c.field for c in counter_list if c.prom_type == "label"}
    static_labels = dict.fromkeys(label_fields & {"DCGM_FI_DRIVER_VERSION"}, driver_version)
    rows = [
        (gpu, _labels(gpu, static_labels), {**gpu_values(gpu, now, noise), **injected(gpu, faults)})
        for gpu in gpus
    ]
    out: list[str] = []
    for counter in counter_list:
        if counter.prom_type == "label":
            continue
        out.append(f"# HELP {counter.field} {counter.help}")
        out.append(f"# TYPE {counter.field} {counter.prom_type}")
        for _gpu, labels, values in rows:
            value = _format_value(counter.field, values.get(counter.field, 0))
            out.append(f"{counter.field}{{{labels}}} {value}")
    return "\n".join(out) + "\n"
