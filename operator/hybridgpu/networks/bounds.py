"""What a network may say about prices and capacity before hybridgpu stops believing it.

A network's answer is data from outside: a price of ``1E+999999`` overflows the routing
engine's float scores, a negative one fails every decision's status validation, one of a
billion dollars or more breaks the CRD's money pattern (``units.MONEY_PATTERN``: at most nine
integer digits) on every status write. Every offer therefore passes :func:`screen_offers`
before it reaches the registry; one that fails is dropped, and the reason is shown in the
ComputeProvider's ``status.droppedOffers``.

The ceilings are far above any real market (an H100 rents for a few dollars an hour, the
dearest per-token models cost hundreds of dollars per million tokens) and low enough that
an estimate built from them stays inside the money pattern for any job the InferenceJob
schema admits: at most 8 GPUs for 8760 hours at ``MAX_USD_PER_GPU_HOUR`` is 7.0e8 USD; at
most 1,000,000 requests of 262,144 tokens at ``MAX_USD_PER_MILLION_TOKENS`` is 2.6e8 USD; a
million 25-frame video requests at ``MAX_USD_PER_UNIT`` per pixel is 1.5e8 USD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from hybridgpu.networks.errors import MalformedAnswer
from hybridgpu.routing.snapshot import ExternalOffer, PerGPUHour, PerToken, PerUnit

MONEY_LIMIT = Decimal(1_000_000_000)
"""Every amount written to status is below this (the CRD money pattern's nine digits)."""
MAX_USD_PER_GPU_HOUR = Decimal(10_000)
MAX_USD_PER_MILLION_TOKENS = Decimal(1_000)
MAX_USD_PER_UNIT = Decimal("0.00001")
"""Per output unit (pixel, second of audio): a 25-frame video request costs at most 147 USD."""
MAX_AVAILABLE = 100_000
"""GPUs or job slots one offer may claim."""
MAX_MEMORY_BYTES = 2**44
"""16 TiB of memory per GPU."""
MAX_START_SECONDS = 7 * 86_400.0
MAX_TOKENS_PER_REQUEST = 10_000_000
"""Tokens one request may report as used (prompt or completion)."""
MAX_TEXT = 63
"""Longest region an offer may carry (a Kubernetes label value's limit)."""

_PRODUCT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def shown(value: object, limit: int = 40) -> str:
    """``value`` as short, single-line text for a reason (a huge number stays readable)."""
    text = repr(value) if not isinstance(value, str | Decimal) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def amount_problem(value: object, ceiling: Decimal, what: str) -> str | None:
    """Why ``value`` is not a usable amount of USD below ``ceiling``, or None when it is."""
    if not isinstance(value, Decimal):
        return f"{what} {shown(value)} is not a decimal amount"
    if not value.is_finite():
        return f"{what} {shown(value)} is not a finite number"
    if value < 0:
        return f"{what} {shown(value)} is negative"
    if value >= ceiling:
        return f"{what} {shown(value)} is not below the ceiling of {ceiling}"
    return None


def count_problem(value: object, ceiling: int, what: str) -> str | None:
    """Why ``value`` is not a whole number in ``[0, ceiling]``, or None when it is."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{what} {shown(value)} is not a whole number"
    if not 0 <= value <= ceiling:
        return f"{what} {value} is not between 0 and {ceiling}"
    return None


def pricing_problem(offer: ExternalOffer) -> str | None:
    """Why the offer's price is unusable, or None."""
    pricing = offer.pricing
    if isinstance(pricing, PerGPUHour):
        return amount_problem(pricing.usd, MAX_USD_PER_GPU_HOUR, "price per GPU-hour")
    if isinstance(pricing, PerToken):
        return amount_problem(
            pricing.input_usd_per_million, MAX_USD_PER_MILLION_TOKENS, "price per 1M input tokens"
        ) or amount_problem(
            pricing.output_usd_per_million,
            MAX_USD_PER_MILLION_TOKENS,
            "price per 1M output tokens",
        )
    if isinstance(pricing, PerUnit):
        return amount_problem(pricing.usd_per_unit, MAX_USD_PER_UNIT, f"price per {pricing.unit}")
    return f"pricing {shown(pricing)} is of no known kind"


def offer_problem(offer: ExternalOffer) -> str | None:
    """Why the offer must not be used, or None when every figure of it is sane."""
    if not isinstance(offer.gpu_product, str) or not _PRODUCT.fullmatch(offer.gpu_product):
        return f"GPU name {shown(offer.gpu_product)} is not a GPU Feature Discovery product name"
    start = offer.start_latency_seconds
    problems = (
        pricing_problem(offer),
        count_problem(offer.available, MAX_AVAILABLE, "available"),
        count_problem(offer.memory_bytes, MAX_MEMORY_BYTES, "memory bytes"),
        None
        if isinstance(start, int | float) and 0 <= start <= MAX_START_SECONDS
        else f"start latency {shown(start)} is not between 0 and {MAX_START_SECONDS:.0f} seconds",
        None
        if isinstance(offer.region, str) and len(offer.region) <= MAX_TEXT
        else f"region {shown(offer.region)} is longer than {MAX_TEXT} characters",
    )
    return next((p for p in problems if p is not None), None)


@dataclass(frozen=True, slots=True)
class DroppedOffer:
    """An offer the network made that hybridgpu refused to use, and why."""

    gpu_product: str
    reason: str


def screen_offers(
    offers: list[ExternalOffer] | tuple[ExternalOffer, ...],
) -> tuple[tuple[ExternalOffer, ...], tuple[DroppedOffer, ...]]:
    """The usable offers, and the others with the reason each was dropped."""
    kept: list[ExternalOffer] = []
    dropped: list[DroppedOffer] = []
    for offer in offers:
        problem = offer_problem(offer)
        if problem is None:
            kept.append(offer)
        else:
            dropped.append(DroppedOffer(shown(offer.gpu_product, 63), problem))
    return tuple(kept), tuple(dropped)


def checked_usd(
    provider: str, value: Decimal | None, ceiling: Decimal, what: str
) -> Decimal | None:
    """``value`` when it is None or a sane amount; else MalformedAnswer naming ``what``."""
    if value is None:
        return None
    problem = amount_problem(value, ceiling, what)
    if problem is not None:
        raise MalformedAnswer(provider, problem)
    return value


def checked_count(provider: str, value: object, ceiling: int, what: str) -> int:
    """``value`` when it is a whole number in ``[0, ceiling]``; else MalformedAnswer."""
    problem = count_problem(value, ceiling, what)
    if problem is not None:
        raise MalformedAnswer(provider, problem)
    assert isinstance(value, int)
    return value
