"""Mirror verification against real aiohttp servers that speak each mirror's read API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.app import REFRESHER
from gateway.config import VerifySettings
from gateway.loader import load_config
from gateway.locations import within
from gateway.registries import ECOSYSTEMS, check_for
from gateway.registries.base import Check
from gateway.registries.pypi import file_versions as pypi_versions
from gateway.verify import Verifier
from tests.conftest import file_upstream
from tests.fakes import (
    MIRROR_PASSWORD,
    MIRROR_TOKEN,
    MIRROR_USER,
    FakeMirror,
    Witness,
    server_entry,
)

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
        (Check("go", f"{m}/go", "github.com/Acme/weather-mcp", "v1.2.0"), "available"),
        (Check("go", f"{m}/go/", "github.com/Acme/weather-mcp", "1.0.0"), "available"),
        (Check("go", f"{m}/go", "github.com/Acme/weather-mcp", "v2.0.0"), "missing"),
        (Check("go", f"{m}/go", "github.com/acme/weather-mcp", "v1.2.0"), "missing"),  # case
        (Check("maven", f"{m}/maven/", "com.acme:weather-mcp", "1.2.0"), "available"),
        (Check("maven", f"{m}/maven", "com.acme:weather-mcp", "1.3.0"), "missing"),
        (Check("maven", f"{m}/maven", "com.acme:absent", "1.0.0"), "missing"),
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
        ("go", "1.2.3", "v1.2.3", True),
        ("go", "v1.2.3", "v1.2.3", True),
        ("go", "v1.2.3", "v1.2.4", False),
        ("maven", "1.0", "1.0", True),
        ("maven", "1.0", "1.0.0", False),
    ],
)
def test_versions_match_as_each_tool_does(kind: str, wanted: str, offered: str, same: bool) -> None:
    assert ECOSYSTEMS[kind].same_version(wanted, offered) is same


# -- mirror checks never leak, never escape, never trust another host's answer -----------------


@pytest.fixture
async def witness() -> AsyncIterator[Witness]:
    other = await Witness({"versions": {"1.2.0": {}}, "token": "stolen"}).start()
    yield other
    await other.stop()


def keyed_verifier(mirror: FakeMirror, session: aiohttp.ClientSession, **extra: Any) -> Verifier:
    """Credentials as an Artifactory API key: a custom header, which aiohttp would carry
    along a redirect to any host (it drops only Authorization)."""
    credentials = [{"prefix": mirror.url + "/", "headers": {"X-JFrog-Art-Api": "s3cret"}}]
    settings = VerifySettings.model_validate(
        {"mode": "annotate", "credentials": credentials, **extra}
    )
    return Verifier(settings, session)


async def test_a_redirect_to_another_host_is_unknown_and_never_followed(
    mirror: FakeMirror, witness: Witness, session: aiohttp.ClientSession
) -> None:
    mirror.redirect["/npm/@acme/weather"] = f"{witness.url}/npm/@acme/weather"
    v = keyed_verifier(mirror, session)
    check = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    await v.run([check])
    assert v.lookup(check).result == "unknown"  # type: ignore[union-attr]
    assert witness.seen == []  # neither the request nor the key went there


async def test_a_redirect_within_the_mirror_is_followed_with_its_credentials(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    mirror.redirect["/npm/@acme/old-name"] = "/npm/@acme/weather"
    v = keyed_verifier(mirror, session)
    check = Check("npm", f"{mirror.url}/npm/", "@acme/old-name", "1.2.0")
    await v.run([check])
    assert v.lookup(check).result == "available"  # type: ignore[union-attr]
    assert [(path, headers.get("X-JFrog-Art-Api")) for path, headers in mirror.seen] == [
        ("/npm/@acme/old-name", "s3cret"),
        ("/npm/@acme/weather", "s3cret"),
    ]


async def test_a_redirect_out_of_the_mirrors_path_is_unknown(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    mirror.redirect["/npm/@acme/weather"] = "/files/notes-1.0.0.mcpb"  # same host, not npm's
    v = keyed_verifier(mirror, session)
    check = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    await v.run([check])
    assert v.lookup(check).result == "unknown"  # type: ignore[union-attr]
    assert mirror.hits["/files/notes-1.0.0.mcpb"] == 0


async def test_an_oversized_answer_is_unknown_never_missing(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    mirror.npm_padding = 64 * 1024
    v = keyed_verifier(mirror, session, max_body=32 * 1024)
    check = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    await v.run([check])
    assert v.lookup(check).result == "unknown"  # type: ignore[union-attr]
    roomy = keyed_verifier(mirror, session)  # the default, 32 MB
    await roomy.run([check])
    assert roomy.lookup(check).result == "available"  # type: ignore[union-attr]


async def test_an_oci_token_realm_elsewhere_gets_only_its_own_credentials(
    mirror: FakeMirror, witness: Witness, session: aiohttp.ClientSession
) -> None:
    mirror.realm = f"{witness.url}/token"
    check = Check("oci", host(mirror), "acme/weather", "1.2.0")
    # The registry has credentials, the realm's host none: the realm is not contacted at all.
    v = verifier(mirror, session)
    await v.run([check])
    assert v.lookup(check).result == "unknown"  # type: ignore[union-attr]
    assert witness.seen == []
    # With credentials configured for the realm's location, those (and only those) go there.
    settings = VerifySettings.model_validate({"mode": "annotate", "credentials": [
        {"prefix": mirror.url + "/", "username": USER, "password": PASSWORD},
        {"prefix": witness.url + "/token", "headers": {"Authorization": "Bearer realm-key"}},
    ]})  # fmt: skip
    both = Verifier(settings, session)
    await both.run([check])
    assert [headers.get("Authorization") for _, headers in witness.seen] == ["Bearer realm-key"]


@pytest.mark.parametrize(
    ("url", "prefix", "inside"),
    [
        ("https://m.example.com/npm/x", "https://m.example.com/npm/", True),
        ("https://m.example.com/npm", "https://m.example.com/npm/", False),
        ("https://m.example.com/npmx/x", "https://m.example.com/npm", False),
        ("https://m.example.com/npm/x", "https://m.example.com/npm", True),
        ("https://M.EXAMPLE.COM/npm/x", "https://m.example.com/npm/", True),
        ("https://m.example.com.evil.com/x", "https://m.example.com", False),
        ("http://127.0.0.1:12345/x", "http://127.0.0.1:1234", False),
        ("http://m.example.com/npm/x", "https://m.example.com/npm/", False),
        ("https://u:p@m.example.com/npm/x", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/../admin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/%2e%2e/admin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/..%2fadmin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/%252e%252e/admin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/..%5cadmin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/a..b", "https://m.example.com/npm/", True),
        ("https://m.example.com/npm/..;/admin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/..;x=1/admin", "https://m.example.com/npm/", False),
        ("https://m.example.com/npm/a;b/c", "https://m.example.com/npm/", True),
    ],
)
def test_within(url: str, prefix: str, inside: bool) -> None:
    assert within(url, prefix) is inside


def test_credentials_go_only_to_their_prefix() -> None:
    settings = VerifySettings.model_validate(
        {"credentials": [{"prefix": "http://127.0.0.1:1234", "headers": {"X-Key": "k"}}]}
    )
    v = Verifier(settings, None)  # type: ignore[arg-type]
    assert v._auth_headers("http://127.0.0.1:1234/npm/x") == {"X-Key": "k"}
    assert v._auth_headers("http://127.0.0.1:12345/npm/x") == {}


async def test_results_no_snapshot_asks_for_again_are_forgotten(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    v = verifier(mirror, session, ttl="0s")
    gone = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    await v.run([gone])
    assert v.lookup(gone) is not None
    await v.run([])  # the next round: the package left the catalog
    assert v.lookup(gone) is None


# -- Go and Maven: the protocols' own spellings, and hostile answers -----------------------------

_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><metadata><versioning><versions><version>&lol9;</version></versions></versioning>"
    + b"</metadata>"
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_LAUGHS, "DOCTYPE"),
        (b'<!DOCTYPE m SYSTEM "http://elsewhere.example/m.dtd"><metadata/>', "DOCTYPE"),
        (b"<metadata><versioning><versions><version>&ext;</version></versions></versioning>"
         b"</metadata>", "not XML"),
        (b"<metadata><versioning><versions>", "not XML"),
        (b"\xff\xfe not xml at all", "not XML"),
        (b"<html><body>login</body></html>", "without versioning"),
    ],
)  # fmt: skip
def test_hostile_maven_metadata_is_refused(body: bytes, reason: str) -> None:
    from gateway.errors import MirrorGarbled
    from gateway.registries.maven import metadata_versions

    with pytest.raises(MirrorGarbled, match=reason):
        metadata_versions(body)


def test_maven_metadata_versions() -> None:
    from gateway.registries.maven import metadata_versions

    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><metadata><groupId>com.acme</groupId>'
        b"<artifactId>tool</artifactId><version>9.9.9</version><versioning><latest>2.0</latest>"
        b"<versions><version>1.0</version><version> 2.0 </version></versions></versioning>"
        b"</metadata>"
    )
    assert metadata_versions(body) == {"1.0", "2.0"}  # not <version> outside <versions>


async def test_a_hostile_maven_answer_is_unknown_never_missing(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    v = verifier(mirror, session)
    mirror.maven_body = _LAUGHS
    check = Check("maven", f"{mirror.url}/maven/", "com.acme:weather-mcp", "1.2.0")
    await v.run([check])
    verdict = v.lookup(check)
    assert verdict is not None
    assert verdict.result == "unknown"


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("github.com/Acme/Weather", "github.com/!acme/!weather"),
        ("golang.org/x/tools", "golang.org/x/tools"),
        ("example.com/AB/c", "example.com/!a!b/c"),
    ],
)
def test_go_module_paths_are_case_encoded(path: str, escaped: str) -> None:
    from gateway.registries.go import escaped as encode

    assert encode(path) == escaped


def test_a_go_list_that_is_not_one_version_per_line_is_garbled() -> None:
    from gateway.errors import MirrorGarbled
    from gateway.registries.go import GO

    check = Check("go", "https://m.example/go", "example.com/m", "v1.0.0")
    assert GO.versions(b"v1.0.0\nv1.1.0\n\n", "text/plain", check) == {"v1.0.0", "v1.1.0"}
    for body in (b"<html>login</html> page", b"\xff\xfe"):
        with pytest.raises(MirrorGarbled):
            GO.versions(body, "text/html", check)


# -- hostile answers are parsed where they cannot stall the serving loop ------------------------

_HOSTILE_ANSWERS = {
    # orjson parses this in one call that holds the GIL for most of a second
    "npm": b"[" + b",".join([b"[]"] * 2_000_000) + b"]",
    # expat calls back for every tag
    "maven": b"<metadata>" + b"<a/>" * 500_000 + b"</metadata>",
}  # fmt: skip


@pytest.mark.parametrize("kind", _HOSTILE_ANSWERS)
async def test_a_hostile_answer_never_stalls_the_event_loop(
    mirror: FakeMirror, session: aiohttp.ClientSession, kind: str
) -> None:
    """A mirror's answer is parsed where it cannot hold the GIL the serving loop needs (a
    worker thread would not do: orjson and expat hold it throughout); it is unknown when it
    makes no sense, never missing."""
    from tests.test_resilience import _loop_lag_during, p99

    v = verifier(mirror, session)
    if kind == "npm":
        mirror.npm_body = _HOSTILE_ANSWERS[kind]
        check = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    else:
        mirror.maven_body = _HOSTILE_ANSWERS[kind]
        check = Check("maven", f"{mirror.url}/maven/", "com.acme:weather-mcp", "1.2.0")
    lags = await _loop_lag_during(v.run([check]))
    assert lags  # sampled throughout
    assert p99(lags) <= 0.050, f"p99 {p99(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    verdict = v.lookup(check)
    assert verdict is not None
    assert verdict.result == "unknown"


async def test_a_large_answer_parsed_elsewhere_gives_the_same_result(
    mirror: FakeMirror, session: aiohttp.ClientSession
) -> None:
    from gateway import isolated

    mirror.npm_padding = 4 * isolated.INLINE_BYTES  # parsed by the helper process
    v = verifier(mirror, session)
    found = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "1.2.0")
    absent = Check("npm", f"{mirror.url}/npm/", "@acme/weather", "9.9.9")
    await v.run([found, absent])
    assert [v.lookup(c).result for c in (found, absent)] == ["available", "missing"]  # type: ignore[union-attr]


async def test_shutdown_stops_a_parse_at_once() -> None:
    """Exit never waits for the helper to finish parsing a hostile answer."""
    import time

    from gateway import isolated
    from gateway.errors import MirrorUnavailable
    from gateway.registries.npm import NPM

    body = b"[" + b",".join([b"[]"] * 5_000_000) + b"]"  # seconds of parsing
    check = Check("npm", "https://m.example/npm/", "x", "1.0.0")
    parsing = asyncio.ensure_future(isolated.parse(NPM.versions, body, "application/json", check))
    for _ in range(1000):  # until the helper has started
        pool = isolated._pool
        if pool is not None and getattr(pool, "_processes", None):
            break
        await asyncio.sleep(0.01)
    assert pool is not None
    helpers = list(pool._processes.values())  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)  # well into the parse
    started = time.perf_counter()
    isolated.shutdown()
    for helper in helpers:
        await asyncio.to_thread(helper.join, 5)
        assert helper.exitcode is not None
    assert time.perf_counter() - started < 2
    with pytest.raises(MirrorUnavailable, match="died"):
        await parsing


async def test_a_helper_that_cannot_start_makes_the_answer_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where no process can be started (a container without /dev/shm, a process limit), a
    large answer is unknown, never parsed on the loop, never an unexpected error."""
    import multiprocessing

    from gateway import isolated
    from gateway.errors import MirrorUnavailable
    from gateway.registries.npm import NPM

    def refuse(method: str | None = None) -> object:
        raise OSError(38, "Function not implemented")

    isolated.shutdown()
    monkeypatch.setattr(multiprocessing, "get_context", refuse)
    check = Check("npm", "https://m.example/npm/", "x", "1.0.0")
    body = b'{"versions":{"1.0.0":{}},"readme":"' + b"x" * (2 * isolated.INLINE_BYTES) + b'"}'
    with pytest.raises(MirrorUnavailable, match="no process to parse"):
        await isolated.parse(NPM.versions, body, "application/json", check)
