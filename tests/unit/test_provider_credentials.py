"""A rotated credential Secret is picked up at the next refresh, and never kept in the clear."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridgpu.api.computeprovider import ComputeProviderSpec
from hybridgpu.controller.providers import ensure_adapter
from hybridgpu.controller.registry import Registry


@dataclass
class SecretStore:
    values: dict[tuple[str, str, str], str] = field(default_factory=dict)
    reads: int = 0

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        self.reads += 1
        return self.values.get((namespace, name, key))


SPEC = ComputeProviderSpec.model_validate(
    {
        "type": "vastai",
        "endpoint": "https://vast.test",
        "credentialsSecretRef": {"namespace": "creds", "name": "vast", "key": "apiKey"},
    }
)


async def test_a_rotated_secret_rebuilds_the_adapter_with_the_new_key() -> None:
    secrets = SecretStore({("creds", "vast", "apiKey"): "key-one"})
    registry = Registry()
    first = await ensure_adapter(registry, secrets, "vast", SPEC, {})  # type: ignore[arg-type]
    again = await ensure_adapter(registry, secrets, "vast", SPEC, {})  # type: ignore[arg-type]
    assert again is first and secrets.reads == 2  # read at every refresh, rebuilt only on change
    first.active_jobs.add("job-uid")
    registry.submitted.add("job-uid-1")

    secrets.values[("creds", "vast", "apiKey")] = "key-two"
    rotated = await ensure_adapter(registry, secrets, "vast", SPEC, {})  # type: ignore[arg-type]
    assert rotated is not first
    assert rotated.active_jobs == {"job-uid"}
    assert registry.submitted == set()  # its batches are resubmitted to the new adapter
    sent = " ".join(rotated.adapter.client._client.headers.values())  # type: ignore[attr-defined]
    assert "key-two" in sent and "key-one" not in sent
    assert "key-two" not in rotated.credential_digest
    assert rotated.credential_digest != first.credential_digest
