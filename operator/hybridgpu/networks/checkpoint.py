"""Progress of a client-driven batch, compact enough to live in an InferenceJob's status."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_FORMAT = re.compile(r"^(0|[1-9][0-9]*)(?:\+([0-9,\-]*))?$")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``watermark``: every request with a lower index is done; ``done_above``: done ones above."""

    watermark: int = 0
    done_above: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.watermark < 0:
            raise ValueError("checkpoint watermark must not be negative")
        if any(i <= self.watermark for i in self.done_above):
            raise ValueError("checkpoint done_above indices must be above the watermark")

    @classmethod
    def from_done(cls, done: Iterable[int], watermark: int = 0) -> Checkpoint:
        """Build the smallest checkpoint from a watermark and more completed indices."""
        indices = sorted({i for i in done if i >= watermark})
        for index in indices:
            if index != watermark:
                break
            watermark += 1
        return cls(watermark, tuple(i for i in indices if i > watermark))

    def with_done(self, index: int) -> Checkpoint:
        """This checkpoint plus request ``index``."""
        return Checkpoint.from_done((*self.done_above, index), self.watermark)

    def is_done(self, index: int) -> bool:
        """Whether request ``index`` is already complete."""
        return index < self.watermark or index in self.done_above

    def count(self) -> int:
        """How many requests are complete."""
        return self.watermark + len(self.done_above)

    def to_str(self) -> str:
        """``"120"`` or ``"120+122-125,130"``: watermark, then ranges done above it."""
        if not self.done_above:
            return str(self.watermark)
        parts: list[str] = []
        start = prev = self.done_above[0]
        for index in (*self.done_above[1:], None):
            if index is not None and index == prev + 1:
                prev = index
                continue
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            if index is not None:
                start = prev = index
        return f"{self.watermark}+{','.join(parts)}"

    @classmethod
    def from_str(cls, text: str) -> Checkpoint:
        """Parse :meth:`to_str` output; raises ValueError naming what is wrong."""
        match = _FORMAT.fullmatch(text.strip())
        if not match:
            raise ValueError(f"checkpoint {text!r} is not of the form '120' or '120+122-125,130'")
        watermark = int(match.group(1))
        done: list[int] = []
        for part in filter(None, (match.group(2) or "").split(",")):
            low, _, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ValueError(f"checkpoint range {part!r} is not 'N' or 'N-M'")
            first, last = int(low), int(high or low)
            if last < first:
                raise ValueError(f"checkpoint range {part!r} runs backwards")
            if first <= watermark:
                raise ValueError(f"checkpoint range {part!r} is not above the watermark")
            done.extend(range(first, last + 1))
        return cls.from_done(done, watermark)
