"""Parsing of the API's units: Go-style durations, Kubernetes quantities and decimal money.

Stdlib only, so the routing core and the CLI can share it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
MONEY_PATTERN = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_QUANTITY_FACTOR = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``90s``, ``5m`` or ``1h30m``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as '90s', '5m' or '1h30m'")
    seconds = sum(
        (Decimal(num) * _DURATION_SECONDS[unit] for num, unit in _DURATION_PART.findall(text)),
        Decimal(0),
    )
    try:
        return timedelta(seconds=float(seconds))
    except OverflowError:
        # timedelta ends at 999999999 days; a longer duration is an input error, not a crash.
        raise ValueError(f"{text!r} is longer than any duration hybridgpu can represent") from None


def format_duration(value: timedelta) -> str:
    """Format a timedelta the way Go prints durations (``1h30m0s`` becomes ``1h30m``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or millis:
        out += f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    return out


def quantity_value(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity (``24Gi``, ``1k``, ``0.5``)."""
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as '24Gi' or '16000Mi'")
    number, suffix = match.groups()
    return Decimal(number) * _QUANTITY_FACTOR[suffix]


def parse_quantity(text: str) -> int:
    """Parse a Kubernetes quantity (``24Gi``, ``16000Mi``, ``1G``) into whole bytes or units."""
    return int(quantity_value(text))


def parse_money(value: object) -> Decimal:
    """Accept a decimal string (or a Decimal) of US dollars; refuse floats, which lose cents."""
    if isinstance(value, Decimal):
        if not value.is_finite() or value < 0:
            raise ValueError("an amount of money must be a finite, non-negative number")
        return value
    if isinstance(value, bool | float):
        raise ValueError('amounts of money are decimal strings such as "2.50", never floats')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(MONEY_PATTERN, value):
        raise ValueError(f'{value!r} is not a decimal string of US dollars such as "2.50"')
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already guards this
        raise ValueError(f"{value!r} is not a decimal amount") from exc


def format_money(value: Decimal, places: int = 4) -> str:
    """Render money as a plain decimal string, rounded to ``places`` and without exponent."""
    quantum = Decimal(1).scaleb(-places)
    text = format(value.quantize(quantum), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
