"""The InferenceJob kind: one batch of inference work to be placed on a GPU somewhere."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from hybridgpu.api import limits
from hybridgpu.api.common import (
    ApiModel,
    Condition,
    Duration,
    GPUProduct,
    Money,
    Name,
    ObjectMeta,
    Quantity,
    StatusModel,
    conditions_field,
)
from hybridgpu.units import parse_quantity

ObjectURL = Annotated[
    str,
    StringConstraints(
        min_length=6,
        max_length=limits.MAX_OBJECT_URL_CHARS,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\x00-\x1f]*)?$",
    ),
]
"""An S3 object URL, s3://bucket/key (the bucket lowercase, as S3 names them)."""
Arg = Annotated[str, StringConstraints(max_length=limits.MAX_ARG_CHARS)]
"""One entry of spec.command or spec.args."""
RequestObject = Annotated[dict[str, Any], Field(max_length=limits.MAX_INLINE_ITEM_PROPERTIES)]
"""One inline request object, passed as it is to the backend."""
_LONGEST = timedelta(hours=limits.MAX_ESTIMATED_DURATION_HOURS)


def _at_most_a_year(path: str) -> dict[str, Any]:
    # CEL parses the Go-style duration itself; one it cannot represent fails the rule too.
    return {
        "x-kubernetes-validations": [
            {
                "rule": f"duration(self) <= duration('{limits.MAX_ESTIMATED_DURATION_HOURS}h')",
                "message": f"{path} must be at most {limits.MAX_ESTIMATED_DURATION_HOURS}h",
            }
        ]
    }


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str, separators=(",", ":")).encode())


def _immutable(path: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": f"{path} is immutable once the job exists"}
        ]
    }


class Task(StrEnum):
    LLM = "llm"
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    IMAGE_TO_VIDEO = "image-to-video"
    AUDIO_TO_TEXT = "audio-to-text"
    TEXT_TO_SPEECH = "text-to-speech"
    UPSCALE = "upscale"
    CONTAINER = "container"


class Placement(StrEnum):
    ANY = "Any"
    IN_CLUSTER = "InCluster"
    EXTERNAL = "External"


class Backend(StrEnum):
    IN_CLUSTER = "InCluster"
    EXTERNAL = "External"


class AttemptOutcome(StrEnum):
    """Where an attempt stands; the first three hold capacity and budget."""

    DISPATCHING = "Dispatching"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REQUEUED = "Requeued"
    CANCELLED = "Cancelled"
    PREEMPTED = "Preempted"


class Phase(StrEnum):
    PENDING = "Pending"
    ROUTED = "Routed"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class EnvVar(ApiModel):
    """An environment variable for the container."""

    name: Annotated[
        str,
        StringConstraints(
            min_length=1,
            max_length=limits.MAX_ENV_NAME_CHARS,
            pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        ),
    ]
    """Name of the variable."""
    value: Annotated[str, StringConstraints(max_length=limits.MAX_ENV_VALUE_CHARS)] = ""
    """Value of the variable, at most 8192 characters. Put secrets in a Secret, not here."""


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the job's namespace."""

    name: Name
    """Name of the ConfigMap."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Key whose value holds the requests, as a JSON or YAML list."""


class JobInput(ApiModel):
    """What the batch holds."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0)"
                    " + (has(self.source) ? 1 : 0) <= 1",
                    "message": "set at most one of source, inline and configMapRef",
                    "fieldPath": ".source",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "!(has(self.loadTest) && self.loadTest) || (!has(self.inline)"
                    " && !has(self.configMapRef) && !has(self.source))",
                    "message": "loadTest builds synthetic requests: set no source, inline or "
                    "configMapRef with it",
                    "fieldPath": ".loadTest",
                    "reason": "FieldValueForbidden",
                },
                *_immutable("spec.input")["x-kubernetes-validations"],
            ]
        }
    )

    requests: int = Field(ge=1, le=limits.MAX_REQUESTS)
    """How many inference requests the batch holds (at most 1000000)."""
    input_tokens: int | None = Field(default=None, ge=0, le=limits.MAX_INPUT_TOKENS)
    """Prompt tokens per request (llm, at most 131072): used to estimate per-token prices."""
    output_tokens: int | None = Field(default=None, ge=0, le=limits.MAX_OUTPUT_TOKENS)
    """Generated tokens per request (llm, at most 131072): used to estimate per-token prices."""
    inline: list[RequestObject] | None = Field(
        default=None, min_length=1, max_length=limits.MAX_INLINE_ITEMS
    )
    """A small list of request objects, sent as they are to the chosen backend: at most 100
    objects of at most 64 fields, 64 KiB as JSON together (the operator fails a job with more)."""
    config_map_ref: ConfigMapKeyRef | None = None
    """A ConfigMap key holding the request objects (for batches too large to inline): a JSON
    or YAML list (no aliases) of at most 100000 objects, 1 MiB."""
    source: ObjectURL | None = None
    """An object holding the requests as JSONL, one request per line (for llm the OpenAI Batch
    input format, {"custom_id", "method", "url", "body"}), e.g. s3://bucket/key.jsonl. Read
    with the job's spec.output credentials when its bucket is the one they name, else with
    the operator's default result store (only inside its tenant prefix)."""
    load_test: bool = False
    """Send spec.input.requests synthetic requests built from the task, model and token counts
    (a load test: the requests carry no user data). Without it, a model task needs source,
    inline or configMapRef."""

    @field_validator("inline")
    @classmethod
    def _inline_fits(cls, items: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if items is not None and (size := _json_size(items)) > limits.MAX_INLINE_BYTES:
            raise ValueError(
                f"spec.input.inline is {size} bytes as JSON; at most {limits.MAX_INLINE_BYTES} "
                "bytes are allowed (put larger batches in a ConfigMap: spec.input.configMapRef)"
            )
        return items

    @model_validator(mode="after")
    def _one_source(self) -> JobInput:
        given = [self.inline is not None, self.config_map_ref is not None, self.source is not None]
        if sum(given) > 1:
            raise ValueError("spec.input: set at most one of source, inline and configMapRef")
        if self.load_test and any(given):
            raise ValueError(
                "spec.input.loadTest builds synthetic requests: set no source, inline or "
                "configMapRef with it"
            )
        return self

    def has_requests(self) -> bool:
        """Whether the job names its requests (or asks for a load test's synthetic ones)."""
        return self.load_test or any(
            v is not None for v in (self.inline, self.config_map_ref, self.source)
        )


class SecretRef(ApiModel):
    """A Secret in the job's own namespace."""

    name: Name
    """Name of the Secret."""


class JobOutput(ApiModel):
    """Where the job's results go."""

    uri: ObjectURL
    """An object URL prefix such as s3://bucket/results/; the output is written under it as
    <uri>/<namespace>/<name>/<uid>/output.jsonl."""
    credentials_secret_ref: SecretRef | None = None
    """A Secret in the job's namespace with keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    optionally AWS_ENDPOINT_URL and AWS_REGION. Without it, uri must lie in the operator's
    default result store (inside this namespace's prefix)."""


class GPURequest(ApiModel):
    """The GPUs the job needs."""

    count: int = Field(default=1, ge=1, le=8)
    """Number of GPUs (the nvidia.com/gpu resource)."""
    min_memory: Quantity | None = None
    """Minimum memory per GPU, as a Kubernetes quantity such as 24Gi."""
    products: list[GPUProduct] | None = Field(default=None, min_length=1, max_length=32)
    """Allowed GPU Feature Discovery product names (nvidia.com/gpu.product); empty means any."""

    def min_memory_bytes(self) -> int:
        """The minimum memory in bytes (0 when unset)."""
        return parse_quantity(self.min_memory) if self.min_memory else 0


class EstimateFrom(StrEnum):
    """Where the GPU time that hour-priced places are costed on comes from."""

    WORK = "Work"
    """llm jobs: from the tokens and the throughput table of each GPU product, where it has
    one (else estimatedDuration); other tasks: estimatedDuration."""
    ESTIMATED_DURATION = "EstimatedDuration"
    """Always spec.estimatedDuration (the user's own figure overrides the table)."""


class InferenceJobSpec(ApiModel):
    """What the job is and the constraints on where it may run."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.task != 'container' || has(self.image)",
                    "message": "spec.image is required when spec.task is container",
                    "fieldPath": ".image",
                    "reason": "FieldValueRequired",
                },
                {
                    "rule": "self.task == 'container' || has(self.model)",
                    "message": "spec.model is required unless spec.task is container",
                    "fieldPath": ".model",
                    "reason": "FieldValueRequired",
                },
                {
                    # What was dispatched stays what the job is, as a batch/v1 Job's template
                    # does: lookups, cancels and results on every network are made from the
                    # spec. The fields' own rules cover changes; this covers adding or removing.
                    "rule": "[has(self.model), has(self.image), has(self.command), "
                    "has(self.args), has(self.env), has(self.output)] == [has(oldSelf.model), "
                    "has(oldSelf.image), has(oldSelf.command), has(oldSelf.args), "
                    "has(oldSelf.env), has(oldSelf.output)]",
                    "message": "model, image, command, args, env and output cannot be added or "
                    "removed once the job exists",
                },
            ]
        }
    )

    task: Task = Field(json_schema_extra=_immutable("spec.task"))
    """The kind of inference: llm, text-to-image, image-to-image, image-to-video, audio-to-text,
    text-to-speech, upscale, or container (run an image)."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, json_schema_extra=_immutable("spec.model")
    )
    """The model id (Hugging Face or Ollama id); required unless task is container."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        default=None, json_schema_extra=_immutable("spec.image")
    )
    """Container image to run in-cluster or on container marketplaces; required for container."""
    command: list[Arg] | None = Field(
        default=None,
        max_length=limits.MAX_COMMAND_ITEMS,
        json_schema_extra=_immutable("spec.command"),
    )
    """Entrypoint of the container: at most 32 entries of at most 4096 characters."""
    args: list[Arg] | None = Field(
        default=None, max_length=limits.MAX_ARGS_ITEMS, json_schema_extra=_immutable("spec.args")
    )
    """Arguments to the entrypoint: at most 128 entries of at most 4096 characters."""
    env: list[EnvVar] | None = Field(
        default=None, max_length=limits.MAX_ENV_ITEMS, json_schema_extra=_immutable("spec.env")
    )
    """Environment variables for the container (at most 64)."""
    input: JobInput
    """The batch of requests."""
    output: JobOutput | None = Field(default=None, json_schema_extra=_immutable("spec.output"))
    """Where the results go; without it, the operator's default result store."""
    gpu: GPURequest = Field(default_factory=GPURequest, json_schema_extra=_immutable("spec.gpu"))
    """GPU count, memory and allowed products."""
    estimated_duration: Duration = Field(
        json_schema_extra=_at_most_a_year("spec.estimatedDuration")
    )
    """GPU time for the whole batch on one of the allowed GPUs, e.g. 30m (at most 8760h)."""
    estimate: EstimateFrom = EstimateFrom.WORK
    """Work or EstimatedDuration: how hour-priced places estimate the job's GPU time. Work
    (llm) prices the tokens through a published per-product throughput table, so GPU-hour and
    token prices compare on the same work; each candidate says which estimate it used."""
    policy_ref: Name = "default"
    """Name of the RoutingPolicy in this namespace that decides where the job runs."""
    placement: Placement = Placement.ANY
    """Any, InCluster or External: a hard constraint on where the job may run."""
    max_price_per_gpu_hour: Money | None = None
    """Hard cap in US dollars per GPU-hour, as a decimal string."""
    max_cost: Money | None = None
    """Hard cap in US dollars on the job's estimated total cost, as a decimal string."""
    start_within: Duration | None = Field(
        default=None, json_schema_extra=_at_most_a_year("spec.startWithin")
    )
    """Latency objective: the job should be running this long after creation (at most 8760h)."""
    regions: list[Annotated[str, StringConstraints(min_length=1, max_length=63)]] | None = Field(
        default=None, min_length=1, max_length=limits.MAX_REGIONS
    )
    """Regions where external work may run; empty means any."""
    suspend: bool = False
    """When true, nothing is dispatched and running work is cancelled; false resumes."""
    preemptible: bool = False
    """When true, a higher-ranked job whose RoutingPolicy allows preemption may evict this
    job's in-cluster attempt; the job is then queued again, keeps what its checkpoint holds
    (docs/results.md) and does not count the eviction against failover.maxAttempts."""

    @model_validator(mode="before")
    @classmethod
    def _spec_fits(cls, data: Any) -> Any:
        if isinstance(data, dict) and (size := _json_size(data)) > limits.MAX_SPEC_BYTES:
            raise ValueError(
                f"the spec is {size} bytes as JSON; at most {limits.MAX_SPEC_BYTES} bytes are "
                "allowed (put large inputs in a ConfigMap: spec.input.configMapRef)"
            )
        return data

    @field_validator("estimated_duration", "start_within")
    @classmethod
    def _not_beyond_a_year(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > _LONGEST:
            raise ValueError(f"must be at most {limits.MAX_ESTIMATED_DURATION_HOURS}h")
        return value

    @model_validator(mode="after")
    def _task_fields(self) -> InferenceJobSpec:
        if self.task is Task.CONTAINER and not self.image:
            raise ValueError("spec.image is required when spec.task is container")
        if self.task is not Task.CONTAINER and not self.model:
            raise ValueError("spec.model is required unless spec.task is container")
        return self

    def gpu_hours(self) -> Decimal:
        """Estimated GPU-hours for the batch: duration times GPU count."""
        hours = Decimal(self.estimated_duration.total_seconds()) / Decimal(3600)
        return hours * self.gpu.count


class Candidate(StatusModel):
    """One place the job could have gone, as the routing engine saw it."""

    name: str
    """Candidate id: in-cluster/<product> or <provider>/<product>."""
    backend: str = ""
    """InCluster or External."""
    provider: str = ""
    """ComputeProvider name, or in-cluster."""
    gpu_product: str = ""
    """GPU product of the offer."""
    price_per_gpu_hour: Money | None = None
    """Price per GPU-hour in US dollars."""
    estimated_cost: Money | None = None
    """Estimated total cost of this job there, in US dollars."""
    expected_start_seconds: float | None = None
    """Expected seconds until the job would be running."""
    score: float | None = None
    """Weighted score (higher is better) among feasible candidates."""
    feasible: bool = False
    """Whether every hard constraint holds."""
    reason: str = ""
    """Why the candidate was rejected, or why it ranks where it does."""
    estimate: str = ""
    """What its cost rests on: Work or EstimatedDuration and the GPU-hours, or PerToken/PerUnit."""


class Decision(StatusModel):
    """The routing engine's last decision and how it was reached."""

    time: datetime | None = None
    """When the decision was made."""
    policy: str = ""
    """The RoutingPolicy used."""
    outcome: str = ""
    """Routed, Wait or Rejected."""
    target: str = ""
    """The chosen candidate, empty when the job waits or is rejected."""
    message: str = ""
    """One line a human can read: where and why."""
    retry_after_seconds: float | None = None
    """When the job waits: how soon to look again."""
    awaiting: list[str] = Field(default_factory=list, max_length=64)
    """When the job is deferred for price: the busy places it waits for; capacity freed at one
    of them makes the operator decide again at once."""
    candidates: list[Candidate] = Field(default_factory=list)
    """Ranked candidates, best first, with the reason any was rejected."""


class PlacementStatus(StatusModel):
    """Where the job is placed now."""

    backend: Backend | None = None
    """InCluster or External."""
    provider: str = ""
    """ComputeProvider name, or in-cluster."""
    gpu_product: str = ""
    """GPU product the job runs on."""
    price_per_gpu_hour: Money | None = None
    """Price per GPU-hour in US dollars."""
    estimated_cost: Money | None = None
    """Estimated total cost in US dollars."""


class ExternalRef(StatusModel):
    """The job's handle on an external network."""

    provider: str = ""
    """ComputeProvider name."""
    id: str = ""
    """The network's id for the job (deployment, instance, job id)."""
    idempotency_key: str = ""
    """Key derived from the job's UID and attempt, written before submission."""
    attempt: int = 0
    """The attempt number this reference belongs to."""
    checkpoint: str = ""
    """Progress checkpoint of a client-driven batch, so a restart resends nothing completed."""


class PendingCancel(StatusModel):
    """Remote work the operator still has to stop: its cancel failed or its id is unknown.

    The job keeps its finalizer until the list is empty, so work that bills by the hour is
    never left running by a job that ended or was deleted.
    """

    provider: str
    """ComputeProvider name."""
    idempotency_key: str
    """The attempt's key: finds the remote work when its id was never recorded."""
    id: str = ""
    """The network's id, when it was recorded."""
    attempt: int = 0
    """The attempt the work belongs to."""
    gpu_product: str = ""
    """GPU product of the attempt (some networks find work by what was submitted)."""
    since: datetime | None = None
    """When the cancel was first owed."""
    tries: int = 0
    """Cancels tried so far."""
    last_error: Annotated[str, StringConstraints(max_length=512)] = ""
    """Why the last try failed (redacted network text)."""


class Attempt(StatusModel):
    """One try at running the job; failover adds another."""

    attempt: int
    """1 for the first try, counting up."""
    backend: Backend | None = None
    """InCluster or External."""
    provider: str = ""
    """ComputeProvider name, or in-cluster."""
    gpu_product: str = ""
    """GPU product used."""
    external_id: str = ""
    """The network's id, if external."""
    start_time: datetime | None = None
    """When the attempt was dispatched."""
    running_since: datetime | None = None
    """When the attempt was first seen running (its deadline counts from here)."""
    end_time: datetime | None = None
    """When the attempt ended."""
    outcome: AttemptOutcome
    """Dispatching (intent written, not yet submitted), Pending, Running, Succeeded, Failed,
    Requeued (not started in time in-cluster; not counted against maxAttempts) or Cancelled."""
    reason: str = ""
    """Why it ended, in a word (CamelCase)."""
    message: str = ""
    """Why it ended, for humans."""
    cost: Money | None = None
    """What the attempt cost, in US dollars."""
    price_per_gpu_hour: Money | None = None
    """Price per GPU-hour the attempt was routed at, US dollars."""
    estimated_cost: Money | None = None
    """What the attempt was expected to cost when admitted, US dollars: held against the
    budget until the attempt ends."""
    policy_ref: str = ""
    """The RoutingPolicy whose budget the attempt is charged to (fixed at admission)."""
    gpus: int | None = None
    """GPUs the attempt holds."""
    preempted_by: str = ""
    """``namespace/name`` of the job that evicted it (outcome Preempted)."""


class CostStatus(StatusModel):
    """What the job costs."""

    estimated: Money | None = None
    """Estimated total at the time of routing, US dollars."""
    accrued: Money | None = None
    """Spent so far over every attempt, US dollars."""


class Progress(StatusModel):
    """How much of the batch is done."""

    completed: int = 0
    """Requests completed."""
    total: int = 0
    """Requests in the batch."""


class OutputStatus(StatusModel):
    """Where the job's results are and what they hold."""

    uri: str = ""
    """The output object, s3://bucket/key (JSONL, one line per request)."""
    records: int = 0
    """Output lines written, one per request."""
    failed: int = 0
    """Requests that errored; their lines carry an error."""
    bytes: int = 0
    """Size of the output object."""
    checksum: str = ""
    """sha256:<hex> of the output object's bytes."""
    etag: str = ""
    """The store's ETag of the output object."""
    summary: str = ""
    """records/total, as kubectl shows it."""


class InferenceJobStatus(StatusModel):
    """Observed state of the job. Conditions are the truth; phase is derived from them."""

    phase: Phase | None = None
    """Pending, Routed, Running, Succeeded, Failed or Suspended (derived from conditions)."""
    conditions: list[Condition] = conditions_field()
    """Routed, Running, Succeeded, Failed, Suspended and others, with reasons."""
    observed_generation: int | None = None
    """The generation of the spec this status describes."""
    placement: PlacementStatus | None = None
    """Where the job runs now."""
    decision: Decision | None = None
    """The last routing decision, with ranked candidates."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Failover history, oldest first."""
    external_ref: ExternalRef | None = None
    """Handle on the external network for the current attempt."""
    cost: CostStatus | None = None
    """Estimated and accrued cost."""
    progress: Progress | None = None
    """Requests completed out of the batch."""
    output: OutputStatus | None = None
    """Where the results are, once written."""
    start_time: datetime | None = None
    """When the job first started running."""
    completion_time: datetime | None = None
    """When the job reached Succeeded or Failed."""
    pending_cancels: list[PendingCancel] = Field(default_factory=list, max_length=32)
    """Remote work still to be stopped (retried until done; the job's deletion waits)."""
    preemptions: int | None = Field(default=None, ge=0)
    """How many times the job's attempts were evicted for higher-ranked work."""


class InferenceJob(ApiModel):
    """A batch of inference work that hybridgpu places on in-cluster GPUs or an external network."""

    model_config = {"extra": "ignore"}

    api_version: str = "hybridgpu.dev/v1alpha1"
    """hybridgpu.dev/v1alpha1"""
    kind: str = "InferenceJob"
    """InferenceJob"""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: InferenceJobSpec
    """What the job is and the constraints on where it may run."""
    status: InferenceJobStatus = Field(default_factory=InferenceJobStatus)
    """Observed state, written by the operator."""

    def start_deadline(self) -> datetime | None:
        """When the job should be running by, if it has a latency objective."""
        created = self.metadata.creation_timestamp
        if created is None or self.spec.start_within is None:
            return None
        return created + self.spec.start_within


__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Backend",
    "Candidate",
    "CostStatus",
    "Decision",
    "ExternalRef",
    "InferenceJob",
    "InferenceJobSpec",
    "InferenceJobStatus",
    "JobInput",
    "JobOutput",
    "OutputStatus",
    "Phase",
    "Placement",
    "PlacementStatus",
    "Progress",
    "Task",
]
