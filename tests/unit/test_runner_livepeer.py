"""``hybridgpu runner livepeer`` against the ai-runner stand-in and a GET/PUT object server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hybridgpu.runner import livepeer
from hybridgpu.runner.jsonl import BadInput, parse_request, split_lines
from tests.incluster import ai_runner_standin
from tests.incluster.objects import ObjectServer, object_server


class FlakyRunner:
    """The ai-runner stand-in's answers behind a server that fails the first ``fail`` POSTs.

    ``bodies`` are the requests it was sent; ``on_post(n)`` runs before it answers POST n
    (1-based), e.g. to send the runner SIGTERM while a request is in flight."""

    def __init__(
        self,
        pipeline: str,
        fail: int = 0,
        status: int = 503,
        on_post: Callable[[int], None] | None = None,
    ) -> None:
        self.fail, self.status, self.posts = fail, status, 0
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"status": "OK"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts += 1
                outer.bodies.append(body)
                if on_post is not None:
                    on_post(outer.posts)
                if outer.posts <= outer.fail:
                    self._send(outer.status, {"detail": {"msg": "busy"}})
                    return
                self._send(*ai_runner_standin.answer(pipeline, "default-model", body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store() -> Iterator[ObjectServer]:
    with object_server() as server:
        yield server


def config(
    store: ObjectServer, runner: FlakyRunner, pipeline: str = "text-to-image"
) -> livepeer.Config:
    return livepeer.Config(
        pipeline=pipeline,
        model="stabilityai/sd-turbo",
        runner_url=runner.url,
        input_url=store.url("in.jsonl"),
        output_url=store.url("out.jsonl"),
        ready_timeout=5,
        retry_delay=0.01,
    )


def lines(store: ObjectServer) -> list[dict[str, Any]]:
    return [json.loads(x) for x in store.objects["out.jsonl"].splitlines()]


def test_one_output_line_per_request_in_order_with_media_inlined(store: ObjectServer) -> None:
    runner = FlakyRunner("text-to-image")
    store.objects["in.jsonl"] = (
        b'{"custom_id": "a", "body": {"prompt": "fox"}}\n\n{"prompt": "lake", "seed": 7}\n'
    )
    try:
        assert livepeer.run(config(store, runner)) == livepeer.EXIT_OK
    finally:
        runner.close()
    out = lines(store)
    assert [(o["index"], o["custom_id"]) for o in out] == [(0, "a"), (1, None)]
    assert out[1]["response"]["body"]["images"][0]["seed"] == 7
    assert out[0]["response"]["body"]["images"][0]["url"].startswith("data:image/png;base64,")
    assert store.puts == ["out.jsonl"]  # one object, written once


def test_a_custom_id_beside_the_bodys_fields_is_the_lines_not_the_ai_runners(
    store: ObjectServer,
) -> None:
    """The operator's reader takes ``{"custom_id", "prompt", ...}`` as a request with that id
    (results/reader.py); the runner must too, or its lines would not match the network's for
    the same input (and a checkpoint handed between them would match nothing)."""
    runner = FlakyRunner("text-to-image")
    store.objects["in.jsonl"] = b'{"custom_id": "fox-1", "prompt": "fox", "seed": 3}\n'
    try:
        assert livepeer.run(config(store, runner)) == livepeer.EXIT_OK
    finally:
        runner.close()
    (out,) = lines(store)
    assert out["custom_id"] == "fox-1"
    assert runner.bodies == [{"prompt": "fox", "seed": 3, "model_id": "stabilityai/sd-turbo"}]


def test_a_refused_request_is_an_error_line_and_the_batch_goes_on(store: ObjectServer) -> None:
    runner = FlakyRunner("text-to-image")
    store.objects["in.jsonl"] = b'{"negative_prompt": "no prompt"}\n{"prompt": "ok"}\n'
    try:
        assert livepeer.run(config(store, runner)) == livepeer.EXIT_OK
    finally:
        runner.close()
    bad, good = lines(store)
    assert bad["response"]["status_code"] == 422
    assert bad["error"] == {"message": "HTTP 422: prompt field is required"}
    assert good["error"] is None


def test_a_busy_runner_is_retried(store: ObjectServer) -> None:
    runner = FlakyRunner("text-to-speech", fail=2)
    store.objects["in.jsonl"] = b'{"text": "hello"}\n'
    try:
        assert livepeer.run(config(store, runner, "text-to-speech")) == livepeer.EXIT_OK
    finally:
        runner.close()
    (line,) = lines(store)
    assert runner.posts == 3
    assert line["response"]["body"]["audio"]["url"].startswith("data:audio/wav;base64,")


def test_a_bad_line_fails_with_its_number_and_uploads_nothing(store: ObjectServer) -> None:
    runner = FlakyRunner("text-to-image")
    store.objects["in.jsonl"] = b'{"prompt": "a"}\n\n[1, 2]\n'
    try:
        assert livepeer.run(config(store, runner)) == livepeer.EXIT_BAD_INPUT
    finally:
        runner.close()
    assert "out.jsonl" not in store.objects


def test_a_missing_input_or_unwritable_output_fails(store: ObjectServer) -> None:
    runner = FlakyRunner("text-to-image")
    try:
        assert livepeer.run(config(store, runner)) == livepeer.EXIT_FAILED  # no input object
        store.objects["in.jsonl"] = b'{"prompt": "a"}\n'
        cfg = config(store, runner)
        cfg.output_url = cfg.output_url.split("?")[0]  # unsigned: the store refuses it
        assert livepeer.run(cfg) == livepeer.EXIT_FAILED
    finally:
        runner.close()
    assert store.puts == []


def test_split_lines_holds_one_line_at_most() -> None:
    chunks = [b'{"a"', b": 1}\n\n", b'{"b": 2}']
    assert list(split_lines(chunks)) == [(1, b'{"a": 1}'), (3, b'{"b": 2}')]
    with pytest.raises(BadInput, match="input line 2: longer than 8 bytes"):
        list(split_lines([b"{}\n", b"x" * 9], max_line=8))


def test_parse_request_names_the_line() -> None:
    assert parse_request(1, b'{"custom_id": "x", "body": {"prompt": "p"}}') == (
        "x",
        {"prompt": "p"},
    )
    assert parse_request(2, b'{"prompt": "p"}') == (None, {"prompt": "p"})
    for line, message in (
        (b"nope", "input line 4: not JSON"),
        (b"[]", "input line 4: not a JSON object"),
        (b'{"custom_id": 3, "body": {}}', "input line 4: custom_id must be a non-empty string"),
    ):
        with pytest.raises(BadInput, match=message):
            parse_request(4, line)


def test_the_command_needs_both_urls_and_keeps_them_out_of_its_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    from hybridgpu import cli

    monkeypatch.delenv("HYBRIDGPU_INPUT_URL", raising=False)
    monkeypatch.delenv("HYBRIDGPU_OUTPUT_URL", raising=False)
    assert cli.main(["runner", "livepeer", "--pipeline", "text-to-image"]) == 2
    # httpx logs each request's URL at INFO; a presigned URL is a credential.
    assert logging.getLogger("httpx").level == logging.WARNING
