"""A stand-in for ``vllm run-batch``, honouring its documented CLI and the OpenAI Batch format.

From ``vllm/entrypoints/openai/run_batch.py`` (``make_arg_parser``, ``BatchRequestInput``,
``BatchRequestOutput``, ``upload_data``):
- ``-i/--input-file``: a local path or an http(s) URL read by HTTP GET;
- ``-o/--output-file``: a local path or an http(s) URL written by one HTTP PUT, which must
  answer 200 (vLLM raises otherwise and retries up to 5 times);
- ``--output-tmp-dir``: where the output is spooled before the upload;
- ``--model``, ``--served-model-name``, ``--response-role``; other engine arguments are taken
  and ignored, as a stand-in has no engine.
Each input line is ``{"custom_id", "method", "url", "body"}``; an unparsable line makes vLLM
raise (pydantic) and exit non-zero. ``/v1/chat/completions`` lines get a deterministic
``ChatCompletionResponse`` (the content names the model and echoes the last user message);
other URLs get vLLM's error line (``response.status_code`` 400, ``error`` its message).
Output lines keep input order (vLLM's ``OrderedStreamingWriter``).

``STANDIN_SECONDS_PER_REQUEST`` in its environment (a job's ``spec.env``) makes each request
take that long, so a test can act while a batch is half done.

Run as ``python -m tests.incluster.vllm_standin run-batch ...`` (the node agent maps the
``vllm`` executable of the vLLM image to this).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

SUPPORTED = ("/v1/chat/completions", "/v1/embeddings", "/score", "/rerank")


def _lines(path_or_url: str) -> Iterator[bytes]:
    if path_or_url.startswith(("http://", "https://")):
        with urllib.request.urlopen(path_or_url, timeout=60) as response:
            for raw in response:
                if raw.strip():
                    yield raw
    else:
        with open(path_or_url, "rb") as f:
            for raw in f:
                if raw.strip():
                    yield raw


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def completion(model: str, role: str, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    text = f"[{model}] {last}" if isinstance(last, str) else f"[{model}]"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "id": f"chatcmpl-{_digest(custom_id, text)}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": role, "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def output_for(index: int, request: Any, model: str, role: str) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValueError(f"line {index + 1}: not an object")
    missing = [k for k in ("custom_id", "method", "url", "body") if k not in request]
    if missing:
        raise ValueError(f"line {index + 1}: missing {', '.join(missing)}")
    custom_id, url = request["custom_id"], request["url"]
    line_id = f"vllm-{_digest(custom_id, str(index))}"
    if url == "/v1/chat/completions":
        body = completion(model, role, custom_id, request["body"])
        return {
            "id": line_id,
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": f"vllm-batch-{line_id}", "body": body},
            "error": None,
        }
    message = (
        f"URL {url} was used. Supported endpoints: /v1/chat/completions, /v1/embeddings, "
        "/score, /rerank."
    )
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": 400, "request_id": f"vllm-batch-{line_id}", "body": None},
        "error": message,
    }


def _upload(url: str, path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        request = urllib.request.Request(
            url, data=f, method="PUT", headers={"Content-Length": str(size)}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 200:
                raise RuntimeError(f"Failed to upload file.\nStatus: {response.status}")


def run_batch(args: argparse.Namespace) -> int:
    model = (args.served_model_name or [args.model])[0]
    to_url = args.output_file.startswith(("http://", "https://"))
    if to_url:
        handle, path = tempfile.mkstemp(suffix=".jsonl", dir=args.output_tmp_dir)
        os.close(handle)
    else:
        path = args.output_file
    try:
        pause = float(os.environ.get("STANDIN_SECONDS_PER_REQUEST", "0"))
        with open(path, "w", encoding="utf-8") as out:
            for index, raw in enumerate(_lines(args.input_file)):
                time.sleep(pause)
                request = json.loads(raw)  # raises on a bad line, as vLLM's validation does
                line = output_for(index, request, model, args.response_role)
                out.write(json.dumps(line) + "\n")
        if to_url:
            _upload(args.output_file, path)
    finally:
        if to_url:
            os.unlink(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("run-batch")
    batch.add_argument("-i", "--input-file", required=True)
    batch.add_argument("-o", "--output-file", required=True)
    batch.add_argument("--output-tmp-dir", default=None)
    batch.add_argument("--response-role", default="assistant")
    batch.add_argument("--model", default="facebook/opt-125m")  # vLLM's EngineArgs default
    batch.add_argument("--served-model-name", nargs="+", default=None)
    args, _engine_args = parser.parse_known_args(argv)
    return run_batch(args)


if __name__ == "__main__":
    sys.exit(main())
