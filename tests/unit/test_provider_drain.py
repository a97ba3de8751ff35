"""What keeps a deleted ComputeProvider until its work is settled (handlers/providers.py)."""

from __future__ import annotations

from typing import Any

from hybridgpu.controller.claims import owes_work_on


def body(
    attempts: list[dict[str, Any]], owed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"attempts": attempts}
    if owed is not None:
        status["pendingCancels"] = owed
    return {
        "metadata": {"namespace": "ns", "name": "j", "uid": "u1"},
        "spec": {"gpu": {"count": 1}, "estimatedDuration": "1h"},
        "status": status,
    }


def attempt(provider: str, outcome: str, backend: str = "External") -> dict[str, Any]:
    return {"attempt": 1, "provider": provider, "backend": backend, "outcome": outcome}


def test_an_active_external_attempt_holds_its_provider() -> None:
    assert owes_work_on(body([attempt("nosana", "Running")]), "nosana")
    assert owes_work_on(body([attempt("nosana", "Dispatching")]), "nosana")
    assert not owes_work_on(body([attempt("nosana", "Running")]), "vastai")


def test_an_ended_attempt_holds_it_only_while_its_cancel_is_owed() -> None:
    ended = [attempt("nosana", "Failed"), attempt("vastai", "Running")]
    assert not owes_work_on(body(ended), "nosana")
    owed = [{"provider": "nosana", "idempotencyKey": "u1-1", "attempt": 1}]
    assert owes_work_on(body(ended, owed), "nosana")
    assert not owes_work_on(body([attempt("nosana", "Succeeded")], []), "nosana")


def test_in_cluster_attempts_hold_no_provider() -> None:
    assert not owes_work_on(body([attempt("in-cluster", "Running", "InCluster")]), "in-cluster")
