"""When an in-cluster attempt that has not started is given up and the job routed again.

One rule for the operator (``controller/reconcile.py``, on the wall clock) and the simulator
(``simulate/routers.py``, on its virtual clock): an attempt whose Pod is not running
``maxQueueTime`` after it was dispatched is deleted and the job decided again (``QueueTimeout``,
outcome ``Requeued``). The simulator used to re-route latency-sensitive jobs as soon as they
were later than the engine expected, which the operator never did.
"""

from __future__ import annotations

from hybridgpu.api.routingpolicy import RoutingPolicySpec

DEFAULT_REQUEUE_SECONDS = 300.0
"""Without a policy (it was deleted meanwhile): the default maxQueueTime."""


def requeue_after_seconds(policy: RoutingPolicySpec | None) -> float:
    """Seconds an in-cluster attempt may wait unscheduled before the job is routed again."""
    if policy is None:
        return DEFAULT_REQUEUE_SECONDS
    return policy.in_cluster.max_queue_time.total_seconds()
