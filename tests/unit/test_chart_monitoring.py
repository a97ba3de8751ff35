"""Alerts and the dashboard query metrics the operator really exports."""

from __future__ import annotations

import json
import re

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from hybridgpu.controller import metrics
from hybridgpu.inventory import telemetry
from tests.unit import test_chart_render as chart

SERIES = re.compile(r"\b(hybridgpu_[a-z_]+|DCGM_FI_[A-Z_]+)\b")


def _exported() -> set[str]:
    """Series names of the operator's metrics, as Prometheus stores them."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        base = obj._name
        if isinstance(obj, Counter):
            names.add(base + "_total")
        elif isinstance(obj, Histogram):
            names.update(base + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(base)
    assert "hybridgpu_decisions_total" in names
    return names


def _known(name: str, exported: set[str]) -> bool:
    if name.startswith("DCGM_FI_"):
        return name in {telemetry.UTIL_METRIC, telemetry.FB_USED_METRIC, telemetry.FB_FREE_METRIC}
    return name in exported


def test_alerts_cover_the_issue_and_use_real_metrics() -> None:
    docs = chart.render(
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set-string",
        "metrics.prometheusRule.dailyBudget=250.00",
    )
    (rule,) = chart.of_kind(docs, "PrometheusRule")
    rules = rule["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r["expr"] for r in rules}
    assert {
        "HybridGPUOperatorDown",
        "HybridGPUJobsStuck",
        "HybridGPUProviderCircuitOpen",
        "HybridGPUExternalSpendHigh",
    } <= alerts.keys()
    assert "> 0.8 * 250.00" in alerts["HybridGPUExternalSpendHigh"]
    exported = _exported()
    for name, expr in alerts.items():
        used = SERIES.findall(expr)
        assert all(_known(m, exported) for m in used), (name, used)


def test_spend_alert_is_left_out_without_a_budget() -> None:
    (rule,) = chart.of_kind(
        chart.render("--set", "metrics.prometheusRule.enabled=true"), "PrometheusRule"
    )
    assert "HybridGPUExternalSpendHigh" not in {
        r["alert"] for r in rule["spec"]["groups"][0]["rules"]
    }


def test_dashboard_panels_use_real_metrics() -> None:
    docs = chart.render("--set", "metrics.dashboard.enabled=true")
    (cm,) = chart.of_kind(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["hybridgpu.json"])
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("phase", "latency", "spend", "Provider health", "GPU utilisation"):
        assert any(wanted in t for t in titles), wanted
    exported = _exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in SERIES.findall(e)}
    assert "DCGM_FI_DEV_GPU_UTIL" in used
    unknown = sorted(m for m in used if not _known(m, exported))
    assert unknown == []
