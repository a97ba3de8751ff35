"""A small HTTP object server: GET and PUT of whole objects, as presigned URLs are used.

It answers as S3 does for the two calls the in-cluster runtimes make with presigned URLs:
``GET`` an object (200 with the bytes, 404 when missing) and ``PUT`` an object (200, whole
body, ``Content-Length`` required: S3 refuses chunked uploads without it). The query string
stands for a signature and is ignored except that a URL must carry one, so a runtime that
drops it fails here as it would on S3.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit


class _Handler(BaseHTTPRequestHandler):
    objects: ClassVar[dict[str, bytes]]
    puts: ClassVar[list[str]]

    def log_message(self, format: str, *args: object) -> None:  # quiet in test output
        return

    def _key(self) -> str | None:
        parts = urlsplit(self.path)
        return parts.path.lstrip("/") if parts.query else None

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        key = self._key()
        if key is None:
            return self._answer(403, b"AccessDenied: no signature")
        data = self.objects.get(key)
        if data is None:
            return self._answer(404, b"NoSuchKey")
        self._answer(200, data)
        return None

    def do_PUT(self) -> None:
        key = self._key()
        length = self.headers.get("Content-Length")
        if key is None:
            return self._answer(403, b"AccessDenied: no signature")
        if length is None:
            return self._answer(411, b"MissingContentLength")
        self.objects[key] = self.rfile.read(int(length))
        self.puts.append(key)
        self._answer(200)
        return None


class ObjectServer:
    """Objects by key, served on 127.0.0.1 at an ephemeral port."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        handler = type("Handler", (_Handler,), {"objects": self.objects, "puts": self.puts})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]

    def url(self, key: str) -> str:
        """A URL of ``key`` standing for a presigned one (GET and PUT alike)."""
        return f"http://127.0.0.1:{self.port}/{key}?X-Amz-Signature=test"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def object_server() -> Iterator[ObjectServer]:
    server = ObjectServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
