"""Pydantic models of the hybridgpu.dev/v1alpha1 API: the one source of the CRDs."""

from hybridgpu.api.common import API_VERSION, GROUP, VERSION, Condition
from hybridgpu.api.computeprovider import (
    ComputeProvider,
    ComputeProviderSpec,
    ProviderType,
    TrustTier,
)
from hybridgpu.api.inferencejob import InferenceJob, InferenceJobSpec, Phase, Placement, Task
from hybridgpu.api.routingpolicy import RoutingPolicy, RoutingPolicySpec

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "ComputeProvider",
    "ComputeProviderSpec",
    "Condition",
    "InferenceJob",
    "InferenceJobSpec",
    "Phase",
    "Placement",
    "ProviderType",
    "RoutingPolicy",
    "RoutingPolicySpec",
    "Task",
    "TrustTier",
]
