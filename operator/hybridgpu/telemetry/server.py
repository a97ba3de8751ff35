"""The dcgm-exporter stand-in's HTTP server: ``/metrics`` and ``/health`` on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hybridgpu.telemetry.dcgm_exporter import (
    DEFAULT_DRIVER_VERSION,
    Counter,
    FakeGpu,
    fake_gpus,
    load_counters,
    parse_faults,
    render_metrics,
)
from hybridgpu.telemetry.sources import Source, SourceError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DcgmExporterServer:
    """Refreshes the fake GPUs from ``source`` every ``refresh_s`` and serves them.

    ``port=0`` binds a free port; read it back from ``.port`` after ``start()``.
    """

    def __init__(
        self,
        source: Source,
        *,
        host: str = "127.0.0.1",
        port: int = 9400,
        refresh_s: float = 5.0,
        counters: tuple[Counter, ...] | None = None,
        driver_version: str = DEFAULT_DRIVER_VERSION,
        noise: float = 3.0,
        clock: Callable[[], float] = time.time,
        faults_path: Path | None = None,
    ) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.counters = counters if counters is not None else load_counters()
        self.driver_version = driver_version
        self.noise = noise
        self.clock = clock
        self.faults_path = faults_path
        self._faults: dict[str, dict[str, float]] = {}
        self._faults_mtime: float | None = None
        self._gpus: list[FakeGpu] | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    def _read_faults(self) -> None:
        """Re-read the faults file when it changed; a bad one keeps the last good faults."""
        if self.faults_path is None:
            return
        try:
            mtime = self.faults_path.stat().st_mtime
            if mtime == self._faults_mtime:
                return
            faults = parse_faults(json.loads(self.faults_path.read_text()), str(self.faults_path))
        except FileNotFoundError:
            faults, mtime = {}, -1.0  # no file: no faults
        except (OSError, ValueError) as exc:
            log.warning("dcgm-exporter stand-in: faults: %s", exc)
            return
        with self._lock:
            self._faults = faults
        self._faults_mtime = mtime

    def refresh(self) -> None:
        """Read the source once; on failure keep serving the last good state."""
        self._read_faults()
        try:
            state = self.source.read()
        except SourceError as exc:
            log.warning("dcgm-exporter stand-in: %s", exc)
            with self._lock:
                self._error = str(exc)
            return
        gpus = fake_gpus(state.nodes, state.pods)
        with self._lock:
            self._gpus = gpus
            self._error = None

    def metrics_text(self) -> str | None:
        """The current exposition, or None before the first successful read."""
        with self._lock:
            gpus = self._gpus
            faults = self._faults
        if gpus is None:
            return None
        return render_metrics(
            gpus,
            self.clock(),
            self.counters,
            driver_version=self.driver_version,
            noise=self.noise,
            faults=faults,
        )

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def start(self) -> None:
        """Read once, then serve and refresh in background threads."""
        self.refresh()
        for target in (self._httpd.serve_forever, self._refresh_loop):
            thread = threading.Thread(target=target, name=f"dcgm-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    text = server.metrics_text()
                    if text is None:
                        with server._lock:
                            reason = server._error or "no data yet"
                        self._send(503, f"no GPU inventory yet: {reason}\n")
                    else:
                        self._send(200, text, CONTENT_TYPE)
                elif path == "/health":
                    self._send(200, "ok\n")
                else:
                    self._send(404, "not found; try /metrics\n")

            def _send(self, status: int, body: str, ctype: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler
