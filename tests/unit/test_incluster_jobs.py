"""The in-cluster Job the operator builds: what it runs per task and what it may do."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.backends import incluster
from hybridgpu.backends.cluster_backend import attempt_pod
from hybridgpu.backends.incluster import ManifestError, job_manifest, job_name, owned_by

IN = "https://store.test/in.jsonl?X-Amz-Signature=a"
OUT = "https://store.test/out.jsonl?X-Amz-Signature=b"
CK = "https://store.test/checkpoint.jsonl?X-Amz-Signature=c"
RS = "https://store.test/checkpoint.jsonl?X-Amz-Signature=d"
ALL = {"input_url": IN, "output_url": OUT, "checkpoint_url": CK, "resume_url": RS}
UID = "0b9f3a8e-6c1d-4f7e-9a2b-3c4d5e6f7a8b"


def spec(**fields: Any) -> InferenceJobSpec:
    base: dict[str, Any] = {
        "task": "container",
        "image": "ghcr.io/acme/batch:1",
        "input": {"requests": 3},
        "gpu": {"count": 2},
        "estimatedDuration": "30m",
    }
    base.update(fields)
    return InferenceJobSpec.model_validate(base)


def build(s: InferenceJobSpec, **kw: Any) -> dict[str, Any]:
    return job_manifest(
        name=kw.pop("name", "batch"),
        namespace="team-a",
        uid=UID,
        spec=s,
        attempt=1,
        gpu_product="NVIDIA-L4",
        **kw,
    )


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_every_container_passes_pod_security_restricted() -> None:
    for s, urls in (
        (spec(), {}),
        (spec(task="llm", image=None, model="m"), {"input_url": IN, "output_url": OUT}),
        (spec(task="text-to-image", image=None, model="m"), {"input_url": IN, "output_url": OUT}),
    ):
        p = pod(build(s, **urls))
        assert p["automountServiceAccountToken"] is False
        context = p["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in p["containers"] + p.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True
        assert all("hostPath" not in v for v in p["volumes"])


def test_a_container_task_gets_the_urls_in_its_environment_and_its_own_command() -> None:
    job = build(spec(command=["python", "run.py"], args=["--fast"]), input_url=IN, output_url=OUT)
    (c,) = pod(job)["containers"]
    assert (c["command"], c["args"]) == (["python", "run.py"], ["--fast"])
    assert env(c)["HYBRIDGPU_INPUT_URL"] == IN and env(c)["HYBRIDGPU_OUTPUT_URL"] == OUT
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_a_container_task_without_urls_runs_as_before() -> None:
    (c,) = pod(build(spec()))["containers"]
    assert "HYBRIDGPU_INPUT_URL" not in env(c) and "command" not in c


def test_llm_runs_vllm_run_batch_on_the_urls_from_its_environment() -> None:
    s = spec(
        task="llm", image=None, model="Qwen/Qwen2.5-0.5B-Instruct", args=["--max-model-len", "4096"]
    )
    (c,) = pod(build(s, input_url=IN, output_url=OUT))["containers"]
    assert c["image"] == "vllm/vllm-openai:v0.11.0"
    assert c["command"] == [
        "vllm", "run-batch", "-i", "$(HYBRIDGPU_INPUT_URL)", "-o", "$(HYBRIDGPU_OUTPUT_URL)",
        "--output-tmp-dir", "/scratch", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
    ]  # fmt: skip
    assert c["args"] == ["--max-model-len", "4096"]
    assert env(c)["HYBRIDGPU_OUTPUT_URL"] == OUT and env(c)["HF_HOME"].startswith("/scratch")
    # The URLs are in the env only: the command names them, never holds them.
    assert IN not in " ".join(c["command"])


def test_text_to_image_runs_the_ai_runner_as_a_sidecar_fed_by_the_hybridgpu_runner() -> None:
    s = spec(task="text-to-image", image=None, model="stabilityai/sd-turbo")
    p = pod(build(s, input_url=IN, output_url=OUT))
    (server,) = p["initContainers"]
    (runner,) = p["containers"]
    assert server["restartPolicy"] == "Always"
    assert env(server)["PIPELINE"] == "text-to-image"
    assert env(server)["MODEL_ID"] == "stabilityai/sd-turbo"
    assert "HYBRIDGPU_INPUT_URL" not in env(server)  # the model server needs no URL
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert "resources" not in runner  # the GPUs are the ai-runner's
    assert runner["command"] == ["hybridgpu", "runner", "livepeer"]
    assert runner["args"][runner["args"].index("--input-url") + 1] == "$(HYBRIDGPU_INPUT_URL)"
    assert env(runner)["HYBRIDGPU_OUTPUT_URL"] == OUT


def test_a_model_task_without_urls_is_refused_rather_than_serving_forever() -> None:
    with pytest.raises(ManifestError) as err:
        build(spec(task="llm", image=None, model="m"))
    assert err.value.reason == "NoInputObject"
    assert str(err.value).startswith("spec.input:")


def test_media_upload_pipelines_run_in_cluster_only_as_container() -> None:
    with pytest.raises(ManifestError) as err:
        build(spec(task="image-to-video", image=None, model="m"), input_url=IN, output_url=OUT)
    assert err.value.reason == "InClusterUnsupported"
    assert str(err.value).startswith("spec.task: image-to-video")


@pytest.mark.parametrize(
    "name", ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "cuda_visible_devices",
             "ROCR_VISIBLE_DEVICES", "HYBRIDGPU_OUTPUT_URL"],
)  # fmt: skip
def test_env_that_picks_gpus_or_overrides_ours_is_refused_naming_the_field(name: str) -> None:
    s = spec(env=[{"name": "OK", "value": "1"}, {"name": name, "value": "all"}])
    with pytest.raises(ManifestError) as err:
        build(s)
    assert err.value.reason == "InvalidInput"
    assert str(err.value).startswith(f"spec.env[1].name: {name}")


def test_the_image_allowlist_refuses_other_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGPU_IMAGE_ALLOWLIST", '["ghcr.io/acme/*", "vllm/vllm-openai:*"]')
    build(spec(image="ghcr.io/acme/batch:2"))
    with pytest.raises(ManifestError) as err:
        build(spec(image="docker.io/evil/miner:1"))
    assert err.value.reason == "ImageNotAllowed"
    assert str(err.value).startswith("spec.image: docker.io/evil/miner:1")
    # Runtime images are the admin's: a model task without spec.image is not checked.
    build(spec(task="llm", image=None, model="m"), input_url=IN, output_url=OUT)
    monkeypatch.setenv("HYBRIDGPU_IMAGE_ALLOWLIST", "ghcr.io/acme/*")
    with pytest.raises(ManifestError) as err:
        build(spec())
    assert err.value.reason == "OperatorMisconfigured"


def test_tolerations_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pod(build(spec()))["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    monkeypatch.setenv("HYBRIDGPU_GPU_TOLERATION", "gpu:NoExecute")
    extra = {"key": "pool", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    monkeypatch.setenv("HYBRIDGPU_JOB_TOLERATIONS", f"[{__import__('json').dumps(extra)}]")
    assert pod(build(spec()))["tolerations"] == [
        {"key": "gpu", "operator": "Equal", "value": "", "effect": "NoExecute"},
        extra,
    ]
    monkeypatch.setenv("HYBRIDGPU_JOB_TOLERATIONS", '[{"operator": "Exists"}]')
    with pytest.raises(ManifestError, match=r"HYBRIDGPU_JOB_TOLERATIONS\[0\]"):
        build(spec())
    monkeypatch.setenv("HYBRIDGPU_GPU_TOLERATION", "nvidia.com/gpu")
    with pytest.raises(ManifestError, match="HYBRIDGPU_GPU_TOLERATION"):
        build(spec())


def test_the_deadline_is_the_estimate_times_the_run_time_factor_plus_queue_time() -> None:
    job = build(spec(), max_run_time_factor=3.0, max_queue_time=timedelta(minutes=2))
    assert job["spec"]["activeDeadlineSeconds"] == 30 * 60 * 3 + 120
    # Without a policy: RoutingPolicy's defaults (factor 2, maxQueueTime 5m).
    assert build(spec())["spec"]["activeDeadlineSeconds"] == 30 * 60 * 2 + 300


def test_job_names_come_from_the_uid_and_fit_any_job_name() -> None:
    long = "a" * 200
    job = build(spec(), name=long)
    assert job["metadata"]["name"] == job_name(UID, 1) == f"hybridgpu-{UID}-a1"
    assert len(job_name(UID, 10)) <= 63
    # A name too long for a label is left out of the labels; the UID label finds the Pods.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert incluster.LABEL_JOB not in labels and labels[incluster.LABEL_UID] == UID
    assert (
        build(spec(), name="a.b")["metadata"]["name"]
        != job_manifest(
            name="a-b", namespace="team-a", uid="other-uid", spec=spec(), attempt=1, gpu_product="x"
        )["metadata"]["name"]
    )
    assert build(spec())["spec"]["template"]["metadata"]["labels"][incluster.LABEL_JOB] == "batch"


def test_only_a_job_controlled_by_this_uid_is_ours() -> None:
    job = build(spec())
    assert owned_by(job, UID)
    assert not owned_by(job, "someone-else")
    assert not owned_by({"metadata": {"name": "x"}}, UID)


def test_a_failure_is_explained_by_reasons_and_exit_codes_only() -> None:
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}
    job = {"status": {"conditions": [failed]}}
    pods = [
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "runner",
                        "state": {"terminated": {"exitCode": 2, "message": "secret"}},
                    }
                ]
            }
        }
    ]
    assert incluster.failure_reasons(job) == "DeadlineExceeded"
    assert attempt_pod(pods[0]).exit_codes == (("runner", 2),)  # no termination message
    assert incluster.failure_reasons({}) == ""


def test_the_gpu_node_selector_pins_pods_to_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGPU_GPU_NODE_SELECTOR", '{"pool": "inference"}')
    (term,) = pod(build(spec()))["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    # One term: the product and the pool must hold together.
    assert {"key": "pool", "operator": "In", "values": ["inference"]} in term["matchExpressions"]
    assert term["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('["pool"]', "JSON object"),
        ("pool=inference", "JSON object"),
        ('{"bad key!": "x"}', "'bad key!' is not a label key"),
        ('{"pool": "has space"}', r"\['pool'\]: 'has space' is not a label value"),
        ('{"pool": 3}', r"\['pool'\]: 3 is not a label value"),
    ],
)
def test_a_bad_gpu_node_selector_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, raw: str, named: str
) -> None:
    monkeypatch.setenv("HYBRIDGPU_GPU_NODE_SELECTOR", raw)
    with pytest.raises(ManifestError, match=named) as err:
        build(spec())
    assert "HYBRIDGPU_GPU_NODE_SELECTOR" in str(err.value)
    assert err.value.reason == "OperatorMisconfigured"


def without_env_values(value: Any) -> Any:
    """``value`` with every container env var's value blanked: what is left is what the
    operator's own fields and messages could show."""
    if isinstance(value, list):
        return [without_env_values(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"name", "value"}:
        return {"name": value["name"], "value": ""}
    return {k: without_env_values(v) for k, v in value.items()}


def test_the_runner_gets_the_checkpoint_urls_in_its_env_and_names_them_by_reference() -> None:
    s = spec(task="text-to-image", image=None, model="stabilityai/sd-turbo")
    job = build(s, **ALL)
    p = pod(job)
    (server,) = p["initContainers"]
    (runner,) = p["containers"]
    assert env(runner)["HYBRIDGPU_CHECKPOINT_URL"] == CK
    assert env(runner)["HYBRIDGPU_RESUME_URL"] == RS
    args = runner["args"]
    assert args[args.index("--checkpoint-url") + 1] == "$(HYBRIDGPU_CHECKPOINT_URL)"
    assert args[args.index("--resume-url") + 1] == "$(HYBRIDGPU_RESUME_URL)"
    assert not {"HYBRIDGPU_CHECKPOINT_URL", "HYBRIDGPU_RESUME_URL"} & set(env(server))
    # The SIGTERM of an eviction leaves the runner time to save.
    assert p["terminationGracePeriodSeconds"] == incluster.TERMINATION_GRACE_SECONDS >= 60
    # Nowhere but in env values: not in a command, an argument, a label or an annotation.
    text = json.dumps(without_env_values(job))
    for url in ALL.values():
        assert url not in text and url.split("?")[1] not in text


def test_without_checkpoint_urls_the_runner_is_not_told_of_any() -> None:
    s = spec(task="text-to-image", image=None, model="m")
    (runner,) = pod(build(s, input_url=IN, output_url=OUT))["containers"]
    # An unset $(VAR) would reach the runner as the literal text, not as an empty URL.
    assert "--checkpoint-url" not in runner["args"] and "--resume-url" not in runner["args"]
    assert "HYBRIDGPU_CHECKPOINT_URL" not in env(runner)
    # Half a checkpoint (a PUT without its GET) is none.
    (runner,) = pod(build(s, input_url=IN, output_url=OUT, checkpoint_url=CK))["containers"]
    assert "HYBRIDGPU_CHECKPOINT_URL" not in env(runner)


def test_a_container_gets_the_checkpoint_urls_and_vllm_which_cannot_resume_does_not() -> None:
    (c,) = pod(build(spec(command=["python", "run.py"]), **ALL))["containers"]
    assert env(c)["HYBRIDGPU_CHECKPOINT_URL"] == CK and env(c)["HYBRIDGPU_RESUME_URL"] == RS
    (v,) = pod(build(spec(task="llm", image=None, model="m"), **ALL))["containers"]
    assert env(v)["HYBRIDGPU_OUTPUT_URL"] == OUT
    assert "HYBRIDGPU_CHECKPOINT_URL" not in env(v) and "HYBRIDGPU_RESUME_URL" not in env(v)
    # An llm job's own image and command replace run-batch: that program may resume.
    own = spec(task="llm", image="ghcr.io/acme/llm:1", model="m", command=["python", "b.py"])
    (o,) = pod(build(own, **ALL))["containers"]
    assert env(o)["HYBRIDGPU_RESUME_URL"] == RS
