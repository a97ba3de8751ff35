"""Kopf's diff base is built only for the kinds that have change handlers or daemons."""

from __future__ import annotations

import kopf

import hybridgpu.handlers  # noqa: F401 - registers the handlers
from hybridgpu.handlers.diffbase import CHANGING_KINDS, ChangingKindsDiffBase

STORAGE = ChangingKindsDiffBase(prefix="hybridgpu.dev", ignored_fields=["spec"])


def body(kind: str) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"paused": True},
            "status": {"big": list(range(100))},
        }
    )


def test_other_kinds_get_an_empty_essence_and_providers_a_real_one() -> None:
    assert STORAGE.build(body=body("InferenceJob")) == {}
    assert STORAGE.fetch(body=body("InferenceJob")) == {}
    assert STORAGE.build(body=body("ComputeProvider")) == {"metadata": {"labels": {"a": "b"}}}


def test_the_kinds_are_those_with_change_handlers_or_daemons() -> None:
    """A new on.create/on.update/daemon for another resource must add its kind here."""
    registry = kopf.get_default_registry()
    plurals = {
        h.selector.any_name
        for reg in (registry._changing, registry._spawning)
        for h in reg.get_all_handlers()
        if h.selector is not None
    }
    assert plurals == {"computeproviders"}
    assert {"ComputeProvider"} == CHANGING_KINDS
