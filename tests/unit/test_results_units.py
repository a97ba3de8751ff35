"""The pure parts of results: URLs, keys, chunking, input lines, output lines, API rules."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hybridgpu.api.inferencejob import InferenceJobSpec
from hybridgpu.results.layout import JobLayout, chunk_size, tenant_prefix
from hybridgpu.results.output import line_failed
from hybridgpu.results.reader import InputError, item_requests, parse_line
from hybridgpu.results.store import StoreConfig, _clean
from hybridgpu.results.urls import ObjectURL
from hybridgpu.settings import Settings


def spec(**input_: object) -> dict[str, object]:
    return {
        "task": "llm",
        "model": "m",
        "estimatedDuration": "1h",
        "input": {"requests": 1, **input_},
    }


def test_object_urls_parse_join_and_stay_inside_their_prefix() -> None:
    url = ObjectURL.parse("s3://results/hg/ns/job.jsonl", "f")
    assert (url.bucket, url.key) == ("results", "hg/ns/job.jsonl")
    root = ObjectURL("results", "hg")
    assert url.within(tenant_prefix(root, "ns"))
    assert not url.within(tenant_prefix(root, "n"))  # a segment, not a string prefix
    assert not ObjectURL("other", "hg/ns/x").within(tenant_prefix(root, "ns"))
    for bad in ("http://results/x", "s3://Results/x", "s3://results/../other/x", "s3://r"):
        with pytest.raises(ValueError, match="f:"):
            ObjectURL.parse(bad, "f")
    assert str(root.join("ns", "j", "u")) == "s3://results/hg/ns/j/u"


def test_part_keys_sort_and_parse_and_chunks_depend_on_the_total_only() -> None:
    layout = JobLayout.for_job(ObjectURL("b", "p"), "ns", "j", "uid")
    assert layout.part(32).key == "p/ns/j/uid/parts/0000000032.jsonl"
    assert JobLayout.part_first(layout.part(32).key) == 32
    assert JobLayout.part_first("p/ns/j/uid/parts/.hybridgpu-write-probe") is None
    assert chunk_size(1) == 16 and chunk_size(40) == 16
    assert chunk_size(1_000_000) == 1024 and chunk_size(100_000) == 391
    assert layout.output.key == "p/ns/j/uid/output.jsonl"


def test_input_lines_name_their_line_and_take_both_formats() -> None:
    batch = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"x":1}}'
    assert parse_line(batch, 1, "src") == ("a", {"x": 1})
    assert parse_line(b'{"custom_id":"b","prompt":"fox"}', 2, "src") == ("b", {"prompt": "fox"})
    assert parse_line(b"   ", 3, "src") is None
    for raw, words in (
        (b"{oops", "line 7: not JSON"),
        (b"[1]", "line 7: not a JSON object"),
        (b'{"prompt":"no id"}', "line 7: custom_id"),
        (b'{"custom_id":"a","url":"/v1/embeddings","body":{}}', "not served"),
    ):
        with pytest.raises(InputError, match=words):
            parse_line(raw, 7, "src")


def test_inline_items_get_ids_and_a_repeated_one_is_refused() -> None:
    got = item_requests([{"prompt": "a"}, {"custom_id": "x", "prompt": "b"}], "spec.input.inline")
    assert [(r.custom_id, r.body) for r in got] == [
        ("request-0", {"prompt": "a"}),
        ("x", {"prompt": "b"}),
    ]
    with pytest.raises(InputError) as dup:
        item_requests([{"custom_id": "x"}, {"custom_id": "x"}], "spec.input.inline")
    assert dup.value.reason == "DuplicateCustomId" and "item 1" in dup.value.message


def test_output_lines_that_errored_are_counted_as_failed() -> None:
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {}}, "error": None}
    assert not line_failed(json.dumps(ok).encode())
    assert line_failed(json.dumps({**ok, "error": {"message": "x"}}).encode())
    assert line_failed(json.dumps({**ok, "response": {"status_code": 429}}).encode())
    assert line_failed(b"not json")


def test_the_api_takes_one_input_source_and_load_tests_only_alone() -> None:
    assert InferenceJobSpec.model_validate(spec(source="s3://bkt/in.jsonl")).input.has_requests()
    assert InferenceJobSpec.model_validate(spec(loadTest=True)).input.has_requests()
    assert not InferenceJobSpec.model_validate(spec()).input.has_requests()
    with pytest.raises(ValidationError, match="at most one of source"):
        InferenceJobSpec.model_validate(spec(source="s3://bkt/in.jsonl", inline=[{"a": 1}]))
    with pytest.raises(ValidationError, match="loadTest"):
        InferenceJobSpec.model_validate(spec(loadTest=True, inline=[{"a": 1}]))
    with pytest.raises(ValidationError, match="source"):
        InferenceJobSpec.model_validate(spec(source="https://bkt/in.jsonl"))
    job = InferenceJobSpec.model_validate(
        {**spec(), "output": {"uri": "s3://mine/out/", "credentialsSecretRef": {"name": "c"}}}
    )
    assert job.output is not None and job.output.credentials_secret_ref is not None


def test_store_keys_never_show_in_reprs_or_error_texts() -> None:
    config = StoreConfig(bucket="b", access_key_id="AKIDEXAMPLE", secret_access_key="s3cr3t-value")
    assert "AKIDEXAMPLE" not in repr(config) and "s3cr3t-value" not in repr(config)
    settings = Settings(
        results_access_key_id="AKIDEXAMPLE", results_secret_access_key="s3cr3t-value"
    )
    assert "s3cr3t-value" not in repr(settings)
    text = (
        "PUT http://h/b/k?X-Amz-Signature=abc123&X-Amz-Credential=AKID%2F... failed "
        "secret_access_key=s3cr3t"
    )
    cleaned = _clean(text)
    assert "abc123" not in cleaned and "s3cr3t" not in cleaned and "AKID" not in cleaned
