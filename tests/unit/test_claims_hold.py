"""When an in-cluster attempt's GPUs are a reservation and when they are its Pod's."""

from __future__ import annotations

from typing import Any

from hybridgpu.controller.claims import job_hold

LONG = "a" * 200  # no label value: the Pods carry only the job's UID


def body(name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": "u-1"},
        "spec": {"gpu": {"count": 2}, "estimatedDuration": "1h"},
        "status": {
            "attempts": [{"attempt": 1, "backend": "InCluster", "outcome": "Pending", "gpus": 2}]
        },
    }


def test_without_a_pod_the_attempt_reserves_its_gpus() -> None:
    hold = job_hold(body(LONG), ())
    assert hold is not None and hold.reserve_gpus and hold.gpus == 2


def test_a_pod_found_by_uid_ends_the_reservation_even_for_a_long_name() -> None:
    hold = job_hold(body(LONG), {"u-1/1"})
    assert hold is not None and not hold.reserve_gpus
    # Only the attempt's own Pod counts: another attempt's does not.
    other = job_hold(body(LONG), {"u-1/2"})
    assert other is not None and other.reserve_gpus


def test_pods_of_earlier_versions_are_found_by_name() -> None:
    hold = job_hold(body("short"), {"ns/short/1"})
    assert hold is not None and not hold.reserve_gpus
