"""Adapters for external GPU networks behind one protocol; see :mod:`hybridgpu.networks.base`."""

from hybridgpu.networks.base import (
    NetworkAdapter,
    RemoteRef,
    RemoteState,
    RemoteStatus,
    make_adapter,
)
from hybridgpu.networks.checkpoint import Checkpoint
from hybridgpu.networks.errors import (
    BadRequest,
    CircuitOpen,
    JobLost,
    MalformedAnswer,
    NetworkError,
    NotFound,
    PriceAboveCap,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from hybridgpu.networks.http import HttpPolicy

__all__ = [
    "BadRequest",
    "Checkpoint",
    "CircuitOpen",
    "HttpPolicy",
    "JobLost",
    "MalformedAnswer",
    "NetworkAdapter",
    "NetworkError",
    "NotFound",
    "PriceAboveCap",
    "RateLimited",
    "RemoteRef",
    "RemoteState",
    "RemoteStatus",
    "Unauthorized",
    "Unavailable",
    "make_adapter",
]
