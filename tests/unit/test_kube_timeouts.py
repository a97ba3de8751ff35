"""Every Kubernetes call has a client timeout: a hung API server fails the step, not the loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from hybridgpu.kube import Kube


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers (an API server wedged mid-request)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


async def test_a_call_to_an_api_server_that_never_answers_times_out(silent_server: int) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{silent_server}"
    configuration.retries = False
    kube = Kube(client.ApiClient(configuration), timeout=(1.0, 1.0))
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        # Without the client timeout this waits forever: the outer bound turns that into
        # asyncio's TimeoutError, which the assertions below refuse.
        await asyncio.wait_for(kube.get_job("ns", "job"), 20)
    assert not isinstance(caught.value, asyncio.TimeoutError)
    elapsed = time.monotonic() - started
    assert (
        "timed out" in str(caught.value).lower() or "timeout" in type(caught.value).__name__.lower()
    )
    assert elapsed < 10, elapsed  # bounded by the read timeout, not hanging
