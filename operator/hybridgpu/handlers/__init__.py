"""Kopf entry points. Importing this package registers every handler.

Handlers stay thin: they parse what Kopf gives them, call the controller, and let Kopf retry.
"""

from hybridgpu.handlers import indexes, jobs, policies, providers, startup

__all__ = ["indexes", "jobs", "policies", "providers", "startup"]
