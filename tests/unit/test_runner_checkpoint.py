"""``hybridgpu runner livepeer``'s checkpoint: resume from it, save it, and save it on SIGTERM.

The ai-runner is the stand-in behind :class:`FlakyRunner`; the store is the GET/PUT object
server the in-cluster tests use for presigned URLs (a missing key answers 404, an unsigned
URL 403).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hybridgpu.runner import checkpoint, livepeer
from hybridgpu.runner.jsonl import output_line
from tests.incluster.objects import ObjectServer, object_server
from tests.unit.test_runner_livepeer import FlakyRunner
from tests.unit.test_runner_livepeer import config as plain_config

CKPT = "job/checkpoint.jsonl"


@pytest.fixture
def store() -> Iterator[ObjectServer]:
    with object_server() as server:
        yield server


def config(store: ObjectServer, runner: FlakyRunner, **settings: Any) -> livepeer.Config:
    cfg = plain_config(store, runner)
    url = store.url(CKPT)
    cfg.checkpointing = checkpoint.Settings(checkpoint_url=url, resume_url=url, **settings)
    return cfg


def requests(n: int) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"r{i}", "body": {"prompt": f"p{i}", "seed": i}}).encode() + b"\n"
        for i in range(n)
    )


def kept(index: int, custom_id: str | None, status: int = 200) -> bytes:
    """A line an earlier attempt finished; its body marks it as not answered now."""
    error = None if status < 400 else f"HTTP {status}"
    return output_line(index, custom_id, status, {"earlier": True}, error)


def read(store: ObjectServer, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in store.objects[key].splitlines()]


def prompts(runner: FlakyRunner) -> list[str]:
    return [b["prompt"] for b in runner.bodies]


def sigterm_at(post: int, then_sleep: float = 0.0) -> Any:
    """An on_post hook: SIGTERM to this process (the runner) while POST ``post`` is in flight."""

    def hook(n: int) -> None:
        if n == post:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(then_sleep)

    return hook


def run(cfg: livepeer.Config, runner: FlakyRunner) -> int:
    try:
        return livepeer.run(cfg)
    finally:
        runner.close()


def test_requests_in_the_checkpoint_are_not_sent_again(store: ObjectServer) -> None:
    store.objects["in.jsonl"] = requests(4)
    store.objects[CKPT] = kept(0, "r0") + kept(1, "r1")
    runner = FlakyRunner("text-to-image")
    assert run(config(store, runner), runner) == livepeer.EXIT_OK
    assert prompts(runner) == ["p2", "p3"]
    out = store.objects["out.jsonl"].splitlines(keepends=True)
    assert out[:2] == [kept(0, "r0"), kept(1, "r1")]  # the earlier answers, byte for byte
    assert [json.loads(x)["index"] for x in out] == [0, 1, 2, 3]
    assert [json.loads(x)["custom_id"] for x in out] == ["r0", "r1", "r2", "r3"]


def test_a_line_of_another_request_or_without_an_answer_is_sent_again(
    store: ObjectServer,
) -> None:
    store.objects["in.jsonl"] = requests(4)
    # 0: the input changed since (another custom_id); 1: the ai-runner was down (503);
    # 2: refused for good (422) is an answer; 3: out of order, so not matched.
    store.objects[CKPT] = kept(0, "old") + kept(1, "r1", 503) + kept(2, "r2", 422) + kept(1, "r3")
    runner = FlakyRunner("text-to-image")
    assert run(config(store, runner), runner) == livepeer.EXIT_OK
    assert prompts(runner) == ["p0", "p1", "p3"]
    out = read(store, "out.jsonl")
    assert [o["index"] for o in out] == [0, 1, 2, 3]
    assert out[2]["response"]["body"] == {"earlier": True}
    assert "earlier" not in out[0]["response"]["body"]


def test_a_missing_or_unreadable_checkpoint_starts_from_the_first_request(
    store: ObjectServer, caplog: pytest.LogCaptureFixture
) -> None:
    store.objects["in.jsonl"] = requests(2)
    runner = FlakyRunner("text-to-image")
    cfg = config(store, runner)  # no object yet: 404
    assert livepeer.run(cfg) == livepeer.EXIT_OK
    unsigned = config(store, runner)
    unsigned.checkpointing.resume_url = store.url(CKPT).split("?")[0]  # 403, as S3 answers
    store.objects[CKPT] = kept(0, "r0")
    assert livepeer.run(unsigned) == livepeer.EXIT_OK
    refused = config(store, runner)
    refused.checkpointing.resume_url = "http://127.0.0.1:9/job/checkpoint.jsonl?X-Amz-Signature=s"
    with caplog.at_level(logging.INFO, logger="hybridgpu.runner"):
        assert run(refused, runner) == livepeer.EXIT_OK
    assert prompts(runner) == ["p0", "p1"] * 3
    assert "reading the checkpoint failed (ConnectError)" in caplog.text
    assert "X-Amz-Signature" not in caplog.text and "127.0.0.1:9" not in caplog.text


def test_sigterm_saves_exactly_the_finished_lines_and_exits_interrupted(
    store: ObjectServer,
) -> None:
    store.objects["in.jsonl"] = requests(6)
    before = signal.getsignal(signal.SIGTERM)
    runner = FlakyRunner("text-to-image", on_post=sigterm_at(3))
    assert run(config(store, runner), runner) == livepeer.EXIT_INTERRUPTED
    assert runner.posts == 3  # the request in flight was finished, no other one sent
    assert [o["index"] for o in read(store, CKPT)] == [0, 1, 2]
    assert all(o["error"] is None for o in read(store, CKPT))
    assert "out.jsonl" not in store.objects  # interrupted is not done
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_request_outliving_the_drain_time_is_abandoned(store: ObjectServer) -> None:
    store.objects["in.jsonl"] = requests(6)
    runner = FlakyRunner("text-to-image", on_post=sigterm_at(3, then_sleep=3.0))
    started = time.monotonic()
    assert run(config(store, runner, drain_seconds=0.2), runner) == livepeer.EXIT_INTERRUPTED
    assert time.monotonic() - started < 2.5  # did not wait for the answer
    assert [o["index"] for o in read(store, CKPT)] == [0, 1]


def test_an_interrupted_attempt_is_resumed_by_the_next_one_each_request_once(
    store: ObjectServer,
) -> None:
    store.objects["in.jsonl"] = requests(6)
    first = FlakyRunner("text-to-image", on_post=sigterm_at(4))
    assert run(config(store, first), first) == livepeer.EXIT_INTERRUPTED
    second = FlakyRunner("text-to-image")
    assert run(config(store, second), second) == livepeer.EXIT_OK
    assert prompts(first) + prompts(second) == [f"p{i}" for i in range(6)]
    out = read(store, "out.jsonl")
    assert [(o["index"], o["custom_id"]) for o in out] == [(i, f"r{i}") for i in range(6)]
    assert all(o["response"]["status_code"] == 200 for o in out)


def test_the_checkpoint_is_saved_every_n_requests_sent(store: ObjectServer) -> None:
    store.objects["in.jsonl"] = requests(5)
    runner = FlakyRunner("text-to-image")
    assert run(config(store, runner, every_requests=2), runner) == livepeer.EXIT_OK
    assert store.puts == [CKPT, CKPT, "out.jsonl"]
    assert [o["index"] for o in read(store, CKPT)] == [0, 1, 2, 3]


def test_a_save_never_replaces_a_checkpoint_that_holds_more(store: ObjectServer) -> None:
    store.objects["in.jsonl"] = requests(4)
    stored = kept(0, "r0") + kept(1, "r1", 503) + kept(2, "r2") + kept(3, "r3")
    store.objects[CKPT] = stored
    # Interrupted while resending line 1: lines 2 and 3 are still only in the stored object.
    runner = FlakyRunner("text-to-image", on_post=sigterm_at(1))
    assert run(config(store, runner, every_requests=1), runner) == livepeer.EXIT_INTERRUPTED
    assert store.objects[CKPT] == stored and store.puts == []


def test_sigterm_while_the_model_loads_exits_interrupted_sending_nothing(
    store: ObjectServer,
) -> None:
    store.objects["in.jsonl"] = requests(2)
    runner = FlakyRunner("text-to-image")
    cfg = config(store, runner)
    cfg.runner_url = "http://127.0.0.1:9"  # never ready
    kubelet = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    kubelet.start()
    started = time.monotonic()
    assert run(cfg, runner) == livepeer.EXIT_INTERRUPTED
    assert time.monotonic() - started < 3  # not the 5 s ready timeout
    assert runner.posts == 0 and store.puts == []


def test_without_checkpoint_urls_sigterm_keeps_its_default_meaning(store: ObjectServer) -> None:
    store.objects["in.jsonl"] = requests(1)
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def look(_n: int) -> None:
        seen.append(signal.getsignal(signal.SIGTERM))

    runner = FlakyRunner("text-to-image", on_post=look)
    assert run(plain_config(store, runner), runner) == livepeer.EXIT_OK
    # 75 would promise a saved checkpoint: with nowhere to save, SIGTERM still ends it (143).
    assert seen == [before]
