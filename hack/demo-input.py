"""Write the demo's input JSONL (OpenAI Batch lines) into the demo's result store.

Usage: .venv/bin/python hack/demo-input.py s3://bucket/key.jsonl COUNT
(credentials and endpoint from HYBRIDGPU_RESULTS_*: see hack/seaweedfs.sh env)
"""

from __future__ import annotations

import json
import sys

from hybridgpu.results.store import ResultStore
from hybridgpu.results.urls import ObjectURL
from hybridgpu.settings import Settings

TOPICS = ("a refund", "a late delivery", "a broken zip", "a login problem", "a missing invoice")


def main() -> int:
    url = ObjectURL.parse(sys.argv[1], "url")
    count = int(sys.argv[2])
    config = Settings.from_env().result_store()
    if config is None:
        print("HYBRIDGPU_RESULTS_BUCKET is not set", file=sys.stderr)
        return 2
    lines = b"".join(
        json.dumps(
            {
                "custom_id": f"ticket-{i:04d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "messages": [
                        {"role": "user", "content": f"Summarise ticket {i} about {TOPICS[i % 5]}"}
                    ],
                    "max_tokens": 64,
                },
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )
    ResultStore(config).put_sync(url, lines, content_type="application/jsonl")
    print(f"wrote {count} requests to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
