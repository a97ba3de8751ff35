"""How a job step says "never" or "not yet" without knowing about Kopf."""

from __future__ import annotations


class PermanentJobError(Exception):
    """This job's input can never succeed: the job fails with this message."""

    def __init__(self, message: str, reason: str = "InvalidInput") -> None:
        super().__init__(message)
        self.reason = reason


class TemporaryJobError(Exception):
    """Not yet: try this job again in ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 30.0) -> None:
        super().__init__(message)
        self.delay = delay


class UnreadableStatus(PermanentJobError):
    """The job's stored status does not parse as the API's model (edited by hand, or written
    by a broken version): the job fails naming the field rather than blocking the others."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="InvalidStatus")
