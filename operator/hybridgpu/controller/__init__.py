"""The operator's moving parts between Kopf and the pure core: provider registry, snapshot
building, the per-job reconcile step, spend accounting and metrics. Kopf itself stays in
``hybridgpu.handlers``."""
