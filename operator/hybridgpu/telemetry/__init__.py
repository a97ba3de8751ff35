"""A stand-in for NVIDIA dcgm-exporter that reports fake GPUs of (KWOK) nodes for local runs."""
