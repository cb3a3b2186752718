"""The catalog at thousands of servers in a real browser: Playwright driving Debian's Chromium
over one gateway serving 5,000 generated servers (`tests/web_catalog.many_entries`), its
mirrors a loopback fake with verification on, so packages carry what the mirror said.

A developer finds servers by a word of their descriptions, narrows them by transport, package
type, status and mirror, pages forward and back by key cursors in either order, reads what a
badge means, installs a server in VS Code or copies its mcp.json, and reads on a phone why each
version is hidden in a view. Every expectation comes from the generated servers themselves,
not from the page. Screenshots go to docs/screenshots/ (the README links them).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import pytest_asyncio
import yaml
from playwright.async_api import expect

from gateway.app import REFRESHER, create_app
from gateway.browse import MIRROR_MEANING
from gateway.entry import OFFICIAL
from gateway.loader import load_config
from tests.conftest import PHONE, SCREENSHOTS, GatewayServer, chromium, loopback
from tests.conftest import open_page as _page
from tests.fakes import MIRROR_PASSWORD, MIRROR_USER, FakeMirror
from tests.web_catalog import many_entries, write_many_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),  # one gateway and one browser for the module
]

COUNT = 5000
PAGE = 50
BLOCKED = "io.github.blocked/"  # policy.yaml denies these everywhere
TEAM07 = "io.github.team07/"  # the payments view denies these
Tab = tuple[Any, list[str]]  # a page and the problems seen on it


@dataclass(frozen=True, slots=True)
class Served:
    """A generated server as the catalog should list it: its latest version."""

    name: str
    title: str
    description: str
    updated: datetime
    remote: bool
    types: frozenset[str]
    deprecated: bool
    mirror: str | None  # what the fake mirror answers for its packages; None: no package

    def finds(self, word: str) -> bool:  # as the page's search: name, title or description
        return word.casefold() in f"{self.name}\n{self.title}\n{self.description}".casefold()


def _on_mirror(name: str) -> bool:
    return int(name.rsplit("-", 1)[1]) % 7 != 3  # the rest never reached the mirror


ENTRIES = many_entries(COUNT)


def _generated() -> dict[str, Served]:
    latest = {entry["server"]["name"]: entry for entry in ENTRIES}  # versions ascend
    found = {}
    for name, entry in latest.items():
        server, official = entry["server"], entry["_meta"][OFFICIAL]
        packages = server.get("packages") or []
        found[name] = Served(
            name=name,
            title=server["title"],
            description=server["description"],
            updated=datetime.fromisoformat(official["updatedAt"]),
            remote=bool(server.get("remotes")),
            types=frozenset(p["registryType"] for p in packages),
            deprecated=official["status"] == "deprecated",
            mirror=None if not packages else "available" if _on_mirror(name) else "missing",
        )
    return found


GENERATED = _generated()
DEFAULT = [s for s in GENERATED.values() if not s.name.startswith(BLOCKED)]
PAYMENTS = [s for s in DEFAULT if not s.name.startswith(TEAM07)]
BY_NAME = sorted(DEFAULT, key=lambda s: s.name)
BY_UPDATED = sorted(DEFAULT, key=lambda s: (-s.updated.timestamp(), s.name))


def _stock(mirror: FakeMirror) -> None:
    """Put on the fake mirror every version of the packages `_on_mirror` keeps."""
    for entry in ENTRIES:
        server = entry["server"]
        if not _on_mirror(server["name"]):
            continue
        for package in server.get("packages") or ():
            kind, identifier = package["registryType"], package["identifier"]
            if kind == "npm":
                mirror.npm.setdefault(identifier, []).append(package["version"])
            elif kind == "pypi":
                wheel = f"{identifier.replace('-', '_')}-{package['version']}-py3-none-any.whl"
                mirror.pypi.setdefault(identifier, []).append(wheel)
            else:  # oci: ghcr.io/<owner>/<repo>:<version>, mirrored under /ghcr
                repository, _, version = identifier.removeprefix("ghcr.io/").partition(":")
                mirror.manifests.add((f"ghcr/{repository}", version))


@dataclass(frozen=True, slots=True)
class Site:
    base: str
    npm_mirror: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The gateway over the generated servers, every package's mirror checked."""
    mirror = FakeMirror()
    _stock(mirror)
    async with loopback(mirror.app()) as url:
        mirror.url = url
        config = write_many_config(tmp_path_factory.mktemp("catalog") / "config", COUNT)
        host = url.removeprefix("http://")
        credentials = [{"prefix": url + "/", "username": MIRROR_USER, "password": MIRROR_PASSWORD}]
        mirrors = {"npm": f"{url}/npm/", "pypi": f"{url}/pypi/simple/",
                   "oci": {"ghcr.io": f"{host}/ghcr"},
                   "verify": {"mode": "annotate", "credentials": credentials}}  # fmt: skip
        (config.directory / "mirrors.yaml").write_text(yaml.safe_dump(mirrors), encoding="utf-8")
        app = create_app(load_config(config.directory))
        server = GatewayServer(app)
        await server.start_server()
        try:
            refresher = app[REFRESHER]
            await refresher.wait_ready()
            await refresher.verify()
            await refresher.rebuild_now()
            yield Site(str(server.make_url("")).rstrip("/"), f"{url}/npm/")
        finally:
            await server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, once for the module."""
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Any) -> AsyncIterator[Tab]:
    """A desktop page in a fresh context, as tests/test_browser.py's: every request leaving
    loopback, script error or dialog is a problem the test must not leave."""
    context, page, problems = await _page(browser)
    yield page, problems
    await context.close()


async def _names(page: Any) -> list[str]:
    return list(await page.locator("article.server p.name code").all_inner_texts())


async def _follow(page: Any, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(selector)


async def _apply(page: Any, **chosen: str) -> None:
    for key, value in chosen.items():
        await page.select_option(f"select[name={key}]", value)
    await _follow(page, "form.search button:text-is('Apply')")


async def _every_page(page: Any) -> list[str]:
    """The names on this page and on every page after it (following Next)."""
    names = await _names(page)
    for _ in range(COUNT // PAGE):
        if not await page.locator("a[rel=next]").count():
            return names
        await _follow(page, "a[rel=next]")
        names += await _names(page)
    raise AssertionError("Next page never ran out")


def _match(count: int, word: str = "") -> str:
    return f". {count:,} match" + (f" \u201c{word}\u201d." if word else ".")


async def test_a_word_only_in_descriptions_finds_its_servers(site: Site, tab: Tab) -> None:
    page, problems = tab
    word = "team 7:"  # in descriptions ("... for team 7: server 47."), never in a name
    expected = sorted(s.name for s in DEFAULT if s.finds(word))
    assert expected
    assert not [name for name in expected if word in name]
    await page.goto(site.base + "/")
    await page.fill("input[name=q]", word)
    async with page.expect_navigation():
        await page.press("input[name=q]", "Enter")
    blocked = len(GENERATED) - len(DEFAULT)
    assert await page.inner_text("p.counts") == (
        f"{len(DEFAULT):,} servers; {blocked:,} hidden in this view" + _match(len(expected), word)
    )
    assert await page.input_value("input[name=q]") == word
    descriptions = await page.locator("article.server p.description").all_inner_texts()
    assert len(descriptions) == PAGE
    assert all(word in text for text in descriptions)
    assert await _every_page(page) == expected
    assert await page.input_value("input[name=q]") == word  # the last page keeps it too
    assert problems == []


async def test_filters_narrow_the_cards_and_the_counts_agree(site: Site, tab: Tab) -> None:
    page, problems = tab
    await page.goto(site.base + "/")
    await _apply(page, transport="remote")
    assert (await page.inner_text("p.counts")).endswith(_match(sum(s.remote for s in DEFAULT)))
    headings = await page.locator("article.server .heading").all()
    assert len(headings) == PAGE
    for card in headings:
        shown = await card.locator(".badge").all_inner_texts()
        assert "remote" in shown
        assert "local" not in shown
    await page.goto(site.base + "/")
    await _apply(page, type="pypi")
    pypi = sum("pypi" in s.types for s in DEFAULT)
    assert (await page.inner_text("p.counts")).endswith(_match(pypi))
    kinds = await page.locator("article.server ul.install .kind").all_inner_texts()
    assert len(kinds) == PAGE
    assert set(kinds) == {"pypi"}
    await page.goto(site.base + "/")
    await _apply(page, status="deprecated")
    assert (await page.inner_text("p.counts")).endswith(_match(sum(s.deprecated for s in DEFAULT)))
    cards = page.locator("article.server")
    assert await cards.filter(has=page.locator(".badge.deprecated")).count() == PAGE
    assert await cards.count() == PAGE
    # Both at once, a few pages of them: every one is shown once, as many as the counts say.
    await _apply(page, transport="remote")  # the status chosen stays chosen
    assert await page.input_value("select[name=status]") == "deprecated"
    expected = sorted(s.name for s in DEFAULT if s.remote and s.deprecated)
    assert PAGE < len(expected) < 4 * PAGE
    assert (await page.inner_text("p.counts")).endswith(_match(len(expected)))
    assert await _every_page(page) == expected
    assert problems == []


async def test_next_then_previous_page_returns_the_first_page(site: Site, tab: Tab) -> None:
    page, problems = tab
    await page.goto(site.base + "/")
    first = await _names(page)
    assert first == [s.name for s in BY_NAME[:PAGE]]
    assert await page.locator("a[rel=prev]").count() == 0
    await _follow(page, "a[rel=next]")
    assert "after=" in page.url
    assert await _names(page) == [s.name for s in BY_NAME[PAGE : 2 * PAGE]]
    previous = await page.get_attribute("a[rel=prev]", "href")
    assert previous is not None
    # A key: the page before the first server shown here, whatever sits before it now.
    assert parse_qs(urlsplit(previous).query) == {"before": [BY_NAME[PAGE].name]}
    await _follow(page, "a[rel=prev]")
    assert await _names(page) == first
    assert await page.locator("a[rel=prev]").count() == 0  # the first page again, whole
    assert problems == []


async def test_recently_updated_follows_updated_at_both_ways(site: Site, tab: Tab) -> None:
    page, problems = tab
    await page.goto(site.base + "/")
    await _apply(page, sort="updated")
    first = await _names(page)
    assert first == [s.name for s in BY_UPDATED[:PAGE]]
    # What the API says of the shown servers agrees: newest first, ties by name.
    said = []
    for name in first:
        answer = await page.request.get(
            f"{site.base}/v0.1/servers/{quote(name, safe='')}/versions/latest"
        )
        assert answer.ok
        updated = (await answer.json())["_meta"][OFFICIAL]["updatedAt"]
        said.append((-datetime.fromisoformat(updated).timestamp(), name))
    assert said == sorted(said)
    assert len({key for key, _ in said}) < len(said)  # some ties, ordered by name
    await _follow(page, "a[rel=next]")
    assert await _names(page) == [s.name for s in BY_UPDATED[PAGE : 2 * PAGE]]
    assert await page.input_value("select[name=sort]") == "updated"
    await _follow(page, "a[rel=prev]")
    assert await _names(page) == first
    assert problems == []


async def test_a_badge_says_what_it_means(site: Site, tab: Tab) -> None:
    page, problems = tab
    await page.goto(site.base + "/")
    said = {}
    for card in await page.locator("article.server").all():
        name = await card.locator("p.name code").inner_text()
        badge = card.locator(".badge.mirror[title]")
        text = await badge.inner_text()
        assert await badge.get_attribute("title") == MIRROR_MEANING[text.removeprefix("mirror: ")]
        said[name] = text
    assert said == {s.name: f"mirror: {s.mirror}" for s in BY_NAME[:PAGE]}
    assert set(said.values()) == {"mirror: available", "mirror: missing"}
    first = page.locator(".badge.mirror[title]").first
    await first.hover()  # the browser shows the title as a tooltip
    await first.focus()  # and it is reachable without a mouse
    assert await page.evaluate("document.activeElement.title") in MIRROR_MEANING.values()
    await page.click("details.legend summary")  # the same meanings, spelled out
    legend = await page.inner_text("details.legend")
    assert all(f"mirror: {k}: {v}" in legend for k, v in MIRROR_MEANING.items())
    missing = [s.name for s in DEFAULT if s.mirror == "missing"]
    await _apply(page, mirror="missing")
    assert (await page.inner_text("p.counts")).endswith(_match(len(missing)))
    badges = await page.locator("article.server .badge.mirror").all_inner_texts()
    assert badges == ["mirror: missing"] * PAGE
    assert problems == []


async def test_a_server_installs_in_vscode_from_the_mirror(site: Site, tab: Tab) -> None:
    page, problems = tab
    name = "io.github.team08/slack-00008"  # npm, three versions
    await page.goto(f"{site.base}/server/{name}")
    href = await page.get_attribute("a.vscode", "href")
    assert href is not None
    assert href.startswith("vscode:mcp/install?")  # an external protocol: read, not followed
    linked = json.loads(unquote(href.removeprefix("vscode:mcp/install?")))
    assert linked["name"] == name
    assert linked["command"] == "npx"
    assert linked["args"] == ["-y", "--registry", site.npm_mirror, "@team08/slack-8@1.2.0"]
    copy = page.locator("pre.snippet + button.copy")
    await copy.click()
    await expect(copy).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == await page.inner_text("pre.snippet")
    pasted = json.loads(copied)
    entry = {k: v for k, v in linked.items() if k not in ("name", "inputs")}
    assert pasted["servers"] == {name: entry}
    assert pasted["inputs"] == linked["inputs"]
    assert problems == []


async def test_on_a_phone_every_version_says_why_it_is_hidden(site: Site, browser: Any) -> None:
    context, page, problems = await _page(browser, phone=True)
    name = "io.github.team07/postgres-00047"  # three versions, all denied in payments
    await page.goto(f"{site.base}/views/payments/server/{name}")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    here = await page.locator("td[data-label=Here]").all_inner_texts()
    assert [text.startswith("hidden") for text in here] == [True] * 3
    rules = await page.locator("td[data-label='Deciding rules']").all_inner_texts()
    assert ["views/payments.yaml rules[0]" in text for text in rules] == [True] * 3
    edges = await page.eval_on_selector_all(
        "td[data-label=Here], td[data-label='Deciding rules']",
        "cells => cells.map(cell => [cell.getBoundingClientRect().left,"
        " cell.getBoundingClientRect().right])",
    )
    assert len(edges) == 6
    assert [left >= 0 and right <= PHONE["width"] for left, right in edges] == [True] * 6
    assert await page.locator("table.versions thead").is_hidden()  # a card per version
    await page.screenshot(path=str(SCREENSHOTS / "server-phone.png"), full_page=True)
    assert problems == []
    await context.close()


async def test_screenshots_of_thousands_of_servers(site: Site, tab: Tab) -> None:
    page, problems = tab
    answer = await page.goto(site.base + "/")
    assert (await answer.all_headers()).get("content-encoding") == "gzip"
    assert (await page.inner_text("p.counts")).startswith(f"{len(DEFAULT):,} servers")
    assert await page.locator("form.search .filters").is_visible()
    await page.screenshot(path=str(SCREENSHOTS / "catalog-thousands.png"))
    answer = await page.goto(site.base + "/views/payments/")
    assert (await answer.all_headers()).get("content-encoding") == "gzip"
    await page.fill("input[name=q]", "billing")
    await _apply(page, type="npm")
    expected = sum(s.finds("billing") and "npm" in s.types for s in PAYMENTS)
    assert (await page.inner_text("p.counts")).endswith(_match(expected, "billing"))
    assert await page.inner_text("nav a.active") == "payments"
    assert "no team07 servers" in await page.inner_text("p.view-description")
    await page.screenshot(path=str(SCREENSHOTS / "catalog-thousands-filtered.png"))
    assert problems == []
