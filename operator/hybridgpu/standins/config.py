"""Configuration of the stand-in networks: prices, capacity, latency, time scale, API keys.

YAML or JSON, camelCase keys::

    timeScale: 60            # simulated seconds per real second: a 30m job runs 30 s
    seed: 1                  # seeds the fault injector's random error rate
    requestLatencySeconds: 0.005   # real seconds per Livepeer/OpenAI request
    startLatencySeconds: {akash: 30, nosana: 20, vastai: 40}   # simulated seconds
    apiKeys: {vastai: my-key}      # accepted credential per network; unset: any non-empty
    akashDenom: uact               # Akash grant denom (uact as on mainnet, or uakt)
    offers:
      - {network: vastai, gpuProduct: NVIDIA-GeForce-RTX-4090, memoryGiB: 24,
         usdPerGpuHour: "0.34", available: 4, region: global, marketType: PREMIUM}
    tokenPrices:
      - {model: meta-llama/Llama-3.3-70B-Instruct,
         inputPerMillion: "0.13", outputPerMillion: "0.38"}

Without a file, offers come from the bundled price book ``hybridgpu/data/prices.csv``: every
single-GPU akash, nosana and vastai row, plus illustrative Livepeer rows (no public USD price
exists) and the IO Intelligence per-token prices listed in the reference notes.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from hybridgpu.api.common import Money

Network = Literal["livepeer", "akash", "openai", "nosana", "vastai"]
NETWORKS: tuple[Network, ...] = ("livepeer", "akash", "openai", "nosana", "vastai")
DEFAULT_BASE_PORT = 18081
"""livepeer 18081, akash 18082, openai 18083, nosana 18084, vastai 18085."""

_HERE = Path(__file__).resolve().parent
PRICE_BOOK = _HERE.parent / "data" / "prices.csv"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class OfferConfig(_Model):
    """GPUs of one product that one stand-in network offers."""

    network: Network
    gpu_product: Annotated[str, Field(min_length=1)]
    memory_gi_b: int = Field(default=80, ge=1, alias="memoryGiB")
    usd_per_gpu_hour: Money
    available: int = Field(default=8, ge=0)
    region: str = "global"
    market_type: Literal["PREMIUM", "COMMUNITY", "OTHER"] = "PREMIUM"


class TokenPriceConfig(_Model):
    """Per-token price of a model on the OpenAI-compatible stand-in."""

    model: Annotated[str, Field(min_length=1)]
    input_per_million: Money
    output_per_million: Money


def _default_start_latency() -> dict[Network, float]:
    return {"akash": 30.0, "nosana": 20.0, "vastai": 40.0}


class StandinConfig(_Model):
    """Everything the stand-ins simulate."""

    time_scale: float = Field(default=60.0, gt=0)
    seed: int | None = None
    request_latency_seconds: float = Field(default=0.005, ge=0)
    start_latency_seconds: dict[Network, float] = Field(default_factory=_default_start_latency)
    api_keys: dict[Network, str] = Field(default_factory=dict)
    models_page_size: int = Field(default=50, ge=1, le=1000)
    """Models per page of the OpenAI-compatible stand-in's ``/v1/models`` (io.net pages it)."""
    akash_denom: Literal["uact", "uakt"] = "uact"
    """The Akash Console's grant denom: bids and leases are priced in it, per block."""
    offers: list[OfferConfig] = Field(default_factory=list)
    token_prices: list[TokenPriceConfig] = Field(default_factory=list)

    def offers_for(self, network: Network) -> list[OfferConfig]:
        """The offers of one network."""
        return [o for o in self.offers if o.network == network]

    def start_delay(self, network: Network) -> float:
        """Real seconds from creation to running for ``network``."""
        return self.start_latency_seconds.get(network, 0.0) / self.time_scale


_DEFAULT_TOKEN_PRICES = (
    # IO Intelligence, USD per 1M tokens (reference notes, section 8).
    ("meta-llama/Llama-3.3-70B-Instruct", "0.13", "0.38"),
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "0.15", "0.60"),
    ("Intel/Qwen3-Coder-480B-A35B-Instruct-int4-mixed-ar", "0.22", "0.95"),
)
_LIVEPEER_ILLUSTRATIVE = (("NVIDIA-GeForce-RTX-4090", 24, "0.30"), ("NVIDIA-L40S", 48, "0.70"))


def default_config() -> StandinConfig:
    """Offers from the price book's akash, nosana and vastai rows, plus Livepeer and OpenAI."""
    offers: list[OfferConfig] = []
    with PRICE_BOOK.open(newline="") as handle:
        for row in csv.DictReader(handle):
            network = row["provider"]
            if network not in ("akash", "nosana", "vastai"):
                continue
            gpus = int(row.get("gpus") or 1)
            if gpus != 1:
                continue  # multi-GPU bundles are priced per bundle; the stand-ins rent single GPUs
            comment = row.get("pricing_model", "")
            offers.append(
                OfferConfig(
                    network=network,
                    gpu_product=row["gpu_product"],
                    memory_gi_b=int(row.get("gpu_memory_gib") or 80),
                    usd_per_gpu_hour=Decimal(row["usd_per_gpu_hour"]),
                    available=8,
                    market_type="COMMUNITY" if "Community" in comment else "PREMIUM",
                )
            )
    for product, memory, price in _LIVEPEER_ILLUSTRATIVE:
        offers.append(
            OfferConfig(
                network="livepeer",
                gpu_product=product,
                memory_gi_b=memory,
                usd_per_gpu_hour=Decimal(price),
            )
        )
    tokens = [
        TokenPriceConfig(model=m, input_per_million=Decimal(i), output_per_million=Decimal(o))
        for m, i, o in _DEFAULT_TOKEN_PRICES
    ]
    return StandinConfig(offers=offers, token_prices=tokens)


def load_config(path: Path) -> StandinConfig:
    """Read a YAML or JSON config; errors name the file and the offending field."""
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    if "offers" not in data:
        data["offers"] = [o.model_dump(by_alias=True) for o in default_config().offers]
    try:
        return StandinConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
