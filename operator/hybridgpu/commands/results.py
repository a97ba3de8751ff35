"""``hybridgpu results NAME [-n NS] [-o FILE]``: stream a job's output object.

The store credentials come from the environment: the operator's own settings
(``HYBRIDGPU_RESULTS_*``, as the chart sets them) when present, else the user's own
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` / ``AWS_REGION``;
``--endpoint`` overrides the endpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

from hybridgpu.results.store import ResultStore, StoreConfig, StoreError
from hybridgpu.results.urls import ObjectURL


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("results", help="stream a job's output (JSONL)")
    parser.add_argument("name", help="InferenceJob name")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    parser.add_argument("--endpoint", default="", help="S3 endpoint (default: from the env)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    parser.set_defaults(func=run)


def output_url(body: Mapping[str, Any]) -> tuple[ObjectURL | None, str]:
    """The job's output object, or None and why there is none yet."""
    status = body.get("status") or {}
    output = status.get("output") or {}
    uri = output.get("uri")
    phase = status.get("phase") or "Pending"
    if not uri:
        return None, f"the job has no output location yet (phase {phase})"
    if phase != "Succeeded":
        return None, f"the output is not complete yet (phase {phase}, {output.get('summary', '')})"
    return ObjectURL.parse(uri, "status.output.uri"), ""


def store_config(bucket: str, env: Mapping[str, str], endpoint: str = "") -> StoreConfig:
    """Credentials from the operator's settings, else the user's AWS_* environment."""
    if env.get("HYBRIDGPU_RESULTS_ACCESS_KEY_ID"):
        key = env["HYBRIDGPU_RESULTS_ACCESS_KEY_ID"]
        secret = env.get("HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY", "")
        default_endpoint = env.get("HYBRIDGPU_RESULTS_ENDPOINT", "")
        region = env.get("HYBRIDGPU_RESULTS_REGION", "us-east-1")
    else:
        key = env.get("AWS_ACCESS_KEY_ID", "")
        secret = env.get("AWS_SECRET_ACCESS_KEY", "")
        default_endpoint = env.get("AWS_ENDPOINT_URL", "")
        region = env.get("AWS_REGION", "us-east-1")
    return StoreConfig(
        bucket=bucket,
        prefix="",
        endpoint=endpoint or default_endpoint,
        region=region,
        access_key_id=key,
        secret_access_key=secret,
    )


def copy_output(store: ResultStore, url: ObjectURL, out: BinaryIO) -> int:
    """Stream the object into ``out``; the bytes written."""
    written = 0
    for chunk in store.stream_sync(url):
        out.write(chunk)
        written += len(chunk)
    out.flush()
    return written


def run(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        print(f"cannot reach the cluster: {exc}", file=sys.stderr)
        return 2
    try:
        body = client.CustomObjectsApi().get_namespaced_custom_object(
            "hybridgpu.dev", "v1alpha1", args.namespace, "inferencejobs", args.name
        )
    except ApiException as exc:
        if exc.status == 404:
            print(f"InferenceJob {args.namespace}/{args.name} not found", file=sys.stderr)
            return 1
        raise
    url, why = output_url(dict(body))  # type: ignore[call-overload]
    if url is None:
        print(f"InferenceJob {args.namespace}/{args.name}: {why}", file=sys.stderr)
        return 1
    store = ResultStore(store_config(url.bucket, os.environ, args.endpoint))
    try:
        if args.output == "-":
            try:
                copy_output(store, url, sys.stdout.buffer)
            except BrokenPipeError:
                # The reader stopped (`| head`): that is not an error. Point stdout at
                # /dev/null so the interpreter's own flush at exit does not raise again.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        else:
            with open(args.output, "wb") as out:
                size = copy_output(store, url, out)
            print(f"wrote {size} bytes of {url} to {args.output}", file=sys.stderr)
    except StoreError as exc:
        print(f"cannot read the output: {exc.message}", file=sys.stderr)
        return 1
    return 0
