"""The object store, through obstore (S3, GCS and Azure in one maintained Rust client that
also signs URLs; see docs/results.md for why it was chosen).

A :class:`ResultStore` holds one set of credentials and opens one obstore store per bucket it
is asked about. It calls obstore's blocking API in worker threads (``asyncio.to_thread``):
obstore 0.12's asyncio API aborts the interpreter at exit now and then (its Rust runtime's
threads race Python's finalisation; SIGABRT, exit status 134), the blocking one does not.
Every failure is a :class:`StoreError` whose message names the operation and the object URL,
never a credential or a signed query string.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import obstore
from obstore.store import S3Store

from hybridgpu.results.urls import ObjectURL

if TYPE_CHECKING:
    from obstore.store import ObjectStore

# The key names of a credentials Secret (the AWS CLI's environment variable names).
SECRET_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"  # noqa: S105 - a key name, not a value
SECRET_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105
SECRET_ENDPOINT = "AWS_ENDPOINT_URL"  # noqa: S105
SECRET_REGION = "AWS_REGION"  # noqa: S105
_SIGNED = re.compile(r"([?&])X-Amz-[A-Za-z-]+=[^&\s\"']*")
_KEYISH = re.compile(r"(?i)(access_key_id|secret_access_key|session_token|credential)[=:]\s*\S+")
LINE_LIMIT = 16 * 1024 * 1024
"""A longer line is an error (it would have to be held whole in memory)."""
PROBE_NAME = ".hybridgpu-write-probe"


class StoreError(Exception):
    """An object store operation failed; ``missing`` when the object does not exist."""

    def __init__(self, message: str, *, missing: bool = False, denied: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.missing = missing
        self.denied = denied


def _clean(text: str) -> str:
    """An error text without signatures or key material, on one line, at most 300 chars."""
    text = _SIGNED.sub(r"\1X-Amz-…", text)
    text = _KEYISH.sub(r"\1=…", text)
    return " ".join(text.split())[:300]


def _error(op: str, url: ObjectURL, exc: BaseException) -> StoreError:
    if isinstance(exc, FileNotFoundError):
        return StoreError(f"{op} {url}: no such object", missing=True)
    name = type(exc).__name__
    denied = name in ("PermissionDeniedError", "UnauthenticatedError") or any(
        s in str(exc) for s in ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKey")
    )
    return StoreError(f"{op} {url}: {name}: {_clean(str(exc))}", denied=denied)


@dataclass(frozen=True)
class StoreConfig:
    """Where a store is and how to sign in. The keys never appear in repr or messages."""

    bucket: str
    prefix: str = "hybridgpu"
    endpoint: str = ""
    """http(s)://host:port of an S3-compatible server; empty means AWS S3."""
    region: str = "us-east-1"
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)

    @property
    def root(self) -> ObjectURL:
        return ObjectURL(self.bucket, self.prefix.strip("/"))

    @classmethod
    def from_secret(
        cls, data: Mapping[str, str], bucket: str, *, default_endpoint: str = ""
    ) -> StoreConfig:
        """A tenant's credentials Secret (decoded). Raises ValueError naming a missing key."""
        for key in (SECRET_ACCESS_KEY_ID, SECRET_SECRET_ACCESS_KEY):
            if not data.get(key):
                raise ValueError(f"the credentials Secret has no key {key}")
        return cls(
            bucket=bucket,
            prefix="",
            endpoint=data.get(SECRET_ENDPOINT) or default_endpoint,
            region=data.get(SECRET_REGION) or "us-east-1",
            access_key_id=data[SECRET_ACCESS_KEY_ID],
            secret_access_key=data[SECRET_SECRET_ACCESS_KEY],
        )


def s3_factory(config: StoreConfig) -> Callable[[str], ObjectStore]:
    """Open S3Stores for ``config``'s endpoint and credentials, one per bucket."""

    def open_bucket(bucket: str) -> ObjectStore:
        options: dict[str, Any] = {"timeout": "60s", "connect_timeout": "10s"}
        if config.endpoint.startswith("http://"):
            options["allow_http"] = True
        kwargs: dict[str, Any] = {"region": config.region}
        if config.endpoint:
            # S3-compatible servers (SeaweedFS, Ceph, R2) are addressed by path, not by
            # virtual host names the loopback cannot resolve.
            kwargs["endpoint"] = config.endpoint
            kwargs["virtual_hosted_style_request"] = False
        if config.access_key_id:
            kwargs["access_key_id"] = config.access_key_id
            kwargs["secret_access_key"] = config.secret_access_key
        else:
            kwargs["skip_signature"] = True
        return S3Store(bucket, client_options=options, **kwargs)  # type: ignore[arg-type]

    return open_bucket


class ResultStore:
    """Read, write, list and sign objects with one set of credentials."""

    def __init__(
        self, config: StoreConfig, open_bucket: Callable[[str], ObjectStore] | None = None
    ) -> None:
        self.config = config
        self._open = open_bucket or s3_factory(config)
        self._stores: dict[str, ObjectStore] = {}

    def __repr__(self) -> str:
        return f"ResultStore({self.config.root}, endpoint={self.config.endpoint or 'aws'})"

    @property
    def root(self) -> ObjectURL:
        return self.config.root

    def _store(self, bucket: str) -> ObjectStore:
        store = self._stores.get(bucket)
        if store is None:
            store = self._stores[bucket] = self._open(bucket)
        return store

    async def put(
        self, url: ObjectURL, data: bytes | Iterable[bytes], *, content_type: str = ""
    ) -> dict[str, Any]:
        """Write one object (an iterable is uploaded in parts); the store's PutResult."""
        return await asyncio.to_thread(self.put_sync, url, data, content_type=content_type)

    def put_sync(
        self, url: ObjectURL, data: bytes | Iterable[bytes], *, content_type: str = ""
    ) -> dict[str, Any]:
        """:meth:`put`, blocking (for work already in a thread)."""
        attributes: dict[str, str] | None = {"Content-Type": content_type} if content_type else None
        try:
            result = obstore.put(
                self._store(url.bucket),
                url.key,
                data,
                attributes=attributes,
            )
        except Exception as exc:
            raise _error("writing", url, exc) from None
        return dict(result)

    def write_stream_sync(
        self, url: ObjectURL, chunks: Iterable[bytes], *, content_type: str = ""
    ) -> dict[str, Any]:
        """Write one object from ``chunks`` read while it is written (a multipart upload for
        large ones), blocking; the object's metadata afterwards. Unlike :meth:`put_sync` with
        an iterable, ``chunks`` may read from the store itself."""
        attributes: dict[str, str] | None = {"Content-Type": content_type} if content_type else None
        try:
            writer = obstore.open_writer(self._store(url.bucket), url.key, attributes=attributes)
            for chunk in chunks:
                writer.write(chunk)
            writer.close()
        except StoreError:
            raise
        except Exception as exc:
            raise _error("writing", url, exc) from None
        return self.head_sync(url) or {}

    async def get_bytes(self, url: ObjectURL, limit: int) -> bytes:
        """A whole (small) object; StoreError when it holds more than ``limit`` bytes."""
        return await asyncio.to_thread(self.get_bytes_sync, url, limit)

    def get_bytes_sync(self, url: ObjectURL, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self.stream_sync(url):
            size += len(chunk)
            if size > limit:
                raise StoreError(f"reading {url}: more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def stream_sync(self, url: ObjectURL, chunk: int = 1024 * 1024) -> Iterator[bytes]:
        """The object's bytes, in chunks of about ``chunk`` (blocking)."""
        try:
            result = obstore.get(self._store(url.bucket), url.key)
            for buf in result.stream(min_chunk_size=chunk):
                yield bytes(buf)
        except StoreError:
            raise
        except Exception as exc:
            raise _error("reading", url, exc) from None

    async def stream(self, url: ObjectURL, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes, in chunks of about ``chunk``, each read in a worker thread."""
        chunks = self.stream_sync(url, chunk)
        while (buf := await asyncio.to_thread(next, chunks, None)) is not None:
            yield buf

    def lines_sync(self, url: ObjectURL) -> Iterator[bytes]:
        """The object's lines (without the newline), streamed (blocking)."""
        return _split_lines(url, self.stream_sync(url))

    async def lines(self, url: ObjectURL) -> AsyncIterator[bytes]:
        """The object's lines (without the newline), streamed."""
        rest = b""
        async for chunk in self.stream(url):
            rest += chunk
            *whole, rest = rest.split(b"\n")
            for line in whole:
                yield line
            if len(rest) > LINE_LIMIT:
                raise StoreError(f"reading {url}: a line longer than {LINE_LIMIT} bytes")
        if rest:
            yield rest

    async def head(self, url: ObjectURL) -> dict[str, Any] | None:
        """The object's metadata (size, e_tag, last_modified), or None when it does not exist."""
        return await asyncio.to_thread(self.head_sync, url)

    def head_sync(self, url: ObjectURL) -> dict[str, Any] | None:
        try:
            meta = obstore.head(self._store(url.bucket), url.key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _error("looking up", url, exc) from None
        return dict(meta)

    async def keys(self, prefix: ObjectURL) -> list[str]:
        """Keys under ``prefix`` (treated as a directory)."""
        return await asyncio.to_thread(self.keys_sync, prefix)

    def keys_sync(self, prefix: ObjectURL) -> list[str]:
        key = prefix.key.rstrip("/") + "/" if prefix.key else ""
        try:
            return [
                str(meta["path"])
                for batch in obstore.list(self._store(prefix.bucket), key or None)
                for meta in batch
            ]
        except Exception as exc:
            raise _error("listing", prefix, exc) from None

    async def delete(self, url: ObjectURL) -> None:
        await asyncio.to_thread(self.delete_sync, url)

    def delete_sync(self, url: ObjectURL) -> None:
        try:
            obstore.delete(self._store(url.bucket), url.key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _error("deleting", url, exc) from None

    async def check_writable(self, prefix: ObjectURL) -> None:
        """Write and delete a probe object under ``prefix``: StoreError when that fails."""
        probe = prefix.join(PROBE_NAME)
        await self.put(probe, b"hybridgpu checks it may write here before dispatching\n")
        await self.delete(probe)

    def sign(self, method: Literal["GET", "PUT"], url: ObjectURL, expires: timedelta) -> str:
        """A presigned URL for one object (S3 only): handed to runners, never logged."""
        store = self._store(url.bucket)
        if not isinstance(store, S3Store):
            raise StoreError(f"signing {url}: this store cannot sign URLs")
        try:
            return obstore.sign(store, method, url.key, expires)
        except Exception as exc:
            raise _error("signing", url, exc) from None


def _split_lines(url: ObjectURL, chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from whole
        if len(rest) > LINE_LIMIT:
            raise StoreError(f"reading {url}: a line longer than {LINE_LIMIT} bytes")
    if rest:
        yield rest
