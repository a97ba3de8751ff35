"""Local stand-ins for the external GPU networks, for tests, the demo and trying hybridgpu."""

from hybridgpu.standins.config import StandinConfig, default_config, load_config
from hybridgpu.standins.server import Standins, start_standins

__all__ = ["StandinConfig", "Standins", "default_config", "load_config", "start_standins"]
