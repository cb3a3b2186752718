"""The catalog page over HTTP at a few hundred servers: counts, filters, both orders, paging
both ways, bad queries as pages, gzip."""

from __future__ import annotations

import asyncio
import gzip
import html
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.api import elsewhere
from gateway.app import REFRESHER
from gateway.errors import Busy
from gateway.registries import KNOWN as allowed_types
from tests.fakes import FakeMirror
from tests.web_catalog import many_entries, write_many_config, write_verified_web_config

COUNT = 240


@pytest.fixture
async def client(tmp_path: Path, serve: Any) -> Any:
    return await serve(write_many_config(tmp_path / "config", COUNT))


async def get(client: Any, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status == status, path
    text: str = await response.text()
    return text


def names(markup: str) -> list[str]:
    return re.findall(r'<p class="name"><code>([^<]+)</code>', markup)


def counts(markup: str) -> str:
    found = re.search(r'<p class="summary counts" role="status">(.*?)</p>', markup)
    assert found is not None
    return html.unescape(found.group(1))


def link(markup: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', markup)
    return html.unescape(found.group(1)) if found else None


def expected_servers() -> dict[str, list[dict[str, Any]]]:
    servers: dict[str, list[dict[str, Any]]] = {}
    for entry in many_entries(COUNT):
        servers.setdefault(entry["server"]["name"], []).append(entry)
    return servers


async def test_counts_say_how_many_are_served_and_hidden(client: Any) -> None:
    servers = expected_servers()
    blocked = sum(1 for name in servers if name.startswith("io.github.blocked/"))
    assert (
        counts(await get(client, "/"))
        == f"{len(servers) - blocked} servers; {blocked} hidden in this view."
    )
    team07 = sum(1 for name in servers if name.startswith("io.github.team07/"))
    hidden = team07 + blocked  # a view narrows what policy.yaml allows
    assert counts(await get(client, "/views/payments/")) == (
        f"{len(servers) - hidden} servers; {hidden} hidden in this view."
    )
    narrowed = counts(await get(client, "/?transport=remote&q=WEATHER"))
    remote_weather = sum(
        1 for name, versions in servers.items()
        if "weather" in name and versions[-1]["server"].get("remotes")
        and not name.startswith("io.github.blocked/")
    )  # fmt: skip
    assert narrowed.endswith(f"{remote_weather} match \u201cWEATHER\u201d.")


async def test_filters_keep_only_what_they_name(client: Any) -> None:
    servers = expected_servers()

    def latest(name: str) -> dict[str, Any]:
        return servers[name][-1]["server"]

    remote = names(await get(client, "/?transport=remote"))
    assert remote
    assert all(latest(n).get("remotes") for n in remote)
    pypi = names(await get(client, "/?type=pypi"))
    assert pypi
    assert all(latest(n)["packages"][0]["registryType"] == "pypi" for n in pypi)
    deprecated = names(await get(client, "/?status=deprecated"))
    assert deprecated
    assert all(
        servers[n][-1]["_meta"]["io.modelcontextprotocol.registry/official"]["status"]
        == "deprecated"
        for n in deprecated
    )
    active = set(names(await get(client, "/?status=active&type=pypi")))
    assert active
    assert not active & set(deprecated)


async def test_paging_forward_and_back_by_name_and_by_update(client: Any) -> None:
    for sort in ("name", "updated"):
        first = await get(client, f"/?sort={sort}")
        assert len(names(first)) == 50
        assert link(first, "prev") is None
        following = link(first, "next")
        assert following is not None
        second = await get(client, following)
        assert not set(names(second)) & set(names(first))
        back = link(second, "prev")
        assert back is not None
        assert "before=" in back
        assert "offset" not in back
        assert names(await get(client, back)) == names(first)
    by_update = names(await get(client, "/?sort=updated"))
    servers = expected_servers()
    stamps = [servers[n][-1]["_meta"]["io.modelcontextprotocol.registry/official"]["updatedAt"]
              for n in by_update]  # fmt: skip
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(
    ("query", "complaint"),
    [("sort=price", "sort must be one of name, updated"),
     ("transport=pigeon", "transport must be one of remote, local"),
     ("sort=updated&after=yesterday", "after is not a cursor"),
     ("after=a&before=b", "not both")],
)  # fmt: skip
async def test_a_bad_query_is_a_page_naming_what_is_wrong(
    client: Any, query: str, complaint: str
) -> None:
    markup = await get(client, f"/?{query}", 400)
    assert complaint.casefold() in html.unescape(markup).casefold()


async def test_pages_are_gzip_compressed_when_the_client_takes_it(client: Any) -> None:
    response = await client.get("/", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    body = gzip.decompress(await response.read()).decode()
    assert body.startswith("<!doctype html>")
    plain = await client.get("/", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.text() == body


async def test_mirror_filters_read_what_the_mirror_answered(
    tmp_path: Path, serve: Any, mirror: FakeMirror
) -> None:
    """Verification on, over a loopback mirror that has one filler server's package: the
    `mirror` filter and badge say what it answered; remote-only servers have no answer."""
    mirror.npm["@test/server-007"] = ["1.0.0"]
    client = await serve(write_verified_web_config(tmp_path / "config", f"{mirror.url}/npm/"))
    refresher = client.app[REFRESHER]
    await refresher.verify()
    await refresher.rebuild_now()
    available = await get(client, "/?mirror=available")
    assert names(available) == ["io.github.filler/server-007"]
    assert 'class="badge mirror available"' in available
    assert 'title="On the mirror' in available
    missing = names(await get(client, "/?mirror=missing"))
    assert "io.github.acme/weather" in missing
    assert "io.github.filler/server-007" not in missing
    assert "com.example/remote-only" not in missing + names(await get(client, "/?mirror=unknown"))
    assert counts(await get(client, "/?trust=signature")).endswith(" 0 match.")


async def test_versions_published_together_are_listed_newest_first(client: Any) -> None:
    markup = await get(client, "/server/io.github.team07/postgres-00047")
    shown = re.findall(r'<td data-label="Version">([^<]+)</td>', markup)
    assert shown == ["1.2.0", "1.1.0", "1.0.0"]


async def test_a_search_is_shown_back_without_control_or_format_characters(client: Any) -> None:
    markup = await get(client, "/?q=" + quote("weat\u202eher\u200b\x07"))
    assert counts(markup).endswith("match \u201cweather\u201d.")
    assert "\u202e" not in markup


async def test_the_form_offers_the_types_the_gateway_knows_not_what_upstreams_send(
    client: Any,
) -> None:
    markup = await get(client, "/")
    offered = re.findall(
        r'<option value="([^"]*)"', markup.split('name="type"')[1].split("</select>")[0]
    )
    assert offered == ["", *allowed_types]
    await get(client, "/?type=NuGet", 400)


async def test_long_work_beyond_what_waits_already_is_busy_not_queued(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long work (past the loop's allowance) while as much waits already for the one thread
    that does it: a 503 with Retry-After at once, for pages and the API alike (`elsewhere`)."""
    monkeypatch.setattr("gateway.api.MAX_WAITING", 1)
    monkeypatch.setattr("gateway.pages.ON_LOOP", 0)
    started, go_on = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        go_on.wait(10)

    waiting = asyncio.ensure_future(elsewhere(blocking))
    await asyncio.to_thread(started.wait, 10)
    try:
        page = await client.get("/?transport=remote")
        assert page.status == 503
        assert page.headers["Retry-After"] == "1"
        assert "busy" in await page.text()
        with pytest.raises(Busy):
            await elsewhere(lambda: None)
    finally:
        go_on.set()
        await waiting
    assert (await client.get("/?transport=remote")).status == 200  # room again
