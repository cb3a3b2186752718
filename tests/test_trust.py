"""Trust signals from OSV advisory feeds, end to end: trust.yaml, a feed on disk, rules that
hide known malware and critical vulnerabilities, `latest` moving, a fail-closed view,
explain, status, refreshes that keep the last good feed, and hostile feed files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.advisories import documents, read
from gateway.app import REFRESHER
from gateway.errors import FeedInvalid
from gateway.loader import load_config
from gateway.trust_config import OsvFeed
from tests.conftest import file_upstream
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys

TOKEN = {"Authorization": "Bearer tok3n"}
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def package(kind: str, identifier: str, version: str) -> dict[str, Any]:
    return {"registryType": kind, "identifier": identifier, "version": version,
            "transport": {"type": "stdio"}}  # fmt: skip


def osv(ident: str, ecosystem: str, name: str, *events: dict[str, str], **extra: Any) -> bytes:
    return orjson.dumps({
        "id": ident, "modified": "2026-06-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                      "ranges": [{"type": "ECOSYSTEM", "events": list(events)}]}],
        **extra,
    })  # fmt: skip


def write_yaml(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")


SERVERS = [
    server_entry("io.github.acme/weather", "1.0.0", published="2026-01-01T00:00:00Z",
                 packages=[package("npm", "acme-weather", "1.0.0")]),
    server_entry("io.github.acme/weather", "1.1.0", published="2026-02-01T00:00:00Z",
                 packages=[package("npm", "acme-weather", "1.1.0")]),
    server_entry("io.github.acme/py", "2.0.0", packages=[package("pypi", "Acme_Py", "2.0.0")]),
    server_entry("io.github.acme/py", "2.1.0", packages=[package("pypi", "acme-py", "2.1.0")]),
    server_entry("io.github.acme/remote", "1.0.0",
                 remotes=[{"type": "streamable-http", "url": "https://mcp.acme.example/"}]),
    server_entry("io.github.acme/go", "1.0.0",
                 packages=[package("go", "github.com/acme/go-mcp", "v1.0.0")]),
]  # fmt: skip
MALWARE = osv("MAL-2026-1234", "npm", "acme-weather", {"introduced": "1.1.0"}, {"fixed": "1.1.1"})
VULNERABLE = osv("GHSA-aaaa-bbbb-cccc", "PyPI", "acme-py", {"introduced": "0"}, {"fixed": "2.1.0"},
                 aliases=["CVE-2026-0042"], severity=[{"type": "CVSS_V3", "score": CRITICAL}])  # fmt: skip


@pytest.fixture
async def setup(tmp_path: Path, make_config: Any, serve: Any) -> Any:
    upstream = file_upstream(tmp_path / "data", "official", SERVERS)
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    directory = config.directory
    feed = directory / "advisories"
    feed.mkdir()
    (feed / "MAL-2026-1234.json").write_bytes(MALWARE)
    (feed / "nested").mkdir()
    (feed / "nested" / "GHSA-aaaa-bbbb-cccc.json").write_bytes(VULNERABLE)
    write_yaml(directory / "trust.yaml", {"osv": [
        {"name": "osv", "file": "./advisories", "ecosystems": ["npm", "pypi"], "refresh": "1h"},
    ]})  # fmt: skip
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": [
        {"deny": {"malicious": True}}, {"deny": {"severity": ">=critical"}},
    ]})  # fmt: skip
    write_yaml(directory / "views" / "strict.yaml",
               {"default": "allow", "rules": [{"deny": {"malicious": "unknown"}}]})  # fmt: skip
    client = await serve(load_config(directory))
    return client, directory


async def test_known_malware_and_critical_versions_are_hidden_and_latest_moves(setup: Any) -> None:
    client, _ = setup
    served = keys(await all_entries(client))
    assert ("io.github.acme/weather", "1.1.0") not in served  # MAL-2026-1234
    assert ("io.github.acme/py", "2.0.0") not in served  # critical, fixed in 2.1.0
    assert {("io.github.acme/weather", "1.0.0"), ("io.github.acme/py", "2.1.0"),
            ("io.github.acme/remote", "1.0.0"), ("io.github.acme/go", "1.0.0")} <= set(served)  # fmt: skip
    latest = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
    assert (await latest.json())["server"]["version"] == "1.0.0"
    hidden = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/1.1.0")
    assert hidden.status == 404


async def test_a_fail_closed_view_hides_what_no_feed_could_tell(setup: Any) -> None:
    client, _ = setup
    strict = keys(await all_entries(client, "/views/strict"))
    assert ("io.github.acme/go", "1.0.0") not in strict  # go: no feed speaks for it
    assert ("io.github.acme/remote", "1.0.0") in strict  # nothing to know: served
    assert ("io.github.acme/weather", "1.0.0") in strict


async def test_explain_names_the_advisories_and_status_the_feed(setup: Any) -> None:
    client, _ = setup
    report = await (await client.get("/admin/explain?name=io.github.acme/weather",
                                     headers=TOKEN)).json()  # fmt: skip
    by_version = {item["version"]: item for item in report["versions"]}
    hidden = by_version["1.1.0"]
    assert hidden["views"]["default"]["served"] is False
    assert hidden["views"]["default"]["rules"] == ["policy.yaml rules[0]"]
    assert hidden["views"]["default"]["signals"] == ["MAL-2026-1234"]
    assert hidden["advisories"]["malicious"] is True
    assert hidden["advisories"]["packages"] == [
        {"registryType": "npm", "identifier": "acme-weather", "version": "1.1.0",
         "state": "present"}]  # fmt: skip
    assert by_version["1.0.0"]["advisories"]["malicious"] is False
    py = await (await client.get("/admin/explain?name=io.github.acme/py", headers=TOKEN)).json()
    old = next(item for item in py["versions"] if item["version"] == "2.0.0")
    assert old["views"]["default"]["signals"] == ["GHSA-aaaa-bbbb-cccc (critical)"]
    assert old["advisories"]["advisories"][0]["aliases"] == ["CVE-2026-0042"]
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    [feed] = status["advisoryFeeds"]
    assert feed["name"] == "osv"
    assert feed["records"] == 2
    assert feed["lastError"] is None
    assert feed["ecosystems"] == ["npm", "pypi"]
    assert feed["loadedAt"] is not None


async def test_a_changed_feed_applies_and_a_broken_one_keeps_the_last_good(setup: Any) -> None:
    client, directory = setup
    refresher = client.server.app[REFRESHER]
    feed = directory / "advisories"
    (feed / "MAL-2026-2000.json").write_bytes(
        osv("MAL-2026-2000", "npm", "acme-weather", {"introduced": "0"})
    )
    assert await refresher.refresh_advisories() is True
    await refresher.rebuild_now()
    served = keys(await all_entries(client))
    assert not [k for k in served if k[0] == "io.github.acme/weather"]  # every version now
    assert (
        await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
    ).status == 404
    for index in range(12):  # mostly malformed: the feed is refused
        (feed / f"junk-{index}.json").write_bytes(b'{"id": 3}')
    assert await refresher.refresh_advisories() is False
    await refresher.rebuild_now()
    assert not [k for k in keys(await all_entries(client)) if k[0] == "io.github.acme/weather"]
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    assert "12 of its 15 records are malformed" in status["advisoryFeeds"][0]["lastError"]
    assert status["advisoryFeeds"][0]["records"] == 3  # still the last good data


async def test_with_the_feed_missing_nothing_is_hidden_but_what_a_rule_asks(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    upstream = file_upstream(tmp_path / "data", "official", SERVERS)
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    directory = config.directory
    write_yaml(directory / "trust.yaml", {"osv": [
        {"name": "osv", "file": "./nowhere.zip", "ecosystems": ["npm", "pypi"]}]})  # fmt: skip
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": [
        {"deny": {"malicious": True}}, {"deny": {"severity": ">=critical"}}]})  # fmt: skip
    write_yaml(directory / "views" / "strict.yaml",
               {"default": "allow", "rules": [{"deny": {"malicious": "unknown"}}]})  # fmt: skip
    client = await serve(load_config(directory))
    assert len(await all_entries(client)) == len(SERVERS)  # a feed down hides nothing
    strict = keys(await all_entries(client, "/views/strict"))
    assert strict == [("io.github.acme/remote", "1.0.0")]  # only what has nothing to know
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    assert "does not exist" in status["advisoryFeeds"][0]["lastError"]
    assert status["advisoryFeeds"][0]["loadedAt"] is None


# -- hostile feed files -------------------------------------------------------------------------


def read_at(feed: OsvFeed) -> Any:
    assert feed.file is not None
    return read(feed, feed.file)


def feed_at(path: Path, **settings: Any) -> OsvFeed:
    return OsvFeed.model_validate({"name": "f", "file": str(path), "ecosystems": ["npm"],
                                   **settings})  # fmt: skip


def test_a_zip_feed_is_read_and_a_bomb_in_it_is_read_no_further(tmp_path: Path) -> None:
    path = tmp_path / "all.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MAL-2026-1234.json", MALWARE)
        archive.writestr("bomb.json", b"[" + b" " * (64 * 1024 * 1024) + b"]")  # 64 MB, ~64 KB
        archive.writestr("README.md", b"not a record")
    assert path.stat().st_size < 1024 * 1024
    advisories = read_at(feed_at(path))
    assert advisories.records == 2
    assert ("npm", "acme-weather") in advisories.packages
    assert advisories.skipped == {"not JSON": 1}  # the bomb: its first megabyte, not JSON


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not really"), "not a readable zip"),
        (lambda p: None, "does not exist"),
    ],
)
def test_an_unreadable_zip_is_refused(tmp_path: Path, make: Any, error: str) -> None:
    path = tmp_path / "all.zip"
    make(path)
    with pytest.raises(FeedInvalid, match=error):
        read_at(feed_at(path))


def test_a_feed_past_its_bounds_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    for index in range(8):
        (folder / f"r{index}.json").write_bytes(MALWARE)
    assert len(MALWARE) * 8 > 1024
    with pytest.raises(FeedInvalid, match="more records than max_records"):
        list(documents(feed_at(folder, max_records=7), folder))
    with pytest.raises(FeedInvalid, match="larger than max_bytes"):
        list(documents(feed_at(folder, max_bytes=1024), folder))
    one = tmp_path / "one.json"
    one.write_bytes(b"[" + b",".join([MALWARE] * 3) + b"]")
    assert read_at(feed_at(one)).records == 3
    one.write_bytes(b"[" + b",".join([MALWARE] * 8) + b"]")
    with pytest.raises(FeedInvalid, match="larger than max_bytes"):
        read_at(feed_at(one, max_bytes=1024))
    with pytest.raises(FeedInvalid, match="more records than max_records"):
        read_at(feed_at(one, max_records=7))


def test_links_and_special_files_in_a_feed_directory_are_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "real.json").write_bytes(MALWARE)
    secret = tmp_path / "secret.json"
    secret.write_bytes(osv("MAL-2026-9999", "npm", "elsewhere", {"introduced": "0"}))
    (folder / "link.json").symlink_to(secret)
    advisories = read_at(feed_at(folder))
    assert advisories.records == 1
    assert ("npm", "elsewhere") not in advisories.packages


def test_check_refuses_a_typo_in_trust_yaml(tmp_path: Path, capsys: Any) -> None:
    from gateway.cli import main

    write_yaml(tmp_path / "gateway.yaml", {"upstreams": [{"name": "u", "file": "x.json"}]})
    write_yaml(tmp_path / "trust.yaml", {"osv": [{"name": "osv", "file": "a.zip",
                                                  "ecosystem": ["npm"]}]})  # fmt: skip
    assert main(["check", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert "trust.yaml" in err.out + err.err
    assert "ecosystem" in err.out + err.err


# -- the commands that work offline: explain, and diff of a trust rule -------------------------


def offline_config(directory: Path, data: Path, rules: list[dict[str, Any]]) -> str:
    from tests.conftest import write_config

    write_config(directory, {"upstreams": [file_upstream(data, "official", SERVERS)],
                             "state_dir": str(data / "state")})  # fmt: skip
    feed = data / "advisories"
    feed.mkdir(exist_ok=True)
    (feed / "MAL-2026-1234.json").write_bytes(MALWARE)
    (feed / "GHSA-aaaa-bbbb-cccc.json").write_bytes(VULNERABLE)
    write_yaml(directory / "trust.yaml", {"osv": [
        {"name": "osv", "file": str(feed), "ecosystems": ["npm", "pypi"]}]})  # fmt: skip
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": rules})
    return str(directory)


def test_explain_and_diff_read_the_feeds_offline(tmp_path: Path, capsys: Any) -> None:
    from gateway.cli import main

    current = offline_config(
        tmp_path / "current", tmp_path / "data", [{"deny": {"malicious": True}}]
    )
    proposed = offline_config(tmp_path / "proposed", tmp_path / "data",
                              [{"deny": {"malicious": True}}, {"deny": {"severity": ">=high"}}])  # fmt: skip
    assert main(["sync", "--config", current]) == 0
    capsys.readouterr()
    assert main(["explain", "io.github.acme/weather", "--config", current]) == 0
    text = capsys.readouterr().out
    assert "denied by policy.yaml rules[0]: MAL-2026-1234" in text
    assert main(["explain", "io.github.acme/weather", "--config", current, "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    hidden = next(v for v in report["versions"] if v["version"] == "1.1.0")
    assert hidden["views"]["default"]["signals"] == ["MAL-2026-1234"]
    assert main(["diff", "--config", current, "--against", proposed, "--json"]) == 0
    diff = orjson.loads(capsys.readouterr().out)
    assert diff["views"]["default"]["disappear"] == ["io.github.acme/py@2.0.0"]  # the new rule


async def test_the_server_page_says_which_advisory_hid_a_version(setup: Any) -> None:
    import re

    client, _ = setup
    response = await client.get("/server/io.github.acme/weather")
    assert response.status == 200
    markup = await response.text()
    row = next(
        r for r in re.findall(r"<tr>.*?</tr>", markup) if '<td data-label="Version">1.1.0</td>' in r
    )
    assert "hidden: denied" in row
    assert "MAL-2026-1234" in row


NS = "com.example.mcp-gateway"


async def test_served_entries_say_what_the_feeds_say_and_metrics_count_it(setup: Any) -> None:
    client, directory = setup
    refresher = client.server.app[REFRESHER]
    low = "CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"
    (directory / "advisories" / "GHSA-low.json").write_bytes(osv(
        "GHSA-low0-low0-low0", "PyPI", "acme-py", {"introduced": "2.1.0"},
        severity=[{"type": "CVSS_V3", "score": low}], modified="2026-07-01T00:00:00Z",
    ))  # fmt: skip
    assert await refresher.refresh_advisories() is True
    await refresher.rebuild_now()
    await refresher._index()  # what a serving gateway does after each build, in its thread

    async def meta(name: str, version: str, base: str = "") -> dict[str, Any]:
        response = await client.get(
            f"{base}/v0.1/servers/{name.replace('/', '%2F')}/versions/{version}"
        )
        assert response.status == 200
        document: dict[str, Any] = (await response.json())["_meta"][NS]
        return document

    assert (await meta("io.github.acme/weather", "1.0.0"))["advisories"] == {
        "state": "absent", "malicious": False, "severity": None, "ids": [], "feeds": ["osv"],
        "asOf": "2026-07-01T00:00:00Z",
    }  # fmt: skip
    served_with_one = (await meta("io.github.acme/py", "2.1.0"))["advisories"]
    assert served_with_one["state"] == "present"
    assert served_with_one["ids"] == ["GHSA-low0-low0-low0"]
    assert served_with_one["severity"] == "low"
    assert (await meta("io.github.acme/go", "1.0.0"))["advisories"]["state"] == "unknown"
    assert "advisories" not in await meta("io.github.acme/remote", "1.0.0")
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    default = next(view for view in status["views"] if view["name"] == "default")
    assert default["advisories"] == {"absent": 1, "present": 1, "unknown": 1}
    metrics = await (await client.get("/metrics")).text()
    assert 'mcp_gateway_view_advisory_versions{state="present",view="default"} 1.0' in metrics
    assert 'mcp_gateway_view_advisory_versions{state="unknown",view="strict"}' not in metrics


# -- a feed by URL: downloaded when it changes, the last good kept ------------------------------


async def test_a_feed_by_url_is_downloaded_revalidated_and_kept(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    import io

    import aiohttp
    from aiohttp import web

    from gateway.advisories import Feeds
    from gateway.trust_config import TrustSettings

    def zipped(*records: bytes) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for index, data in enumerate(records):
                archive.writestr(f"r{index}.json", data)
        return buffer.getvalue()

    served = {"body": zipped(MALWARE), "etag": '"v1"', "status": 200}
    asked: list[dict[str, str]] = []

    async def feed(request: web.Request) -> web.Response:
        asked.append(dict(request.headers))
        if served["status"] != 200:
            return web.Response(status=int(served["status"]))
        if request.headers.get("If-None-Match") == served["etag"]:
            return web.Response(status=304)
        return web.Response(body=served["body"], headers={"ETag": str(served["etag"])})

    app = web.Application()
    app.router.add_get("/osv/npm/all.zip", feed)
    server = await aiohttp_server(app)
    settings = TrustSettings.model_validate({"osv": [{
        "name": "remote", "url": f"http://127.0.0.1:{server.port}/osv/npm/all.zip",
        "headers": {"X-JFrog-Art-Api": "k3y"}, "ecosystems": ["npm"]}]})  # fmt: skip
    async with aiohttp.ClientSession() as session:
        feeds = Feeds(settings, tmp_path, session)
        assert await feeds.refresh() is True
        assert feeds.current is not None
        assert ("npm", "acme-weather") in feeds.current.packages
        assert (tmp_path / "advisories" / "remote.zip").exists()
        assert asked[0]["X-JFrog-Art-Api"] == "k3y"
        assert await feeds.refresh() is False  # a 304: nothing read again
        assert asked[-1]["If-None-Match"] == '"v1"'
        served.update(body=zipped(MALWARE, VULNERABLE_NPM), etag='"v2"')
        assert await feeds.refresh() is True
        assert ("npm", "leftish") in feeds.current.packages
        served["status"] = 503  # down: the last good feed stays, the error is shown
        assert await feeds.refresh() is False
        assert ("npm", "leftish") in feeds.current.packages
        assert "HTTP 503" in str(feeds.states[0].last_error)
        restarted = Feeds(settings, tmp_path, session)  # no network: the last download
        assert await restarted.refresh(force=True) is True
        assert restarted.current is not None
        assert ("npm", "leftish") in restarted.current.packages
        served.update(status=200, body=b"x" * 4096, etag='"v3"')
        small = TrustSettings.model_validate({"osv": [{
            **settings.osv[0].model_dump(mode="json", exclude={"headers"}),
            "max_bytes": 1024}]})  # fmt: skip
        bounded = Feeds(small, tmp_path / "other", session)
        assert await bounded.refresh() is False
        assert "larger than max_bytes" in str(bounded.states[0].last_error)
        assert not list((tmp_path / "other").rglob("*.part"))


VULNERABLE_NPM = osv("GHSA-npm0-npm0-npm0", "npm", "leftish", {"introduced": "0"})


# -- trust sources down, or large: serving goes on as before -----------------------------------


@pytest.mark.slow
async def test_with_every_trust_source_down_or_large_serving_goes_on(
    tmp_path: Path, make_config: Any, serve: Any, aiohttp_server: Any
) -> None:
    import asyncio

    from aiohttp import web

    from tests.test_resilience import _loop_lag_during, p99

    async def hangs(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    async def down(_: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/hangs/all.zip", hangs)
    app.router.add_get("/down/all.zip", down)
    app.router.add_get("/hangs/npm/{name:.*}", hangs)  # the npm mirror: signatures, provenance
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    large = tmp_path / "large.zip"
    with zipfile.ZipFile(large, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(40_000):
            archive.writestr(f"r{index}.json", osv(f"GHSA-{index}", "npm", f"other-{index}",
                                                   {"introduced": "0"}, {"fixed": "9.9.9"}))  # fmt: skip
    upstream = file_upstream(tmp_path / "data", "official", SERVERS)
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    directory = config.directory
    write_yaml(directory / "trust.yaml", {"osv": [
        {"name": "hangs", "url": f"{base}/hangs/all.zip", "timeout": "1s", "ecosystems": ["npm"]},
        {"name": "down", "url": f"{base}/down/all.zip", "ecosystems": ["pypi"]},
    ], "npm": {"mirror_keys": True}})  # fmt: skip
    write_yaml(
        directory / "mirrors.yaml", {"npm": f"{base}/hangs/npm/", "verify": {"timeout": "1s"}}
    )
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": [
        {"deny": {"malicious": True}}, {"deny": {"severity": ">=critical"}},
        {"deny": {"signature": "invalid"}}, {"deny": {"provenance": "invalid"}}]})  # fmt: skip
    write_yaml(directory / "trust.yaml", {**yaml.safe_load((directory / "trust.yaml").read_text()),
                                          "npm": {"mirror_keys": True,
                                                  "trusted_root": str(_test_root(tmp_path))}})  # fmt: skip
    client = await serve(load_config(directory))
    refresher = client.server.app[REFRESHER]
    assert len(await all_entries(client)) == len(SERVERS)  # every source down: nothing hidden

    async def verify_and_serve() -> None:  # the npm mirror hangs: signals unknown
        asking = asyncio.create_task(refresher.verify())
        while not asking.done():
            response = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
            assert response.status == 200
        await asking

    await refresher.rebuild_now()
    lags = await _loop_lag_during(verify_and_serve())
    assert p99(lags) <= 0.050, f"p99 {p99(lags) * 1000:.1f} ms while the npm mirror hangs"
    await refresher.rebuild_now()
    assert len(await all_entries(client)) == len(SERVERS)  # unknown signals hide nothing
    weather = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/1.0.0")
    signals = (await weather.json())["_meta"]["com.example.mcp-gateway"]["packages"][0]["signals"]
    assert signals["signature"]["state"] == signals["provenance"]["state"] == "unknown"

    async def refresh_and_serve() -> None:
        refreshing = asyncio.create_task(refresher.refresh_advisories(force=True))
        while not refreshing.done():  # lookups all the while
            response = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
            assert response.status == 200
        await refreshing

    lags = await _loop_lag_during(refresh_and_serve())
    assert p99(lags) <= 0.050, f"p99 {p99(lags) * 1000:.1f} ms while the sources are down"
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    errors = {feed["name"]: feed["lastError"] for feed in status["advisoryFeeds"]}
    assert "TimeoutError" in errors["hangs"]
    assert "HTTP 503" in errors["down"]
    # A large feed (40,000 records) is read in the helper process, not on the serving loop.
    npm = yaml.safe_load((directory / "trust.yaml").read_text())["npm"]
    write_yaml(directory / "trust.yaml", {"osv": [
        {"name": "large", "file": str(large), "ecosystems": ["npm"]}], "npm": npm})  # fmt: skip
    lags = await _loop_lag_during(refresher.apply(load_config(directory)))
    assert p99(lags) <= 0.050, f"p99 {p99(lags) * 1000:.1f} ms while a large feed is read"
    assert refresher.advisories.states[0].advisories is not None
    assert refresher.advisories.states[0].advisories.records == 40_000


def _test_root(directory: Path) -> Path:
    from tests.signing import SigningSetup

    path = directory / "trusted_root.json"
    path.write_bytes(orjson.dumps(SigningSetup().trusted_root()))
    return path


def test_what_the_feed_said_of_versions_gone_is_let_go() -> None:
    """Served entries say what the feeds say (marks) even with no trust rule: what was
    remembered of versions no upstream serves any more is let go every few builds."""
    from datetime import UTC, datetime

    from gateway.catalog import Origin
    from gateway.config import FederationConfig, GatewaySettings
    from gateway.entry import parse_item
    from gateway.merge import Source
    from gateway.osv import read_feed
    from gateway.snapshot import _FORGET_EVERY, Builder
    from gateway.trust_config import TrustSettings

    now = datetime(2026, 11, 1, tzinfo=UTC)
    config = FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings.model_validate({"upstreams": [{"name": "one", "file": "x"}]}),
        trust=TrustSettings.model_validate(
            {"osv": [{"name": "osv", "file": "x", "ecosystems": ["npm"]}]}),
    )  # fmt: skip
    advisories = read_feed([MALWARE], frozenset({"npm"}))
    builder = Builder(config)
    for index in range(3 * _FORGET_EVERY):  # every build, the server's next version alone
        item = server_entry("io.github.acme/weather", f"1.0.{index}",
                            packages=[package("npm", "acme-weather", f"1.0.{index}")])  # fmt: skip
        entry = parse_item(item, seen_at=now)
        builder.build([Source("one", [entry])], {"one": Origin("one", now)}, now,
                      advisories=advisories)  # fmt: skip
    assert len(builder.trust._held) <= _FORGET_EVERY


# -- feeds that turn to garbage, break, or never load -------------------------------------------


def _zip_of(path: Path, *records: bytes) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, data in enumerate(records):
            archive.writestr(f"r{index}.json", data)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"[]", b'{"error": "rate limited"}', b"<html>503</html>", MALWARE[:40], "empty-zip",
     "half", "damaged-zip"],
)  # fmt: skip
async def test_a_feed_turned_to_garbage_is_refused_and_the_last_good_stays(
    tmp_path: Path, garbage: bytes | str
) -> None:
    from gateway.advisories import Feeds
    from gateway.trust_config import TrustSettings

    path = tmp_path / "all.zip"
    _zip_of(
        path, MALWARE, *(osv(f"GHSA-{i}", "npm", f"p{i}", {"introduced": "0"}) for i in range(9))
    )
    feeds = Feeds(TrustSettings.model_validate(
        {"osv": [{"name": "f", "file": str(path), "ecosystems": ["npm"]}]}), tmp_path)  # fmt: skip
    assert await feeds.refresh() is True
    if garbage == "empty-zip":
        _zip_of(path)
    elif garbage == "half":  # a feed that lost most of its records at once
        _zip_of(path, MALWARE, osv("GHSA-0", "npm", "p0", {"introduced": "0"}))
    elif garbage == "damaged-zip":
        data = bytearray(path.read_bytes())
        data[60:90] = b"\xff" * 30  # inside the first member's compressed bytes
        path.write_bytes(bytes(data))
    else:
        assert isinstance(garbage, bytes)
        path.write_bytes(garbage)
    assert await feeds.refresh() is False  # no exception: the refresh loop goes on
    assert feeds.states[0].last_error
    assert feeds.current is not None
    assert ("npm", "acme-weather") in feeds.current.packages  # the last good feed


async def test_a_type_a_feed_that_never_loaded_speaks_for_stays_unknown(tmp_path: Path) -> None:
    from gateway.advisories import Feeds
    from gateway.osv import Judge
    from gateway.trust_config import TrustSettings

    vulns = tmp_path / "vulns.zip"
    _zip_of(vulns, VULNERABLE_NPM)
    feeds = Feeds(TrustSettings.model_validate({"osv": [
        {"name": "vulns", "file": str(vulns), "ecosystems": ["npm"]},
        {"name": "malware", "file": str(tmp_path / "missing.zip"), "ecosystems": ["npm"]},
    ]}), tmp_path)  # fmt: skip
    await feeds.refresh()
    finding = Judge(feeds.current).finding("npm", "evil", "1.0.0")
    assert finding is not None
    assert finding.state == "unknown"  # the malware feed could have named it
    _zip_of(tmp_path / "missing.zip", MALWARE)
    assert await feeds.refresh() is True
    finding = Judge(feeds.current).finding("npm", "evil", "1.0.0")
    assert finding is not None
    assert finding.state == "absent"


def test_a_package_with_no_version_or_not_a_string_is_not_judged_by_the_servers() -> None:
    from datetime import UTC, datetime

    from gateway.entry import parse_item
    from gateway.osv import read_feed
    from gateway.trust import Trust

    now = datetime(2026, 11, 1, tzinfo=UTC)
    feed = read_feed([osv("GHSA-late", "npm", "evil", {"introduced": "1.1.0"})], frozenset({"npm"}))
    trust = Trust()
    trust.use(feed)
    for version in (None, "", 1.0):
        pkg = {"registryType": "npm", "identifier": "evil", "transport": {"type": "stdio"}}
        if version is not None:
            pkg["version"] = version
        entry = parse_item(server_entry("io.github.x/evil", "1.0.0", packages=[pkg]), seen_at=now)
        assert trust.of(entry).malicious is None  # the newest is installed: it may be affected
