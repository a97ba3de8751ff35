"""Operator settings, from the environment (the Helm chart sets these) or `hybridgpu run` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hybridgpu.results.store import StoreConfig


@dataclass
class Settings:
    prometheus_url: str = ""
    """Prometheus with DCGM exporter series; empty means routing on GPU requests alone."""
    metrics_port: int = 8080
    """Port of the operator's own /metrics (0 turns it off)."""
    telemetry_interval: float = 15.0
    telemetry_stale_after: float = 60.0
    """Seconds after its scrape that a DCGM sample stops counting (four of dcgm-exporter's
    default 15 s ServiceMonitor intervals); then routing falls back to requests."""
    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)
    """Namespaces to watch for InferenceJobs and RoutingPolicies; empty means all."""
    log_format: str = "json"
    peer_identity: str = ""
    """This process's Kopf peer id (set by `hybridgpu run`)."""
    peering_name: str | None = None
    """The Kopf peering whose verdict the operator's own loops follow; None: standalone."""
    peering_priority: int = 0
    results_bucket: str = ""
    """The default result store's bucket; empty means no default store."""
    results_endpoint: str = ""
    """Its S3 endpoint (http(s)://host:port); empty means AWS S3."""
    results_prefix: str = "hybridgpu"
    results_region: str = "us-east-1"
    results_access_key_id: str = field(default="", repr=False)
    results_secret_access_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            prometheus_url=env.get("HYBRIDGPU_PROMETHEUS_URL", ""),
            metrics_port=int(env.get("HYBRIDGPU_METRICS_PORT", "8080")),
            telemetry_interval=float(env.get("HYBRIDGPU_TELEMETRY_INTERVAL", "15")),
            telemetry_stale_after=float(env.get("HYBRIDGPU_TELEMETRY_STALE_AFTER", "60")),
            kubeconfig=env.get("KUBECONFIG") or None,
            namespaces=[n for n in env.get("HYBRIDGPU_NAMESPACES", "").split(",") if n],
            log_format=env.get("HYBRIDGPU_LOG_FORMAT", "json"),
            results_bucket=env.get("HYBRIDGPU_RESULTS_BUCKET", ""),
            results_endpoint=env.get("HYBRIDGPU_RESULTS_ENDPOINT", ""),
            results_prefix=env.get("HYBRIDGPU_RESULTS_PREFIX", "hybridgpu"),
            results_region=env.get("HYBRIDGPU_RESULTS_REGION", "us-east-1"),
            # From the Secret the chart names (results.credentialsSecret), by these keys.
            results_access_key_id=env.get("HYBRIDGPU_RESULTS_ACCESS_KEY_ID", ""),
            results_secret_access_key=env.get("HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY", ""),
        )

    def result_store(self) -> StoreConfig | None:
        """The default result store, when one is configured."""
        if not self.results_bucket:
            return None
        return StoreConfig(
            bucket=self.results_bucket,
            prefix=self.results_prefix,
            endpoint=self.results_endpoint,
            region=self.results_region,
            access_key_id=self.results_access_key_id,
            secret_access_key=self.results_secret_access_key,
        )


SETTINGS = Settings.from_env()
"""The process's settings; `hybridgpu run` updates them from its flags before Kopf starts."""
