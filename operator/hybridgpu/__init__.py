"""hybridgpu: route inference jobs between in-cluster GPUs and decentralized GPU networks."""

__version__ = "0.1.0"
