"""The shared HTTP policy: retries, Retry-After, circuit breaker, redaction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from hybridgpu.networks.errors import (
    BadRequest,
    CircuitOpen,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from hybridgpu.networks.http import (
    CircuitBreaker,
    Health,
    HttpPolicy,
    ProviderClient,
    Redactor,
    bypassing_breaker,
    full_jitter,
    retry_after_seconds,
)

POLICY = HttpPolicy(max_attempts=4, backoff_base=1.0, backoff_cap=8.0, failure_threshold=3)
SECRET = "s3cr3t-token-value"


def client_for(responses: list[httpx.Response | Exception], policy: HttpPolicy = POLICY):  # type: ignore[no-untyped-def]
    calls: list[httpx.Request] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = ProviderClient(
        "p",
        "http://127.0.0.1:1",
        {"Authorization": f"Bearer {SECRET}"},
        policy,
        Redactor(SECRET),
        sleep=sleep,
        rng=random.Random(1),
        transport=httpx.MockTransport(handler),
    )
    return client, calls, sleeps


async def test_idempotent_calls_are_retried_until_success() -> None:
    client, calls, sleeps = client_for(
        [httpx.Response(503), httpx.Response(502), httpx.Response(200, json={})]
    )
    response = await client.request("GET", "/x", retry=True)
    assert response.status_code == 200
    assert len(calls) == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0
    assert client.breaker.state == "Closed"
    await client.aclose()


async def test_calls_that_may_not_be_retried_fail_on_the_first_error() -> None:
    client, calls, _ = client_for([httpx.Response(503), httpx.Response(200)])
    with pytest.raises(Unavailable):
        await client.request("POST", "/create", retry=False)
    assert len(calls) == 1
    await client.aclose()


async def test_transport_errors_and_timeouts_become_unavailable() -> None:
    client, calls, _ = client_for(
        [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
        HttpPolicy(max_attempts=2, backoff_base=0.0),
    )
    with pytest.raises(Unavailable, match="timed out"):
        await client.request("GET", "/x", retry=True)
    assert len(calls) == 2
    await client.aclose()


async def test_retry_after_is_honoured_on_429_and_503() -> None:
    client, _, sleeps = client_for(
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.Response(200),
        ]
    )
    await client.request("GET", "/x", retry=True)
    assert sleeps == [7.0, 2.0]
    await client.aclose()


async def test_retry_after_beyond_the_cap_raises_rate_limited() -> None:
    client, calls, _ = client_for([httpx.Response(429, headers={"Retry-After": "3600"})])
    with pytest.raises(RateLimited) as caught:
        await client.request("GET", "/x", retry=True)
    assert caught.value.retry_after == 3600.0
    assert len(calls) == 1
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (409, BadRequest),
    ],
)
async def test_client_errors_are_not_retried_and_do_not_trip_the_breaker(
    status: int, error: type
) -> None:
    client, calls, _ = client_for([httpx.Response(status, text="nope")] * 5)
    for _ in range(4):
        with pytest.raises(error):
            await client.request("GET", "/x", retry=True)
    assert len(calls) == 4
    assert client.breaker.state == "Closed"
    await client.aclose()


async def test_breaker_opens_and_refuses_without_sending() -> None:
    client, calls, _ = client_for(
        [httpx.Response(500)] * 3, HttpPolicy(max_attempts=1, failure_threshold=3)
    )
    for _ in range(3):
        with pytest.raises(Unavailable):
            await client.request("GET", "/x", retry=True)
    with pytest.raises(CircuitOpen):
        await client.request("GET", "/x", retry=True)
    assert len(calls) == 3
    assert client.breaker.state == "Open"
    await client.aclose()


async def test_an_owed_cancel_is_sent_through_an_open_breaker() -> None:
    client, calls, _ = client_for(
        [httpx.Response(500)] * 3 + [httpx.Response(200, json={})],
        HttpPolicy(max_attempts=1, failure_threshold=3),
    )
    for _ in range(3):
        with pytest.raises(Unavailable):
            await client.request("GET", "/x", retry=True)
    assert client.breaker.state == "Open"
    with pytest.raises(CircuitOpen):  # outside, calls are refused unsent
        await client.request("GET", "/x", retry=True)
    assert len(calls) == 3
    with bypassing_breaker():
        response = await client.request("DELETE", "/instances/7/", retry=True)
    assert response.status_code == 200 and calls[-1].method == "DELETE"
    assert client.breaker.state == "Closed"  # the network answered: it is back
    await client.aclose()


def test_breaker_half_open_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "Open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "HalfOpen"
    assert breaker.allow()
    assert not breaker.allow(), "only one probe at a time"
    breaker.record_failure()
    assert breaker.state == "Open"
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "Closed" and breaker.allow()


async def test_credential_echoed_by_the_server_is_redacted() -> None:
    client, _, _ = client_for([httpx.Response(400, text=f"bad token Bearer {SECRET}")])
    with pytest.raises(BadRequest) as caught:
        await client.request("GET", "/x", retry=False)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert "[redacted]" in caught.value.message
    await client.aclose()


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp) == pytest.approx(30.0)


def test_full_jitter_stays_within_the_capped_exponential_bound() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        bound = min(8.0, 0.5 * 2 ** (attempt - 1))
        samples = [full_jitter(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert all(0 <= s <= bound for s in samples)
        assert max(samples) > bound * 0.8  # spreads over the whole range


def test_health_reports_error_rate_and_latency_percentiles() -> None:
    health = Health(window=4)
    assert health.error_rate == 0.0 and health.start_latency() == (None, None)
    for ok in (True, False, False, True, False):
        health.record(ok)
    assert health.error_rate == 0.75  # the window keeps the last four
    for seconds in range(1, 21):
        health.record_start_latency(float(seconds))
    p50, p95 = health.start_latency()
    assert p50 == pytest.approx(18.5)  # window of four: 17..20
    assert p95 is not None and 19.5 < p95 <= 20.0


async def test_a_network_that_only_ever_answers_429_opens_the_breaker() -> None:
    client, calls, _ = client_for(
        [httpx.Response(429, headers={"Retry-After": "0"})] * 5,
        HttpPolicy(max_attempts=1, rate_limited_threshold=5),
    )
    for _ in range(4):
        with pytest.raises(RateLimited):
            await client.request("GET", "/x", retry=True)
    assert client.breaker.state == "Closed"  # a few 429s: slow down, not down
    with pytest.raises(RateLimited):
        await client.request("GET", "/x", retry=True)
    assert client.breaker.state == "Open"
    with pytest.raises(CircuitOpen):
        await client.request("GET", "/x", retry=True)
    assert len(calls) == 5
    await client.aclose()


async def test_a_daily_quota_is_not_retried_until_it_resets() -> None:
    client, calls, sleeps = client_for(
        [httpx.Response(429, json={"error": "search_quota_exceeded", "msg": "daily quota"})] * 4
    )
    with pytest.raises(RateLimited) as caught:
        await client.request("POST", "/api/v0/bundles/", retry=True)
    assert len(calls) == 1 and sleeps == []  # one call, no retries burning the quota
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    await client.aclose()


def test_quotas_reset_at_utc_midnight() -> None:
    from datetime import UTC, datetime

    from hybridgpu.networks.http import seconds_to_utc_midnight

    assert seconds_to_utc_midnight(datetime(2026, 12, 2, 23, 0, tzinfo=UTC)) == 3600


async def test_a_presigned_url_quoted_back_by_a_network_loses_its_signature() -> None:
    """Container networks get the job's presigned URLs in its environment; a refusal that
    quotes the environment back must not put them in status or an Event."""
    signed = (
        "https://store.example/hybridgpu/ns/job/output.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIDEXAMPLE%2F20261203%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261203T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "f" * 64
    )
    as_json = signed.replace("&", "\\u0026")
    # Long enough that cutting before redacting would leave part of the signature.
    answer = f'{{"error":"invalid env","env":"HYBRIDGPU_OUTPUT_URL={as_json}"}}' + " " * 150
    client, _, _ = client_for([httpx.Response(400, text=answer)])
    with pytest.raises(BadRequest) as caught:
        await client.request("POST", "/deployments", retry=False)
    message = caught.value.message
    assert "store.example/hybridgpu/ns/job/output.jsonl?[redacted]" in message
    assert "AKIDEXAMPLE" not in message and "ffff" not in message and "Signature" not in message


def test_text_without_a_signed_url_is_left_alone() -> None:
    text = "GET https://api.example/v1/offers?limit=10&page=2: what? 404"
    assert Redactor(None)(text) == text
