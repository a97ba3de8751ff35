"""Media in a network's answer (Livepeer ``images[].url``, ``audio.url``), copied into the
result store: a gateway's URLs expire, the store's objects do not."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import httpx

from hybridgpu.networks.errors import MalformedAnswer, Unavailable

if TYPE_CHECKING:
    from hybridgpu.results.output import BatchOutput

MAX_MEDIA_BYTES = 64 * 1024 * 1024
_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/mpeg": "mp3",
    "video/mp4": "mp4",
}


def _entries(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, dict):
        return []
    found: list[dict[str, Any]] = []
    images = answer.get("images")
    if isinstance(images, list):
        found.extend(i for i in images if isinstance(i, dict) and isinstance(i.get("url"), str))
    for field in ("audio", "video"):
        value = answer.get(field)
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            found.append(value)
    return found


def _extension(url: str, content_type: str) -> str:
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind in _TYPES:
        return _TYPES[kind]
    tail = url.rsplit("/", 1)[-1].split("?", maxsplit=1)[0]
    ext = tail.rsplit(".", 1)[-1].lower() if "." in tail else ""
    return ext if ext.isalnum() and len(ext) <= 5 else "bin"


async def _fetch(client: httpx.AsyncClient, provider: str, url: str, index: int) -> httpx.Response:
    for attempt in range(3):
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        else:
            if response.status_code == 200:
                return response
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500:
                break
        del attempt
    raise Unavailable(provider, f"fetching the media of request {index} failed: {problem}")


async def copy_media(
    client: httpx.AsyncClient, provider: str, answer: Any, output: BatchOutput, index: int
) -> Any:
    """``answer`` with every media URL replaced by its copy's s3:// URL (the network's own
    URL kept as ``sourceUrl``). ``client`` carries no credential of the network: media URLs
    may point anywhere."""
    entries = _entries(answer)
    if not entries:
        return answer
    answer = copy.deepcopy(answer)
    for n, entry in enumerate(_entries(answer)):
        url = entry["url"]
        response = await _fetch(client, provider, url, index)
        if len(response.content) > MAX_MEDIA_BYTES:
            raise MalformedAnswer(
                provider, f"media of request {index} is over {MAX_MEDIA_BYTES} bytes"
            )
        target = output.layout.media(
            index, n, _extension(url, response.headers.get("content-type", ""))
        )
        await output.store.put(
            target, response.content, content_type=response.headers.get("content-type", "")
        )
        entry["sourceUrl"] = url
        entry["url"] = str(target)
    return answer
