"""Object URLs (``s3://bucket/key``), parsed and joined without any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")


@dataclass(frozen=True, slots=True)
class ObjectURL:
    """One bucket and a key (or key prefix) in it."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, text: str, field: str) -> ObjectURL:
        """Parse ``s3://bucket/key``; raises ValueError naming ``field``."""
        match = _URL.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{field}: {text!r} is not an object URL of the form s3://bucket/key")
        key = match.group("key") or ""
        if any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"{field}: {text!r} must not hold '.' or '..' path segments")
        return cls(match.group("bucket"), key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> ObjectURL:
        """This URL as a prefix, with ``parts`` appended as path segments."""
        segments = [s for s in self.key.split("/") if s]
        segments.extend(p.strip("/") for p in parts if p.strip("/"))
        return ObjectURL(self.bucket, "/".join(segments))

    def within(self, prefix: ObjectURL) -> bool:
        """Whether this URL lies inside ``prefix``: same bucket, key under its path segments."""
        if self.bucket != prefix.bucket:
            return False
        mine = [s for s in self.key.split("/") if s]
        theirs = [s for s in prefix.key.split("/") if s]
        return mine[: len(theirs)] == theirs
