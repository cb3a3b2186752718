"""Mirror verification against real aiohttp servers that speak each mirror's read API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.app import REFRESHER
from gateway.config import VerifySettings
from gateway.loader import load_config
from gateway.verify import Check, Verifier, check_for, pypi_versions
from tests.conftest import file_upstream
from tests.fakes import MIRROR_PASSWORD, MIRROR_TOKEN, MIRROR_USER, FakeMirror, server_entry

TOKEN, USER, PASSWORD = MIRROR_TOKEN, MIRROR_USER, MIRROR_PASSWORD


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def verifier(mirror: FakeMirror, session: aiohttp.ClientSession, **extra: Any) -> Verifier:
    credentials = [{"prefix": mirror.url + "/", "username": USER, "password": PASSWORD}]
    settings = VerifySettings.model_validate(
        {"mode": "annotate", "credentials": credentials, **extra}
    )
    return Verifier(settings, session)


def host(mirror: FakeMirror) -> str:
    return mirror.url.removeprefix("http://")


def checks(mirror: FakeMirror) -> list[tuple[Check, str]]:
    m = mirror.url
    return [
        (Check("npm", f"{m}/npm/", "@acme/weather", "1.2.0"), "available"),
        (Check("npm", f"{m}/npm/", "@acme/weather", "9.0.0"), "missing"),
        (Check("npm", f"{m}/npm/", "@acme/absent", "1.0.0"), "missing"),
        (Check("pypi", f"{m}/pypi/simple/", "Acme_Tools", "1.0.0"), "available"),
        (Check("pypi", f"{m}/pypi/simple/", "acme-tools", "1.1"), "available"),  # 1.1 == 1.1.0
        (Check("pypi", f"{m}/pypi/simple/", "acme-tools", "2.0.0"), "missing"),
        (Check("nuget", f"{m}/nuget/index.json", "Contoso.Mcp", "2.0.0-BETA"), "available"),
        (Check("nuget", f"{m}/nuget/index.json", "Contoso.Mcp", "3.0.0"), "missing"),
        (Check("cargo", f"sparse+{m}/cargo/index/", "ripgrep-mcp", "0.1.0"), "available"),
        (Check("cargo", f"{m}/cargo/index/", "ripgrep-mcp", "0.2.0"), "missing"),  # yanked
        (Check("oci", host(mirror), "acme/weather", "1.2.0"), "available"),
        (Check("oci", host(mirror), "acme/weather", "sha256:" + "a" * 64), "available"),
        (Check("oci", host(mirror), "acme/weather", "9.9.9"), "missing"),
        (Check("mcpb", f"{m}/files/notes-1.0.0.mcpb", "", ""), "available"),
        (Check("mcpb", f"{m}/files/nohead-notes-1.0.0.mcpb", "", ""), "available"),
        (Check("mcpb", f"{m}/files/gone.mcpb", "", ""), "missing"),
    ]


async def test_every_mirror_api(mirror: FakeMirror, session: aiohttp.ClientSession) -> None:
    v = verifier(mirror, session)
    table = checks(mirror)
    await v.run(check for check, _ in table)
    results = {check: v.lookup(check) for check, _ in table}
    assert {c: (r.result if r else None) for c, r in results.items()} == dict(table)
    assert all(r is not None and r.fresh for r in results.values())
    # One document answers every version of a package: a single packument fetch for npm.
    assert mirror.hits["/npm/@acme/weather"] == 1


async def test_results_are_cached_misses_too(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    v = verifier(mirror, session)
    missing = Check("npm", f"{mirror.url}/npm/", "@acme/absent", "1.0.0")
    await v.run([missing])
    await v.run([missing])
    assert mirror.hits["/npm/@acme/absent"] == 1
    expired = verifier(mirror, session, ttl="0s")
    await expired.run([missing])
    await expired.run([missing])
    assert mirror.hits["/npm/@acme/absent"] == 3


async def test_a_mirror_that_is_down_is_unknown_never_missing(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    mirror.down = True
    v = verifier(mirror, session)
    await v.run(check for check, _ in checks(mirror))
    assert {v.lookup(c).result for c, _ in checks(mirror)} == {"unknown"}  # type: ignore[union-attr]
    closed = Check("npm", "http://127.0.0.1:9/npm/", "@acme/weather", "1.2.0")
    await v.run([closed])
    assert v.lookup(closed).result == "unknown"  # type: ignore[union-attr]


async def test_concurrency_is_bounded(mirror: FakeMirror, session: aiohttp.ClientSession) -> None:
    mirror.npm_delay = 0.02
    v = verifier(mirror, session, concurrency=3)
    many = [Check("npm", f"{mirror.url}/npm/", f"pkg-{i}", "1.0.0") for i in range(12)]
    await v.run(many)
    assert mirror.hits.total() == 12
    assert mirror.npm_peak == 3  # reached, never exceeded


def test_check_for_reads_the_served_location() -> None:
    assert check_for({"registryType": "npm", "identifier": "x", "version": "1"}) is None  # no URL
    oci = check_for({"registryType": "oci", "identifier": "registry.example.com/ghcr/a/b:1.0"})
    assert oci == Check("oci", "registry.example.com", "ghcr/a/b", "1.0")
    assert check_for({"registryType": "mcpb", "identifier": "file:///etc/passwd"}) is None


def test_only_mirrored_packages_are_checked() -> None:
    """A package no mirror rule covers keeps its public location and is never verified: the
    gateway only ever contacts URLs built from configured mirrors."""
    from datetime import UTC, datetime

    from gateway.config import MirrorSettings, PolicySettings
    from gateway.entry import parse_item
    from gateway.view import ViewPolicy

    mirrors = MirrorSettings.model_validate(
        {"npm": "https://art.example.com/npm/", "verify": {"mode": "enforce"}}
    )
    packages = [
        {"registryType": "npm", "identifier": "a", "version": "1.0.0"},
        {"registryType": "oci", "identifier": "ghcr.io/a/b:1.0.0"},
        {"registryType": "mcpb", "identifier": "https://github.com/a/b.mcpb"},
    ]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    entry = parse_item(server_entry("io.github.a/b", "1.0.0", packages=packages), seen_at=now)
    decision = ViewPolicy.of("v", PolicySettings(), None, mirrors).decide("o", entry, now)
    assert decision.pending == (Check("npm", "https://art.example.com/npm/", "a", "1.0.0"),)
    assert [m.get("verification") for m in decision.packages] == ["unknown", None, None]
    assert decision.served  # unknown never hides, even when enforcing


def test_pypi_versions_from_filenames() -> None:
    files = ["Acme.Tools-1.0.0-py3-none-any.whl", "acme_tools-1.1.0.tar.gz", "other-9.0.0.zip"]
    assert pypi_versions("acme-tools", files) == {"1.0.0", "1.1.0"}


# End to end through the gateway -------------------------------------------------------------


def write_yaml(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")


@pytest.mark.parametrize("mode", ["annotate", "enforce"])
async def test_gateway_annotates_or_enforces(
    mode: str, mirror: FakeMirror, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    def oci(version: str, published: str) -> dict[str, Any]:
        package = {
            "registryType": "oci",
            "identifier": f"ghcr.io/acme/weather:{version}",
            "transport": {"type": "stdio"},
        }
        return server_entry(
            "io.github.acme/weather", version, published=published, packages=[package]
        )

    items = [oci("1.2.0", "2026-01-01T00:00:00Z"), oci("1.3.0", "2026-02-01T00:00:00Z")]
    config = make_config(upstreams=[file_upstream(tmp_path / "d", "up", items)], access_log=False)
    credentials = [{"prefix": mirror.url + "/", "username": USER, "password": PASSWORD}]
    write_yaml(
        config.directory / "mirrors.yaml",
        {
            "oci": {"ghcr.io": f"{host(mirror)}/ghcr"},
            "verify": {"mode": mode, "credentials": credentials},
        },
    )
    mirror.manifests = {("ghcr/acme/weather", "1.2.0")}  # 1.3.0 never reached the mirror
    client = await serve(load_config(config.directory))
    refresher = client.app[REFRESHER]
    await refresher.verify()
    await refresher.rebuild_now()

    listing = await (await client.get("/v0.1/servers?include_deleted=true")).json()
    verdicts = {
        e["server"]["version"]: e["_meta"]["com.example.mcp-gateway"]["packages"][0]["verification"]
        for e in listing["servers"]
    }
    latest = await (
        await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
    ).json()
    if mode == "annotate":
        assert verdicts == {"1.2.0": "available", "1.3.0": "missing"}
        assert latest["server"]["version"] == "1.3.0"
    else:
        assert verdicts == {"1.2.0": "available"}  # the missing version is hidden
        assert latest["server"]["version"] == "1.2.0"  # latest moved to what can be installed
    served = listing["servers"][0]
    assert (
        served["server"]["packages"][0]["identifier"] == f"{host(mirror)}/ghcr/acme/weather:1.2.0"
    )
    assert served["_meta"]["com.example.mcp-gateway"]["packages"][0]["checkedAt"]


@pytest.mark.parametrize(
    ("kind", "wanted", "offered", "same"),
    [
        ("pypi", "2.0.0-rc.1", "2.0.0rc1", True),
        ("pypi", "1.1", "1.1.0", True),
        ("pypi", "1.0.0.post1", "1.0.0-1", True),
        ("pypi", "1.0.0.dev0", "1.0.0dev", True),
        ("pypi", "1.0.0a1", "1.0.0b1", False),
        ("pypi", "1.0.0", "1.0.0+local", False),
        ("npm", "2.0.0-beta.0", "2.0.0-beta", False),
        ("npm", "1.0.0", "1.0", False),
        ("cargo", "0.1.0", "0.1.0", True),
        ("nuget", "2.0.0-BETA", "2.0.0-beta", True),
    ],
)
def test_versions_match_as_each_tool_does(kind: str, wanted: str, offered: str, same: bool) -> None:
    from gateway.verify import versions_match

    assert versions_match(kind, wanted, offered) is same
