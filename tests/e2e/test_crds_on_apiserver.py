"""The CRDs on the real API server: examples accepted, wrong manifests rejected by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cluster import REPO_ROOT, kubectl
from tests.hostile.corpus import FAILED_BY_OPERATOR, REJECTED_BY_APISERVER, HostileJob

pytestmark = pytest.mark.e2e


def _job(name: str, **spec: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task": "llm",
        "model": "m",
        "input": {"requests": 1},
        "estimatedDuration": "10m",
    }
    base.update(spec)
    return {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name},
        "spec": base,
    }


def _apply(ns: str, doc: dict[str, object], check: bool = False) -> tuple[int, str]:
    result = kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc), check=check)
    return result.returncode, result.stdout + result.stderr


def test_every_example_is_accepted(namespace: str) -> None:
    kinds = set()
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        docs = [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d["apiVersion"].startswith("hybridgpu.dev/")
        ]
        if not docs:
            continue
        for doc in docs:
            if doc["kind"] in ("InferenceJob", "RoutingPolicy"):
                doc["metadata"]["namespace"] = namespace
            kinds.add(doc["kind"])
        text = "\n---\n".join(json.dumps(d) for d in docs)
        out = kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
        assert out.returncode == 0, f"{path.name}: {out.stderr}"
    assert {"InferenceJob", "RoutingPolicy", "ComputeProvider"} <= kinds


def test_defaults_are_filled_in_by_the_server(namespace: str) -> None:
    code, out = _apply(namespace, _job("defaults"))
    assert code == 0, out
    got = json.loads(kubectl("get", "ij", "defaults", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["gpu"] == {"count": 1}
    assert got["spec"]["placement"] == "Any"
    assert got["spec"]["policyRef"] == "default"


def test_policy_deferral_is_off_unless_given_and_defaulted_when_given(namespace: str) -> None:
    def policy(name: str, **spec: object) -> dict[str, object]:
        return {
            "apiVersion": "hybridgpu.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }

    for doc in (policy("plain"), policy("deferring", deferral={"maxPremiumPercent": 5})):
        code, out = _apply(namespace, doc)
        assert code == 0, out
    got = {
        name: json.loads(kubectl("get", "rp", name, "-n", namespace, "-o", "json").stdout)["spec"]
        for name in ("plain", "deferring")
    }
    assert "deferral" not in got["plain"]
    assert "providerSelector" not in got["plain"]["external"]
    assert got["deferring"]["deferral"] == {"maxPremiumPercent": 5, "maxWait": "336h"}
    code, out = _apply(namespace, policy("bad", deferral={"maxWait": "soon"}))
    assert code != 0 and "spec.deferral.maxWait" in out


@pytest.mark.parametrize(
    ("name", "spec", "field", "words"),
    [
        (
            "no-image",
            {"task": "container", "model": None},
            "spec.image",
            "required when spec.task is container",
        ),
        ("no-model", {"model": None}, "spec.model", "required unless spec.task is container"),
        ("bad-task", {"task": "painting"}, "spec.task", "Unsupported value"),
        ("too-many-gpus", {"gpu": {"count": 9}}, "spec.gpu.count", "less than or equal to 8"),
        ("float-price", {"maxPricePerGPUHour": 2.5}, "spec.maxPricePerGPUHour", "string"),
        ("bad-money", {"maxCost": "ten"}, "spec.maxCost", "should match"),
        ("bad-duration", {"estimatedDuration": "soon"}, "spec.estimatedDuration", "should match"),
        ("empty-products", {"gpu": {"products": []}}, "spec.gpu.products", "at least 1"),
        (
            "both-inputs",
            {
                "input": {
                    "requests": 1,
                    "inline": [{"a": 1}],
                    "configMapRef": {"name": "c", "key": "k"},
                }
            },
            "spec.input.source",
            "at most one of source, inline and configMapRef",
        ),
        (
            "load-test-with-a-source",
            {"input": {"requests": 1, "loadTest": True, "source": "s3://bucket/in.jsonl"}},
            "spec.input.loadTest",
            "loadTest builds synthetic requests",
        ),
        (
            "bad-source-url",
            {"input": {"requests": 1, "source": "http://bucket/in.jsonl"}},
            "spec.input.source",
            "should match",
        ),
    ],
)
def test_wrong_manifests_are_rejected_naming_the_field(
    namespace: str, name: str, spec: dict[str, object], field: str, words: str
) -> None:
    doc = _job(name, **spec)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}  # type: ignore[union-attr]
    code, out = _apply(namespace, doc)
    assert code != 0, f"{name} was accepted"
    assert field in out, out
    assert words in out, out


def test_task_and_gpu_are_immutable(namespace: str) -> None:
    code, out = _apply(namespace, _job("fixed", gpu={"count": 1}))
    assert code == 0, out
    code, out = _apply(namespace, _job("fixed", task="upscale"))
    assert code != 0 and "spec.task is immutable" in out, out
    code, out = _apply(namespace, _job("fixed", gpu={"count": 2}))
    assert code != 0 and "spec.gpu is immutable" in out, out
    code, out = _apply(namespace, _job("fixed", maxCost="3.00"))
    assert code == 0, out  # other fields may change


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model": "other"}, "spec.model is immutable"),
        ({"input": {"requests": 2}}, "spec.input is immutable"),
        ({"env": [{"name": "A", "value": "2"}]}, "spec.env is immutable"),
        ({"args": ["--more"]}, "cannot be added or removed"),
        ({"env": None}, "cannot be added or removed"),
        ({"output": {"uri": "s3://bucket/results/"}}, "cannot be added or removed"),
    ],
)
def test_what_a_job_runs_is_immutable_as_a_job_template_is(
    namespace: str, change: dict[str, object], words: str
) -> None:
    """Lookups, cancels and results are made from the spec, so what was dispatched stays."""
    base = {"env": [{"name": "A", "value": "1"}], "maxCost": "5.00"}
    code, out = _apply(namespace, _job("frozen", **base))
    assert code == 0, out
    changed = _job("frozen", **{**base, **change})
    changed["spec"] = {k: v for k, v in changed["spec"].items() if v is not None}  # type: ignore[union-attr]
    code, out = _apply(namespace, changed)
    assert code != 0 and words in out, out
    code, out = _apply(namespace, _job("frozen", **{**base, "maxCost": "4.00", "suspend": True}))
    assert code == 0, out  # routing knobs may change


def test_provider_endpoint_must_be_https_off_loopback(cluster: Path) -> None:
    doc = {
        "apiVersion": "hybridgpu.dev/v1alpha1",
        "kind": "ComputeProvider",
        "metadata": {"name": "plain-http"},
        "spec": {"type": "akash", "endpoint": "http://console.example.com"},
    }
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False)
    assert out.returncode != 0
    assert "spec.endpoint" in out.stderr


def test_kubectl_explain_teaches_the_api(cluster: Path) -> None:
    text = kubectl("explain", "inferencejob.spec.gpu").stdout
    assert "count" in text and "minMemory" in text and "products" in text
    assert "GPU Feature Discovery" in text
    text = kubectl("explain", "routingpolicy.spec.budget.whenExceeded").stdout
    assert "InClusterOnly" in text


def test_short_names_and_category(namespace: str) -> None:
    code, out = _apply(namespace, _job("listed"))
    assert code == 0, out
    listed = kubectl("get", "hybridgpu", "-n", namespace).stdout
    assert "inferencejob.hybridgpu.dev/listed" in listed
    columns = kubectl("get", "ij", "-n", namespace).stdout.splitlines()[0].split()
    assert columns[:6] == ["NAME", "PHASE", "TARGET", "GPU", "RESULTS", "COST"]


@pytest.mark.parametrize("hostile", REJECTED_BY_APISERVER, ids=lambda h: h.name)
def test_a_job_beyond_its_bounds_is_rejected_naming_the_field(
    namespace: str, hostile: HostileJob
) -> None:
    code, out = _apply(namespace, _job(hostile.name, **hostile.spec))
    assert code != 0, f"{hostile.name} was accepted"
    assert hostile.field in out, out
    assert hostile.words in out, out


@pytest.mark.parametrize("hostile", FAILED_BY_OPERATOR, ids=lambda h: h.name)
def test_bounds_no_schema_holds_pass_the_api_server(namespace: str, hostile: HostileJob) -> None:
    # The operator refuses these when it reads them (tests/unit/test_job_limits.py).
    code, out = _apply(namespace, _job(hostile.name, **hostile.spec))
    assert code == 0, out


def test_a_job_at_its_bounds_is_accepted(namespace: str) -> None:
    code, out = _apply(
        namespace,
        _job(
            "at-bounds",
            input={"requests": 1_000_000, "inputTokens": 131_072, "outputTokens": 131_072},
            env=[{"name": "A", "value": "v" * 8192}],
            command=["sh"] * 32,
            estimatedDuration="8760h",
            startWithin="1.5h",
        ),
    )
    assert code == 0, out
