"""A real S3-compatible object store for tests: SeaweedFS (Apache-2.0), built from the pinned
Go module by hack/build-seaweedfs.sh, run as ``weed server -filer -s3`` on loopback with free
ports and two identities:

* ``admin`` (the operator's default store: every bucket);
* ``tenant`` (only the bucket ``tenant-a``: Read, Write, List scoped to it), so tests can
  check that a tenant's credentials reach nothing else.

    with SeaweedFS.start(tmp_path) as s3:
        store = ResultStore(s3.config("hybridgpu-results"))
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hybridgpu.results.store import ResultStore, StoreConfig
from hybridgpu.results.urls import ObjectURL
from tests.cluster import REPO_ROOT

ADMIN = ("hgadmin", "hgadmin-secret-key")
TENANT = ("hgtenant", "hgtenant-secret-key")
TENANT_BUCKET = "tenant-a"
DEFAULT_BUCKET = "hybridgpu-results"
BUCKETS = (DEFAULT_BUCKET, TENANT_BUCKET, "other-tenant")


def weed_binary() -> Path:
    """The cached ``weed`` (built on first use; `make seaweedfs` builds it ahead)."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-seaweedfs.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def s3_identities() -> dict[str, object]:
    """SeaweedFS's ``-s3.config`` (its identities file format)."""
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "tenant",
                "credentials": [{"accessKey": TENANT[0], "secretKey": TENANT[1]}],
                "actions": [f"{a}:{TENANT_BUCKET}" for a in ("Read", "Write", "List")],
            },
        ]
    }


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedFS:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def config(self, bucket: str = DEFAULT_BUCKET, *, tenant: bool = False) -> StoreConfig:
        key, secret = TENANT if tenant else ADMIN
        return StoreConfig(
            bucket=bucket,
            prefix="" if tenant else "results",
            endpoint=self.endpoint,
            access_key_id=key,
            secret_access_key=secret,
        )

    @classmethod
    @contextmanager
    def start(cls, directory: Path) -> Iterator[SeaweedFS]:
        weed = weed_binary()
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "s3.json"
        conf.write_text(json.dumps(s3_identities()))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        log = directory / "weed.log"
        args = [
            str(weed),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={directory}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=16",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            # Every bucket is a collection of its own volumes: room for several buckets.
            "-volume.max=200",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={conf}",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        running = cls(f"http://127.0.0.1:{s3}", process, log)
        try:
            running._wait_ready()
            admin = ResultStore(running.config())
            for bucket in BUCKETS:
                # SeaweedFS creates a bucket on an admin's first write into it.
                admin.put_sync(ObjectURL(bucket, "README"), b"hybridgpu test bucket\n")
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2)
            except urllib.error.HTTPError:
                return  # 403 without credentials: the gateway is up
            except OSError:
                time.sleep(0.3)
                continue
            return
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s: {self.log}")
