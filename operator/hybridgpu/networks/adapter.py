"""What every adapter shares: the HTTP client, health figures, offers and price-cap checks.

Every subclass's protocol methods (``list_offers``, ``submit``, ``status``, ``cancel``,
``result``) are wrapped by :func:`hybridgpu.networks.guard.guarded` when the class is defined,
so a malformed answer reaches the operator as a ``MalformedAnswer`` network error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal

from hybridgpu.api.computeprovider import ComputeProviderSpec, TrustTier
from hybridgpu.networks.base import RemoteRef, RemoteStatus
from hybridgpu.networks.errors import PriceAboveCap
from hybridgpu.networks.guard import guard_class
from hybridgpu.networks.http import HttpPolicy, ProviderClient, Redactor
from hybridgpu.routing.snapshot import ExternalOffer, Pricing

GIB = 2**30


def bearer(credential: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` headers, or none without a credential."""
    return {"Authorization": f"Bearer {credential}"} if credential else {}


class AdapterBase:
    """State and helpers common to the five adapters."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        guard_class(cls)

    def __init__(
        self,
        name: str,
        spec: ComputeProviderSpec,
        credential: str | None,
        policy: HttpPolicy,
        auth_headers: Mapping[str, str],
    ) -> None:
        self.name = name
        self.spec = spec
        self.redact = Redactor(credential)
        self.client = ProviderClient(name, spec.endpoint, auth_headers, policy, self.redact)
        self._submitted_at: dict[str, float] = {}
        self._seen_running: set[str] = set()
        self._malformed = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self.spec.endpoint!r})"

    @property
    def circuit_state(self) -> str:
        """Closed, Open or HalfOpen."""
        return self.client.breaker.state

    @property
    def error_rate(self) -> float:
        """Share of recent calls that failed."""
        return self.client.health.error_rate

    @property
    def start_latency(self) -> tuple[float | None, float | None]:
        """Observed (p50, p95) seconds from submission to running."""
        return self.client.health.start_latency()

    def note_malformed(self) -> None:
        """A 2xx answer could not be used: count it as a failure of the network.

        The HTTP layer counted the 2xx as a success (which resets the breaker's count), so
        unusable answers are counted here and trip the breaker at its threshold.
        """
        self._malformed += 1
        self.client.health.record(False)
        if self._malformed >= self.client.policy.failure_threshold:
            self.client.breaker.trip()
        else:
            self.client.breaker.record_failure()

    def note_answered(self) -> None:
        """A call's answer was usable."""
        self._malformed = 0

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    def offer(
        self,
        gpu_product: str,
        *,
        memory_bytes: int,
        pricing: Pricing,
        available: int,
        typical_start_seconds: float,
        region: str | None = None,
        trust_tier: TrustTier | None = None,
        active_jobs: int = 0,
        labels: Mapping[str, str] | None = None,
        tasks: frozenset[str] | None = None,
        max_gpus_per_job: int | None = None,
    ) -> ExternalOffer:
        """An offer of this provider, with its health figures and the spec's defaults."""
        return ExternalOffer(
            provider=self.name,
            provider_type=self.spec.type,
            gpu_product=gpu_product,
            memory_bytes=memory_bytes,
            pricing=pricing,
            available=available,
            region=region or self.spec.region,
            # An offer is no more trusted than its provider, nor than the network says it is
            # (a Nosana community market under a provider an admin marked verified).
            trust_tier=min(
                (t for t in (trust_tier, self.spec.trust_tier) if t is not None),
                key=lambda t: t.rank,
            ),
            start_latency_seconds=self.start_latency[0] or typical_start_seconds,
            error_rate=self.error_rate,
            carbon_intensity=self.spec.carbon_intensity,
            circuit_open=self.circuit_state == "Open",
            paused=self.spec.paused,
            active_jobs=active_jobs,
            max_concurrent_jobs=self.spec.max_concurrent_jobs,
            labels=dict(labels or {}),
            tasks=tasks,
            max_gpus_per_job=max_gpus_per_job,
        )

    def static_price(self, gpu_product: str) -> Decimal | None:
        """The ComputeProvider's static price for a product (or its 'default' entry)."""
        fallback = None
        for entry in self.spec.static_prices:
            if entry.gpu_product == gpu_product:
                return entry.price_per_gpu_hour
            if entry.gpu_product == "default":
                fallback = entry.price_per_gpu_hour
        return fallback

    def check_cap(self, price: Decimal | None, cap: Decimal | None, when: str) -> None:
        """Raise PriceAboveCap when ``price`` exceeds ``cap`` (both per GPU-hour)."""
        if price is not None and cap is not None and price > cap:
            raise PriceAboveCap(
                self.name,
                price,
                cap,
                f"{when}: network asks {price} USD/GPU-hour, above the cap of {cap}",
            )

    def note_submitted(self, ref: RemoteRef) -> None:
        """Start the clock for the start-latency figure."""
        self._submitted_at.setdefault(ref.id, time.monotonic())

    def observe(self, ref: RemoteRef, status: RemoteStatus) -> RemoteStatus:
        """Record the start latency the first time a job is seen running."""
        if status.state in ("Running", "Succeeded") and ref.id not in self._seen_running:
            self._seen_running.add(ref.id)
            started = self._submitted_at.get(ref.id)
            if started is not None:
                self.client.health.record_start_latency(time.monotonic() - started)
        return status
