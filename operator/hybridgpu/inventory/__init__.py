"""The cluster's own GPUs: Node/Pod inventory (pure) and DCGM telemetry read from Prometheus."""
