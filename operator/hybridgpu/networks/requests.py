"""The request objects of a client-driven batch (Livepeer, OpenAI-compatible).

Taken from ``requests=`` (the operator's configMapRef loader, see :func:`load_request_items`),
else ``spec.input.inline``, else synthetic: ``spec.input.requests`` requests built from the
task, model and token counts (llm: a user message of about ``inputTokens`` words and
``max_tokens = outputTokens``; text-to-image: a numbered prompt; text-to-speech: a numbered
sentence).

A batch is a :class:`Requests` sequence, never a list of every body: a synthetic batch of a
million requests holds one prompt string, and each body is built when it is sent. What a job
may put in memory otherwise is bounded: inline items by the schema (see
:mod:`hybridgpu.api.limits`), configMap items by :func:`load_request_items`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import yaml

from hybridgpu.api.inferencejob import InferenceJobSpec, Task
from hybridgpu.api.limits import MAX_CONFIGMAP_INPUT_BYTES, MAX_CONFIGMAP_ITEMS

_WORD = "hello "
Body = dict[str, Any]


class Requests(Sequence[Body]):
    """``size`` request bodies, each built by ``build(index)`` when it is asked for.

    ``uniform`` says every body costs the same (a synthetic batch), so a cost over many
    indices is one body's cost times their number.
    """

    def __init__(self, size: int, build: Callable[[int], Body], *, uniform: bool = False) -> None:
        self._size = size
        self._build = build
        self.uniform = uniform

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Body: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Body]: ...

    def __getitem__(self, index: int | slice) -> Body | Sequence[Body]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError(f"request {index} is outside the batch of {self._size}")
        return self._build(index)

    def __iter__(self) -> Iterator[Body]:
        return (self._build(i) for i in range(self._size))

    def map(self, change: Callable[[Body], Body]) -> Requests:
        """The same batch with ``change`` applied to each body as it is built."""
        build = self._build
        return Requests(self._size, lambda i: change(build(i)), uniform=self.uniform)


def of_items(items: Sequence[Body]) -> Requests:
    """A batch of given request objects (each handed out as a copy, so changes stay local)."""
    return Requests(len(items), lambda i: dict(items[i]))


def batch_requests(job: InferenceJobSpec, requests: Sequence[Body] | None = None) -> Requests:
    """The batch's request bodies, before any network-specific defaults are filled in."""
    if requests is not None:
        return of_items(requests)
    if job.input.inline is not None:
        return of_items(job.input.inline)
    return synthetic_requests(job)


def synthetic_requests(job: InferenceJobSpec) -> Requests:
    """``spec.input.requests`` synthetic bodies, none of them built yet."""
    size = job.input.requests
    if job.task is Task.LLM:
        words = max(job.input.input_tokens or 16, 1)
        # One prompt for the whole batch: bodies share it (strings are immutable).
        content = (_WORD * words).strip()
        max_tokens = job.input.output_tokens or 256
        return Requests(
            size,
            lambda _: {
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens,
            },
            uniform=True,
        )
    field = "text" if job.task is Task.TEXT_TO_SPEECH else "prompt"
    return Requests(
        size, lambda index: {field: f"hybridgpu synthetic request {index}"}, uniform=True
    )


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few kilobytes of aliases can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases are not allowed in request lists"
            )
        return super().compose_node(parent, index)


class InputTooLarge(ValueError):
    """A job's input is beyond what one job may hold in the operator's memory."""


def load_request_items(text: str, field: str) -> list[Body]:
    """Parse a configMap value holding the batch's request objects (a JSON or YAML list).

    Raises :class:`InputTooLarge` (too many bytes or items) or ValueError (not a list of
    objects), each naming ``field``, e.g. ``spec.input.configMapRef: ...``.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIGMAP_INPUT_BYTES:
        raise InputTooLarge(
            f"{field}: the requests are {size} bytes; at most {MAX_CONFIGMAP_INPUT_BYTES} "
            "bytes are read (split the batch into several jobs)"
        )
    try:
        loaded = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
        )
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"{field}: not a JSON or YAML list: {str(exc)[:200]}") from None
    if not isinstance(loaded, list):
        raise ValueError(f"{field}: the value is not a list of request objects")
    if len(loaded) > MAX_CONFIGMAP_ITEMS:
        raise InputTooLarge(
            f"{field}: {len(loaded)} requests; at most {MAX_CONFIGMAP_ITEMS} are read from a "
            "ConfigMap (split the batch into several jobs)"
        )
    for index, item in enumerate(loaded):
        if not isinstance(item, dict):
            raise ValueError(f"{field}: item {index} is not an object")
    return loaded
