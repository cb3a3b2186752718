"""Replicas agree: two gateway processes on the same config and the same upstream data serve
byte-identical pages with identical ETags, and a cursor issued by one works on the other.

Each replica is a real `mcp-discovery-gateway serve` process with its own state directory,
syncing the same fake registries on loopback itself, as pods of a Deployment do.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import yaml

from tests.conftest import free_port
from tests.fakes import FakeRegistry, server_entry

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.asyncio(loop_scope="module"),  # both tests read the same two replicas
]

SLUG = "io.github.acme%2Fweather"


def _catalog(prefix: str, count: int) -> list[dict[str, Any]]:
    """Servers with npm, PyPI and OCI packages, remotes, several versions, every status."""
    entries = []
    for index in range(count):
        name = f"{prefix}/server-{index:03d}"
        for minor in range(index % 3 + 1):
            package = [
                {"registryType": "npm", "identifier": f"@acme/s{index}", "version": f"1.{minor}.0"},
                {"registryType": "pypi", "identifier": f"acme-s{index}", "version": f"1.{minor}.0"},
                {"registryType": "oci", "identifier": f"ghcr.io/acme/s{index}:1.{minor}.0"},
            ][index % 3]
            status = ("active", "deprecated", "deleted")[(index + minor) % 7 % 3]
            entries.append(
                server_entry(
                    name, f"1.{minor}.0", status=status, packages=[package],
                    published=f"2026-0{minor + 1}-1{index % 10}T08:00:00Z",
                    remotes=[{"type": "streamable-http", "url": f"https://s{index}.example.com/mcp"}]
                    if index % 4 == 0 else None,
                )
            )  # fmt: skip
    return entries


async def _wait_ready(session: aiohttp.ClientSession, base: str, process: Any) -> None:
    for _ in range(300):
        if process.returncode is not None:
            raise AssertionError(f"replica at {base} exited with {process.returncode}")
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"replica at {base} never became ready")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    """Two replicas over two fake registries; yields their base URLs. The tests only read
    from them, so the module starts them once."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    internal = await FakeRegistry(_catalog("com.example", 12)).start()
    public = await FakeRegistry(
        [*_catalog("io.github.acme", 40), server_entry("io.github.acme/weather", "2.0.0")]
    ).start()
    config = tmp_path / "config"
    (config / "views").mkdir(parents=True)
    gateway = {
        "log_level": "warning",
        "access_log": False,
        "watch_config": "0s",
        "upstreams": [
            {"name": "internal", "url": internal.url, "refresh": "1h", "owns": ["com.example/*"]},
            {"name": "official", "url": public.url, "refresh": "1h"},
        ],
    }
    files = {
        "gateway.yaml": gateway,
        "policy.yaml": {"rules": [{"deny": {"name": "io.github.acme/server-00*"}}]},
        "mirrors.yaml": {
            "npm": "https://artifactory.example.com/api/npm/npm-remote/",
            "pypi": "https://artifactory.example.com/api/pypi/pypi-remote/simple/",
            "oci": {"ghcr.io": "registry.example.com/ghcr"},
        },
        "views/payments.yaml": {
            "rules": [{"deny": {"registry_type": "oci"}}],
            "mirrors": {"npm": "https://artifactory.example.com/api/npm/payments/"},
        },
    }
    for path, document in files.items():
        (config / path).write_text(yaml.safe_dump(document), encoding="utf-8")
    processes, bases = [], []
    try:
        async with aiohttp.ClientSession() as session:
            for index in range(2):
                port = free_port()
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "serve", "--config", str(config),
                    "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / f"state{index}"),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                processes.append(process)
                bases.append(f"http://127.0.0.1:{port}")
                await asyncio.sleep(0.3)  # the replicas start (and fetch) at different moments
            for process, base in zip(processes, bases, strict=True):
                await _wait_ready(session, base, process)
        yield bases[0], bases[1]
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await process.wait()
        await internal.stop()
        await public.stop()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str | None]:
    async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
        return response.status, await response.read(), response.headers.get("ETag")


ROUTES = [
    "/v0.1/servers?limit=100",
    "/v0.1/servers?limit=7",
    "/v0.1/servers?version=latest&limit=30",
    "/v0.1/servers?search=server-01&limit=5",
    "/v0.1/servers?include_deleted=true&limit=50",
    "/v0.1/servers?updated_since=2026-02-01T00:00:00Z",
    f"/v0.1/servers/{SLUG}/versions",
    f"/v0.1/servers/{SLUG}/versions/latest",
    "/v0.1/servers/com.example%2Fserver-002/versions/1.1.0",
    "/views/payments/v0.1/servers?limit=100",
    "/views/payments/v0.1/servers?version=latest",
    "/v0/servers?limit=10",
]


async def test_replicas_serve_byte_identical_pages_and_etags(replicas: tuple[str, str]) -> None:
    one, two = replicas
    async with aiohttp.ClientSession() as session:
        for route in ROUTES:
            first, second = await _get(session, one + route), await _get(session, two + route)
            assert first[0] == 200, route
            assert first[1] == second[1], route  # the very same bytes
            assert first[2] is not None, route
            assert first[2] == second[2], route
        # The catalog is not trivial: rewrites and both upstreams are in what was compared.
        _, body, _ = await _get(session, one + "/v0.1/servers?limit=100")
        assert b"artifactory.example.com/api/npm/npm-remote/" in body
        assert b"registry.example.com/ghcr/acme" in body
        assert b'"upstream":"internal"' in body
        assert b'"upstream":"official"' in body


async def test_a_cursor_from_one_replica_continues_on_the_other(replicas: tuple[str, str]) -> None:
    one, two = replicas
    async with aiohttp.ClientSession() as session:
        for route in (
            "/v0.1/servers?limit=9",
            "/views/payments/v0.1/servers?limit=4&search=server",
        ):
            walked: list[list[bytes]] = [[], []]  # pages of a walk alternating replicas; of one
            for pages, bases in zip(walked, ((one, two), (one, one)), strict=True):
                url, hop = route, 0
                while True:
                    status, body, _ = await _get(session, bases[hop % 2] + url)
                    assert status == 200, url
                    pages.append(body)
                    cursor = orjson.loads(body)["metadata"].get("nextCursor")
                    if not cursor:
                        break
                    url, hop = f"{route}&cursor={cursor}", hop + 1
            assert len(walked[0]) > 2  # several pages, so cursors crossed replicas
            assert walked[0] == walked[1]  # alternating replicas walks exactly like one replica
