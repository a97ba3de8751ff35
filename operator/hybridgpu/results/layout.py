"""Where one job's objects live: ``<base>/<namespace>/<name>/<uid>/``.

* ``output.jsonl``: the output, one line per request, in input order;
* ``parts/<first index, 10 digits>.jsonl``: the checkpoint, one object per chunk of requests,
  written once every request of the chunk has an answer (a rewrite after a restart puts the
  same key again, so every request is in the output exactly once);
* ``checkpoint.jsonl``: an in-cluster runner's checkpoint, the output lines it finished so
  far in input order (written by the runner through a presigned PUT, read by the next
  attempt through a presigned GET; docs/results.md);
* ``input.jsonl``: the requests staged for runners that read them by URL (inline and
  configMapRef inputs of in-cluster and container work);
* ``media/<index>-<n>.<ext>``: media copied from a network's expiring URLs.

The base is the job's ``spec.output.uri``, else the default store's prefix. A tenant's jobs
in the default store stay under ``<prefix>/<namespace>/`` (see :func:`tenant_prefix`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridgpu.results.urls import ObjectURL

CHUNK_MIN = 16
CHUNK_MAX = 1024
CHUNKS_TARGET = 256


def chunk_size(total: int) -> int:
    """Requests per checkpoint part for a batch of ``total``: a function of the total only,
    so a restarted operator finds the parts where it left them. Small batches checkpoint
    often; a million requests make under a thousand parts."""
    return max(CHUNK_MIN, min(CHUNK_MAX, -(-total // CHUNKS_TARGET)))


def tenant_prefix(store_root: ObjectURL, namespace: str) -> ObjectURL:
    """The part of the default store that a namespace's jobs may read and write."""
    return store_root.join(namespace)


@dataclass(frozen=True, slots=True)
class JobLayout:
    """The keys of one job's objects."""

    base: ObjectURL
    """``<output uri or store prefix>/<namespace>/<name>/<uid>``."""

    @classmethod
    def for_job(cls, root: ObjectURL, namespace: str, name: str, uid: str) -> JobLayout:
        return cls(root.join(namespace, name, uid))

    @property
    def output(self) -> ObjectURL:
        return self.base.join("output.jsonl")

    @property
    def checkpoint(self) -> ObjectURL:
        return self.base.join("checkpoint.jsonl")

    @property
    def staged_input(self) -> ObjectURL:
        return self.base.join("input.jsonl")

    @property
    def parts(self) -> ObjectURL:
        return self.base.join("parts")

    def part(self, first: int) -> ObjectURL:
        return self.parts.join(f"{first:010d}.jsonl")

    def media(self, index: int, n: int, ext: str) -> ObjectURL:
        return self.base.join("media", f"{index}-{n}.{ext}")

    @staticmethod
    def part_first(key: str) -> int | None:
        """The first request index of a part key, or None for anything else."""
        name = key.rsplit("/", 1)[-1]
        stem, dot, ext = name.partition(".")
        if dot and ext == "jsonl" and len(stem) == 10 and stem.isdigit():
            return int(stem)
        return None
