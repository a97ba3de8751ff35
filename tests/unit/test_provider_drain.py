"""A draining provider lists every job once, then re-reads only the jobs that owed it work."""

from __future__ import annotations

from typing import Any

import kopf

from hybridgpu.handlers.providers import _owing


def owing(name: str, provider: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "status": {"pendingCancels": [{"provider": provider, "idempotencyKey": "k", "id": "r"}]},
    }


class Kube:
    def __init__(self, jobs: dict[str, dict[str, Any]]) -> None:
        self.jobs = jobs
        self.calls: list[str] = []

    async def list_jobs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        self.calls.append("list")
        return list(self.jobs.values())

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {name}")
        return self.jobs.get(name)


class Runtime:
    def __init__(self) -> None:
        self.names: dict[tuple[str, str], str] = {}
        self.cache: dict[str, dict[str, Any]] = {}


async def test_one_listing_then_only_the_jobs_found_owing() -> None:
    kube = Kube({"a": owing("a", "gone"), "b": owing("b", "other"), "c": owing("c", "gone")})
    memo = kopf.Memo(kube=kube, jobs=Runtime(), draining={})
    assert await _owing(memo, "gone") == {("ns", "a"), ("ns", "c")}
    kube.jobs["a"]["status"]["pendingCancels"] = []  # a's cancel went through
    memo.jobs.names[("ns", "c")] = "uid-c"
    memo.jobs.cache["uid-c"] = kube.jobs["c"]  # c is in the watch cache: no call for it
    assert await _owing(memo, "gone") == {("ns", "c")}
    assert kube.calls == ["list", "get a"]
    del kube.jobs["c"], memo.jobs.cache["uid-c"]  # c deleted
    assert await _owing(memo, "gone") == set()
