"""``hybridgpu quote``: what each external network would charge for one InferenceJob.

Credentials (never printed): the environment variable
``HYBRIDGPU_CREDENTIAL_<PROVIDER_NAME>`` (upper case, every non-alphanumeric character
replaced by ``_``) wins over ``--credentials FILE``, a YAML mapping of provider name to
credential. Exit status: 0 when at least one network can take the job, 1 when none can,
2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hybridgpu.api.computeprovider import ComputeProvider
from hybridgpu.api.inferencejob import InferenceJob, InferenceJobSpec
from hybridgpu.api.routingpolicy import RoutingPolicySpec
from hybridgpu.networks import CircuitOpen, HttpPolicy, NetworkError, make_adapter
from hybridgpu.networks.bounds import screen_offers
from hybridgpu.networks.openai_compat import MODEL_LABEL
from hybridgpu.routing.engine import FEASIBLE, decide
from hybridgpu.routing.snapshot import (
    ExternalOffer,
    PerGPUHour,
    PerToken,
    PerUnit,
    Pricing,
    Snapshot,
)
from hybridgpu.units import format_money

QUOTE_POLICY = HttpPolicy(
    connect_timeout=3.0,
    read_timeout=10.0,
    max_attempts=4,
    backoff_base=0.2,
    backoff_cap=2.0,
    failure_threshold=3,
)


class InputError(ValueError):
    """A problem with a file given on the command line, already naming where it is."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quote",
        help="price one InferenceJob on every external network",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="job",
        type=Path,
        required=True,
        help="InferenceJob manifest (YAML)",
    )
    parser.add_argument(
        "--providers",
        type=Path,
        required=True,
        help="ComputeProvider manifests (YAML, several documents or a List)",
    )
    parser.add_argument("--credentials", type=Path, help="YAML mapping provider name -> credential")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


def _load_yaml(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise InputError(f"{path}: {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML: {exc}") from None


def _validation(path: Path, what: str, exc: ValidationError) -> InputError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return InputError(f"{path}: {what}: {where}: {first['msg']}")


def load_job(path: Path) -> InferenceJob:
    """The single InferenceJob in ``path``."""
    docs = _load_yaml(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InputError(f"{path}: expected exactly one InferenceJob manifest")
    try:
        return InferenceJob.model_validate(docs[0])
    except ValidationError as exc:
        raise _validation(path, "InferenceJob", exc) from None


def load_providers(path: Path) -> list[ComputeProvider]:
    """Every ComputeProvider in ``path`` (multi-document YAML or a ``kind: List``)."""
    items: list[Any] = []
    for doc in _load_yaml(path):
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items.extend(doc.get("items") or [])
        else:
            items.append(doc)
    providers = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("kind") != "ComputeProvider":
            raise InputError(f"{path}: document {index + 1} is not a ComputeProvider")
        try:
            provider = ComputeProvider.model_validate(item)
        except ValidationError as exc:
            raise _validation(path, f"ComputeProvider #{index + 1}", exc) from None
        if not provider.metadata.name:
            raise InputError(f"{path}: ComputeProvider #{index + 1}: metadata.name is required")
        providers.append(provider)
    if not providers:
        raise InputError(f"{path}: no ComputeProvider found")
    return providers


def credential_env_var(name: str) -> str:
    """``HYBRIDGPU_CREDENTIAL_`` plus the provider name upper-cased, non-alphanumerics as ``_``."""
    return "HYBRIDGPU_CREDENTIAL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def load_credentials(path: Path | None, names: list[str]) -> dict[str, str]:
    """Credentials per provider name: file entries, overridden by environment variables."""
    found: dict[str, str] = {}
    if path is not None:
        docs = _load_yaml(path)
        data = docs[0] if docs else {}
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise InputError(f"{path}: expected a mapping of provider name to credential string")
        found.update(data)
    for name in names:
        value = os.environ.get(credential_env_var(name))
        if value:
            found[name] = value
    return found


@dataclass
class OfferQuote:
    """One offer judged for the job."""

    offer: ExternalOffer
    cost: Decimal | None
    feasible: bool
    reason: str = ""
    estimate: str = ""
    """What the cost rests on (the engine's candidate estimate)."""


@dataclass
class ProviderQuote:
    """One network's answer."""

    name: str
    type: str
    reason: str = ""
    offers: list[OfferQuote] = field(default_factory=list)

    def best(self) -> OfferQuote | None:
        """The cheapest feasible offer."""
        feasible = [o for o in self.offers if o.feasible and o.cost is not None]
        return min(feasible, key=lambda o: o.cost or Decimal(0)) if feasible else None


QUOTE_ROUTING = RoutingPolicySpec.model_validate(
    {"inCluster": {"enabled": False}, "external": {"enabled": True}}
)
"""What a quote asks the engine: external offers only, no policy limits beyond the job's own."""


def _explain(reason: str, job: InferenceJobSpec, offer: ExternalOffer, cost: Decimal) -> str:
    """The engine's reason, with what it means for this job and offer."""
    text = {
        "TaskNotSupported": f"does not run task {job.task.value}",
        "ProductNotAllowed": f"GPU {offer.gpu_product} is not in spec.gpu.products",
        "InsufficientMemory": "less GPU memory than spec.gpu.minMemory",
        "ModelTooLarge": f"{job.model} does not fit {job.gpu.count} such GPU(s)",
        "ModelNotServed": f"serves model {offer.labels.get(MODEL_LABEL)}, not {job.model}",
        "RegionNotAllowed": f"region {offer.region} is not in spec.regions",
        "NoCapacity": "no capacity available",
        "ConcurrencyLimit": "the network's concurrent-job limit is reached",
        "PriceCapExceeded": "price per GPU-hour is above maxPricePerGPUHour",
        "MaxCostExceeded": f"estimated {format_money(cost)} USD is above maxCost",
        "ProviderPaused": "provider is paused",
        "CircuitOpen": "circuit open",
        "MissesStartWithin": "starts later than spec.startWithin",
    }.get(reason)
    return f"{reason}: {text}" if text else reason


def judge_all(job: InferenceJobSpec, offers: list[ExternalOffer]) -> list[OfferQuote]:
    """Each offer as the routing engine judges it for ``job`` (one decision over them all).

    The engine is the one the operator routes with, so a quote never disagrees with where the
    job would go: the same constraints, the same cost estimate (work-based for llm jobs).
    """
    if not offers:
        return []
    snapshot = Snapshot(now=datetime.now(UTC), offers=tuple(offers), inventory_final=True)
    decision = decide(job, QUOTE_ROUTING, snapshot)
    by_offer = {id(c.offer): c for c in decision.candidates if c.offer is not None}
    quotes = []
    for offer in offers:
        c = by_offer[id(offer)]
        ok = c.feasible
        reason = "" if c.reason == FEASIBLE else _explain(c.reason, job, offer, c.estimated_cost)
        quotes.append(OfferQuote(offer, c.estimated_cost, ok, reason, c.estimate))
    return quotes


def judge(job: InferenceJobSpec, offer: ExternalOffer) -> OfferQuote:
    """One offer as the engine judges it for ``job``."""
    return judge_all(job, [offer])[0]


async def quote_provider(
    provider: ComputeProvider, credential: str | None, job: InferenceJobSpec
) -> ProviderQuote:
    """Ask one network for offers and judge them."""
    name = provider.metadata.name or ""
    result = ProviderQuote(name, provider.spec.type.value)
    if provider.spec.paused:
        result.reason = "provider is paused"
        return result
    if provider.spec.credentials_secret_ref is not None and not credential:
        result.reason = f"no credential (set {credential_env_var(name)} or use --credentials)"
        return result
    adapter = make_adapter(name, provider.spec, credential, http_policy=QUOTE_POLICY)
    try:
        offers = await adapter.list_offers()
    except CircuitOpen as exc:
        result.reason = f"circuit open: {exc.message}"
        return result
    except NetworkError as exc:
        result.reason = f"{type(exc).__name__}: {exc.message}"
        if adapter.circuit_state != "Closed":
            result.reason = f"circuit open after repeated failures; last error: {exc.message}"
        return result
    finally:
        await adapter.aclose()
    # The operator's refresh drops the same offers, so a quote never prices what it would not.
    offers_kept, dropped = screen_offers(offers)
    result.offers = judge_all(job, list(offers_kept))
    if not offers_kept and dropped:
        result.reason = f"no usable offers ({dropped[0].gpu_product}: {dropped[0].reason})"
    elif not offers_kept:
        result.reason = "no offers"
    elif result.best() is None:
        result.reason = "no offer fits the job"
    return result


async def quote_all(
    job: InferenceJobSpec, providers: list[ComputeProvider], credentials: dict[str, str]
) -> list[ProviderQuote]:
    """Quote every provider concurrently."""
    return list(
        await asyncio.gather(
            *(quote_provider(p, credentials.get(p.metadata.name or ""), job) for p in providers)
        )
    )


def pricing_json(pricing: Pricing) -> dict[str, str]:
    """A price in its own unit, as decimal strings."""
    if isinstance(pricing, PerGPUHour):
        return {"unit": "gpu-hour", "usdPerGPUHour": format_money(pricing.usd, 8)}
    if isinstance(pricing, PerToken):
        return {
            "unit": "token",
            "usdPerMillionInputTokens": format_money(pricing.input_usd_per_million, 8),
            "usdPerMillionOutputTokens": format_money(pricing.output_usd_per_million, 8),
        }
    assert isinstance(pricing, PerUnit)
    return {"unit": pricing.unit, "usdPerUnit": format_money(pricing.usd_per_unit, 12)}


def pricing_text(pricing: Pricing) -> str:
    """A price for the table."""
    if isinstance(pricing, PerGPUHour):
        return f"${format_money(pricing.usd)}/GPU-h"
    if isinstance(pricing, PerToken):
        return (
            f"${format_money(pricing.input_usd_per_million)}/"
            f"${format_money(pricing.output_usd_per_million)} per M tok"
        )
    return f"${format_money(pricing.usd_per_unit, 12)}/{pricing.unit}"


def to_json(quotes: list[ProviderQuote]) -> list[dict[str, Any]]:
    """The ``--format json`` document: money as decimal strings."""
    out = []
    for q in quotes:
        best = q.best()
        out.append(
            {
                "provider": q.name,
                "type": q.type,
                "canTakeJob": best is not None,
                "reason": q.reason,
                "bestOffer": None
                if best is None
                else {
                    "gpuProduct": best.offer.gpu_product,
                    "estimatedCost": format_money(best.cost or Decimal(0), 8),
                },
                "offers": [
                    {
                        "gpuProduct": o.offer.gpu_product,
                        "pricing": pricing_json(o.offer.pricing),
                        "available": o.offer.available,
                        "region": o.offer.region,
                        "estimatedCost": None if o.cost is None else format_money(o.cost, 8),
                        "feasible": o.feasible,
                        "reason": o.reason,
                        "estimate": o.estimate,
                        **(
                            {"model": o.offer.labels[MODEL_LABEL]}
                            if MODEL_LABEL in o.offer.labels
                            else {}
                        ),
                    }
                    for o in q.offers
                ],
            }
        )
    return out


def print_table(quotes: list[ProviderQuote]) -> None:
    """Human-readable output, one block per provider."""
    for q in quotes:
        best = q.best()
        head = f"{q.name} ({q.type}): "
        if best is not None:
            head += f"best {best.offer.gpu_product} at ${format_money(best.cost or Decimal(0))}"
        else:
            head += f"cannot take the job: {q.reason}"
        print(head)
        for o in sorted(q.offers, key=lambda o: (not o.feasible, o.cost or Decimal(0))):
            mark = "ok " if o.feasible else "no "
            model = o.offer.labels.get(MODEL_LABEL, "")
            what = f"{o.offer.gpu_product}{' ' + model if model else ''}"
            cost = "-" if o.cost is None else f"${format_money(o.cost)}"
            price = pricing_text(o.offer.pricing)
            line = f"  {mark} {what:40s} {price:28s} avail {o.offer.available:<4d} est {cost}"
            print(line + (f"  ({o.reason})" if o.reason else ""))


def run(args: argparse.Namespace) -> int:
    """Quote the job on every provider."""
    try:
        job = load_job(args.job)
        providers = load_providers(args.providers)
        credentials = load_credentials(args.credentials, [p.metadata.name or "" for p in providers])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quotes = asyncio.run(quote_all(job.spec, providers, credentials))
    if args.format == "json":
        json.dump(to_json(quotes), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(quotes)
    return 0 if any(q.best() is not None for q in quotes) else 1
