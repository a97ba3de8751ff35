"""Small, real, deterministic media for the stand-ins: a PNG and a WAV whose bytes are a
function of a digest of the request, so a test can check each output against its input."""

from __future__ import annotations

import hashlib
import struct
import zlib


def digest(text: str) -> str:
    """16 hex digits naming what a request asked for."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def png(seed: str, size: int = 8) -> bytes:
    """A ``size`` x ``size`` RGB PNG filled with a colour taken from ``seed``."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((r, g, b)) * size
    raw = row * size

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def wav(seed: str, samples: int = 800, rate: int = 8000) -> bytes:
    """A mono 8-bit PCM WAV of ``samples`` samples taken from ``seed``'s digest."""
    pattern = hashlib.sha256(seed.encode()).digest()
    data = bytes(pattern[i % len(pattern)] for i in range(samples))
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def completion(messages: object, limit: int) -> str:
    """A deterministic answer: the last message's first words, and a digest of them all."""
    text = ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        text = str(messages[-1].get("content", ""))
    words = text.split()[: max(min(limit, 8), 1)]
    return f"echo {' '.join(words)} [{digest(repr(messages))}]"
