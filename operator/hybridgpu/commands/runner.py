"""``hybridgpu runner``: the programs an in-cluster Job's Pod runs (see hybridgpu.runner)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("runner", help="run inside an in-cluster Job's Pod")
    runners = parser.add_subparsers(dest="runner", metavar="RUNNER", required=True)
    livepeer = runners.add_parser(
        "livepeer",
        help="feed a Livepeer ai-runner in this Pod the input JSONL, PUT the output JSONL",
    )
    livepeer.add_argument("--pipeline", required=True, help="e.g. text-to-image")
    livepeer.add_argument("--model", default="", help="model_id for requests without one")
    livepeer.add_argument("--runner-url", default="http://127.0.0.1:8000")
    livepeer.add_argument(
        "--input-url",
        default=os.environ.get("HYBRIDGPU_INPUT_URL", ""),
        help="GET URL of the input JSONL (default $HYBRIDGPU_INPUT_URL)",
    )
    livepeer.add_argument(
        "--output-url",
        default=os.environ.get("HYBRIDGPU_OUTPUT_URL", ""),
        help="PUT URL of the output JSONL (default $HYBRIDGPU_OUTPUT_URL)",
    )
    livepeer.add_argument("--ready-timeout", type=float, default=1800.0)
    livepeer.add_argument("--request-timeout", type=float, default=600.0)
    _checkpoint_arguments(livepeer)
    livepeer.set_defaults(func=_livepeer)


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    # The operator passes the URLs; the cadence keeps these defaults unless the runner
    # image's environment says otherwise (spec.env may not set HYBRIDGPU_* variables).
    # String defaults: argparse converts them when this runner is chosen, so a bad value
    # fails this command only, not every hybridgpu command.
    env = os.environ.get
    parser.add_argument(
        "--checkpoint-url",
        default=env("HYBRIDGPU_CHECKPOINT_URL", ""),
        help="PUT URL of the job's checkpoint JSONL (default $HYBRIDGPU_CHECKPOINT_URL)",
    )
    parser.add_argument(
        "--resume-url",
        default=env("HYBRIDGPU_RESUME_URL", ""),
        help="GET URL of the same object (default $HYBRIDGPU_RESUME_URL)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=env("HYBRIDGPU_CHECKPOINT_EVERY", "1000"),
        help="save after this many requests sent (default $HYBRIDGPU_CHECKPOINT_EVERY, 1000)",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=env("HYBRIDGPU_CHECKPOINT_SECONDS", "300"),
        help="...or this long after the last save (default $HYBRIDGPU_CHECKPOINT_SECONDS, 300)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=env("HYBRIDGPU_CHECKPOINT_DRAIN_SECONDS", "20"),
        help="after SIGTERM, how long the request in flight may take "
        "(default $HYBRIDGPU_CHECKPOINT_DRAIN_SECONDS, 20)",
    )


def _livepeer(args: argparse.Namespace) -> int:
    from hybridgpu.runner import checkpoint, livepeer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    livepeer.quiet_http_logs()
    if not args.input_url or not args.output_url:
        logging.error("--input-url and --output-url (or their environment variables) are required")
        return livepeer.EXIT_BAD_INPUT
    if bool(args.checkpoint_url) != bool(args.resume_url):
        logging.warning("a checkpoint needs both its PUT and GET URLs: not checkpointing")
    config = livepeer.Config(
        pipeline=args.pipeline,
        model=args.model,
        runner_url=args.runner_url.rstrip("/"),
        input_url=args.input_url,
        output_url=args.output_url,
        ready_timeout=args.ready_timeout,
        request_timeout=args.request_timeout,
        checkpointing=checkpoint.Settings(
            checkpoint_url=args.checkpoint_url,
            resume_url=args.resume_url,
            every_requests=max(1, args.checkpoint_every),
            every_seconds=args.checkpoint_seconds,
            drain_seconds=args.drain_seconds,
        ),
    )
    return livepeer.run(config)
