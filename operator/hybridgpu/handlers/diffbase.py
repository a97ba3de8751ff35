"""Kopf's diff base, built only for the kind that has change handlers and a daemon.

Kopf builds the "essence" of every object on every watch event (a deep copy of the whole
body, status included) to detect changes, whether or not any handler of the resource reacts
to changes. Here only ComputeProviders do (their daemon and delete handler); InferenceJobs,
Pods, batch Jobs, Nodes and RoutingPolicies have event handlers and indexes only. In a burst
of 1,000 jobs that copy was about a tenth of the operator's CPU (tests/bench/bench_operator.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

CHANGING_KINDS = frozenset({"ComputeProvider"})


class ChangingKindsDiffBase(kopf.AnnotationsDiffBaseStorage):
    """An annotations diff base for ``CHANGING_KINDS``; an empty one for every other kind."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        if body.get("kind") not in CHANGING_KINDS:
            return cast(Any, {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> Any:
        if body.get("kind") not in CHANGING_KINDS:
            return cast(Any, {})
        return super().fetch(body=body)
