"""A job deferred for price takes the cheap network as soon as it frees, end to end.

The stand-in Nosana offers a single RTX 4090 here (its others stay as in harness.standin_config:
Vast.ai 0.34, Akash 0.39 USD/GPU-hour against Nosana's 0.29). While one job holds it, a second
job under a policy allowing a 10% premium must wait rather than pay 17% more on Vast.ai; when
the first job ends, capacity frees on Nosana and the second is dispatched there within seconds,
not after the deferral's 6 h re-check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.harness import condition, get, wait_for
from tests.e2e.test_operator import EXTERNAL_ONLY, PREFIX, RTX4090, _answers, _job, _phase, _policy

pytestmark = pytest.mark.e2e
NOSANA = f"{PREFIX}nosana"


@pytest.fixture(scope="module")
def one_gpu_on_nosana(
    cluster: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Process]:
    config = harness.standin_config(tmp_path_factory.mktemp("standins") / "standins.yaml")
    doc = yaml.safe_load(config.read_text())
    for offer in doc["offers"]:
        if offer["network"] == "nosana":
            offer["available"] = 1
    config.write_text(yaml.safe_dump(doc))
    standins = harness.standins_process(config)
    standins.start()
    wait_for("stand-ins", lambda: _answers("nosana"), timeout=30)
    harness.install_providers(PREFIX)
    operator = harness.operator_process()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    operator.start()
    wait_for(
        "providers refreshed by this operator",
        lambda: all(
            (get("cp", f"{PREFIX}{n}").get("status") or {}).get("lastRefreshTime", "") >= started
            for n in ("nosana", "vastai", "akash")
        ),
        timeout=60,
    )
    yield operator
    operator.kill()
    standins.kill()


def _nosana_free() -> int:
    offers = (get("cp", NOSANA).get("status") or {}).get("offers") or []
    return sum(int(o.get("available") or 0) for o in offers)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_deferred_job_takes_the_cheap_network_once_it_frees(
    one_gpu_on_nosana: Any, namespace: str
) -> None:
    _policy(namespace, **EXTERNAL_ONLY, deferral={"maxPremiumPercent": 10})
    # About 15 s of real time at the stand-ins' time scale of 240.
    _job(namespace, "holder", gpu=RTX4090, estimatedDuration="1h")
    wait_for("holder running", lambda: _phase(namespace, "holder") == "Running", timeout=90)
    holder = get("ij", "holder", namespace)
    assert holder["status"]["attempts"][0]["provider"] == NOSANA
    wait_for("Nosana's offer to show no GPU free", lambda: _nosana_free() == 0, timeout=30)

    _job(namespace, "patient", gpu=RTX4090)
    wait_for(
        "a decision on patient",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("decision"),
        timeout=60,
    )
    status = get("ij", "patient", namespace)["status"]
    assert status["decision"]["outcome"] == "Wait", status["decision"]
    routed = condition(get("ij", "patient", namespace), "Routed")
    assert routed is not None and routed["reason"] == "DeferredForPrice", routed
    assert not status.get("attempts"), status["attempts"]

    wait_for("holder to finish", lambda: _phase(namespace, "holder") == "Succeeded", timeout=120)
    finished = _time(get("ij", "holder", namespace)["status"]["completionTime"])
    attempts = wait_for(
        "patient to be dispatched",
        lambda: (get("ij", "patient", namespace).get("status") or {}).get("attempts"),
        timeout=60,
    )
    assert [a["provider"] for a in attempts] == [NOSANA], attempts
    waited = (_time(attempts[0]["startTime"]) - finished).total_seconds()
    assert waited < 30, f"dispatched {waited:.0f}s after the GPU freed"
