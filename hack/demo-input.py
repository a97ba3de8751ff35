"""Write the demo's input JSONL (OpenAI Batch lines) into the demo's result store.

Usage: .venv/bin/python hack/demo-input.py s3://bucket/key.jsonl COUNT [tickets|letters]
(credentials and endpoint from HYBRIDGPU_RESULTS_*: see hack/seaweedfs.sh env)
"""

from __future__ import annotations

import json
import sys

from hybridgpu.results.store import ResultStore
from hybridgpu.results.urls import ObjectURL
from hybridgpu.settings import Settings

PROMPTS = {
    "tickets": ("ticket", "Summarise ticket {i} about {topic}"),
    "letters": ("letter", "Draft discharge letter {i} for a patient treated for {topic}"),
}
TOPICS = {
    "tickets": ("a refund", "a late delivery", "a broken zip", "a login problem", "an invoice"),
    "letters": ("a fracture", "pneumonia", "a burn", "dehydration", "an allergic reaction"),
}


def main() -> int:
    url = ObjectURL.parse(sys.argv[1], "url")
    count = int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "tickets"
    prefix, prompt = PROMPTS[kind]
    config = Settings.from_env().result_store()
    if config is None:
        print("HYBRIDGPU_RESULTS_BUCKET is not set", file=sys.stderr)
        return 2
    lines = b"".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{i:04d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "messages": [
                        {
                            "role": "user",
                            "content": prompt.format(i=i, topic=TOPICS[kind][i % 5]),
                        }
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
