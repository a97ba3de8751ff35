"""The request objects of a client-driven batch (Livepeer, OpenAI-compatible).

Taken from ``requests=`` (the operator's configMapRef loader), else ``spec.input.inline``,
else synthetic: ``spec.input.requests`` requests built from the task, model and token counts
(llm: a user message of about ``inputTokens`` words and ``max_tokens = outputTokens``;
text-to-image: a numbered prompt; text-to-speech: a numbered sentence).
"""

from __future__ import annotations

from typing import Any

from hybridgpu.api.inferencejob import InferenceJobSpec, Task

_WORD = "hello "


def batch_requests(
    job: InferenceJobSpec, requests: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The batch's request bodies, before any network-specific defaults are filled in."""
    if requests is not None:
        return [dict(r) for r in requests]
    if job.input.inline is not None:
        return [dict(r) for r in job.input.inline]
    return [synthetic_request(job, i) for i in range(job.input.requests)]


def synthetic_request(job: InferenceJobSpec, index: int) -> dict[str, Any]:
    """Request ``index`` of a batch described only by counts."""
    if job.task is Task.LLM:
        words = max(job.input.input_tokens or 16, 1)
        return {
            "messages": [{"role": "user", "content": (_WORD * words).strip()}],
            "max_tokens": job.input.output_tokens or 256,
        }
    if job.task is Task.TEXT_TO_SPEECH:
        return {"text": f"hybridgpu synthetic request {index}"}
    return {"prompt": f"hybridgpu synthetic request {index}"}
