"""`hybridgpu explain` renders a job's decision; the jobs-by-phase gauge stays exact."""

from __future__ import annotations

import io

from prometheus_client import REGISTRY

from hybridgpu.commands.explain import render
from hybridgpu.controller.metrics import PhaseTally

BODY = {
    "status": {
        "phase": "Running",
        "decision": {
            "time": "2026-11-28T12:00:00Z",
            "policy": "default",
            "outcome": "Routed",
            "target": "nosana/NVIDIA-GeForce-RTX-4090",
            "message": "routed to nosana/NVIDIA-GeForce-RTX-4090: estimated $0.29",
            "candidates": [
                {
                    "name": "nosana/NVIDIA-GeForce-RTX-4090",
                    "feasible": True,
                    "score": 0.91,
                    "estimatedCost": "0.29",
                    "pricePerGPUHour": "0.29",
                    "expectedStartSeconds": 20,
                    "reason": "Feasible",
                },
                {
                    "name": "in-cluster/Tesla-T4",
                    "feasible": False,
                    "estimatedCost": "0.2",
                    "reason": "ProductNotAllowed",
                },
            ],
        },
        "attempts": [
            {
                "attempt": 1,
                "provider": "vastai",
                "gpuProduct": "NVIDIA-GeForce-RTX-4090",
                "outcome": "Failed",
                "reason": "JobLost",
                "message": "gone",
                "cost": "0.01",
            },
        ],
    }
}


def test_explain_shows_the_ranked_candidates_the_target_and_the_attempts() -> None:
    out = io.StringIO()
    render("j", "ns", BODY, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "InferenceJob ns/j: Running"
    assert "by policy 'default': Routed" in lines[1]
    table = [line for line in lines if line[:2] in ("1 ", "2 ")]
    assert "nosana/NVIDIA-GeForce-RTX-4090 *" in table[0] and "yes" in table[0]
    assert "0.2900" in table[0] and "0.910" in table[0]
    assert "in-cluster/Tesla-T4" in table[1] and "ProductNotAllowed" in table[1]
    assert "  1. vastai NVIDIA-GeForce-RTX-4090 -> Failed (JobLost: gone), cost 0.01 USD" in lines


def test_explain_says_who_evicted_an_attempt_and_how_often() -> None:
    body = {
        "status": {
            **BODY["status"],
            "preemptions": 1,
            "attempts": [
                {
                    "attempt": 1,
                    "provider": "in-cluster",
                    "backend": "InCluster",
                    "gpuProduct": "A100",
                    "outcome": "Preempted",
                    "reason": "Preempted",
                    "message": "evicted",
                    "preemptedBy": "ns/urgent",
                },
            ],
        }
    }
    out = io.StringIO()
    render("j", "ns", body, out)
    lines = out.getvalue().splitlines()
    assert "  1. in-cluster A100 -> Preempted (Preempted: evicted), evicted for ns/urgent" in lines
    assert "  preempted 1 time(s)" in lines


def test_explain_without_a_decision() -> None:
    out = io.StringIO()
    render("j", "ns", {}, out)
    assert out.getvalue() == "InferenceJob ns/j: Pending\nNo routing decision yet.\n"


def _gauge(phase: str) -> float:
    return REGISTRY.get_sample_value("hybridgpu_jobs", {"phase": phase}) or 0.0


def test_the_phase_gauge_moves_jobs_between_phases_and_forgets_deleted_ones() -> None:
    tally = PhaseTally()
    before = {p: _gauge(p) for p in ("Pending", "Routed", "Succeeded")}
    tally.update("a", "Pending")
    tally.update("b", "Pending")
    tally.update("a", "Routed")
    assert _gauge("Pending") == before["Pending"] + 1
    assert _gauge("Routed") == before["Routed"] + 1
    tally.update("a", "Succeeded")
    tally.update("b", None)
    assert _gauge("Pending") == before["Pending"]
    assert _gauge("Routed") == before["Routed"]
    assert _gauge("Succeeded") == before["Succeeded"] + 1
