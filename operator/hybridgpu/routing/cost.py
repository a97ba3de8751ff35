"""The cost model: every network's price unit turned into the estimated USD cost of one job.

Networks price in different units. Container marketplaces (Akash, Vast.ai, Nosana) and the
cluster's own amortised price are per GPU-hour; OpenAI-compatible endpoints (io.net IO
Intelligence) are per token; Livepeer orchestrators set ``pricePerUnit`` per output pixel. To
compare them, each is converted to the cost of *this* job, in ``Decimal``, never float.
"""

from __future__ import annotations

from decimal import Decimal

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.routing.snapshot import PerGPUHour, PerToken, PerUnit, Pricing

MILLION = Decimal(1_000_000)
MILLIS_PER_HOUR = Decimal(3_600_000)

# Token counts assumed when an llm job does not say (spec.input.inputTokens/outputTokens).
# 512 in / 256 out is close to the median of the Azure LLM conversation trace 2023
# (context ~ 1k, generated ~ 250), rounded down to powers of two so the guess is visible.
DEFAULT_INPUT_TOKENS = 512
DEFAULT_OUTPUT_TOKENS = 256

# Output units one request of a task produces, per unit name, for PerUnit pricing.
# Livepeer prices pixels (pricePerUnit in wei per pixel, converted to USD by the adapter):
# * text-to-image, image-to-image: one image at the gateway's default 1024x576
#   (docs.livepeer.org text-to-image: width 1024, height 576, num_images_per_prompt 1);
# * image-to-video: 25 frames (Stable Video Diffusion XT's frame count) of 1024x576;
# * upscale: one 4x upscale of a 512x512 input, i.e. 2048x2048 output pixels;
# * audio and speech are priced per second of audio: 60 s a request is our assumption.
# A request never counts for less than one unit.
UNITS_PER_REQUEST: dict[tuple[Task, str], int] = {
    (Task.TEXT_TO_IMAGE, "pixel"): 1024 * 576,
    (Task.IMAGE_TO_IMAGE, "pixel"): 1024 * 576,
    (Task.IMAGE_TO_VIDEO, "pixel"): 25 * 1024 * 576,
    (Task.UPSCALE, "pixel"): 2048 * 2048,
    (Task.AUDIO_TO_TEXT, "second"): 60,
    (Task.TEXT_TO_SPEECH, "second"): 60,
}


def units_per_request(task: Task, unit: str) -> int:
    """Output units one request of ``task`` yields in ``unit`` (1 when the pair is unknown)."""
    return UNITS_PER_REQUEST.get((task, unit), 1)


def job_gpu_millis(job: InferenceJobSpec) -> int:
    """GPU-milliseconds of the job: estimated duration times GPU count, as an exact integer."""
    return round(job.estimated_duration.total_seconds() * 1000) * job.gpu.count


def job_gpu_hours(job: InferenceJobSpec) -> Decimal:
    """GPU-hours of the job (rounded to Decimal's precision when not a whole fraction)."""
    return Decimal(job_gpu_millis(job)) / MILLIS_PER_HOUR


def gpu_hour_cost(usd_per_gpu_hour: Decimal, gpu_millis: int) -> Decimal:
    """Cost of ``gpu_millis`` at a GPU-hour price; multiplies before dividing to stay exact."""
    return usd_per_gpu_hour * gpu_millis / MILLIS_PER_HOUR


def token_counts(job: InferenceJobSpec) -> tuple[int, int]:
    """Prompt and generated tokens of the whole batch, using the defaults where unset."""
    inp = job.input.input_tokens
    out = job.input.output_tokens
    requests = job.input.requests
    return (
        requests * (DEFAULT_INPUT_TOKENS if inp is None else inp),
        requests * (DEFAULT_OUTPUT_TOKENS if out is None else out),
    )


def estimate_cost(job: InferenceJobSpec, pricing: Pricing) -> Decimal:
    """Estimated USD cost of running all of ``job`` under ``pricing``."""
    if isinstance(pricing, PerGPUHour):
        return gpu_hour_cost(pricing.usd, job_gpu_millis(job))
    if isinstance(pricing, PerToken):
        tokens_in, tokens_out = token_counts(job)
        return (
            tokens_in * pricing.input_usd_per_million + tokens_out * pricing.output_usd_per_million
        ) / MILLION
    if isinstance(pricing, PerUnit):
        units = units_per_request(job.task, pricing.unit) * job.input.requests
        return pricing.usd_per_unit * units
    raise TypeError(f"unknown pricing {type(pricing).__name__}")


def per_gpu_hour_equivalent(cost: Decimal, gpu_millis: int) -> Decimal:
    """The price per GPU-hour that would cost the same for this job (cost itself if no time)."""
    if gpu_millis <= 0:
        return cost
    return cost * MILLIS_PER_HOUR / gpu_millis
