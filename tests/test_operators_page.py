"""The operators' page does what the admin API does, in a real browser (Playwright driving
Debian's Chromium): explain a server, sync an upstream, reload the config, confirm a held mass
drop, each change confirmed in the page first; the audit log lists them by token id. The sync
chart has axes and fills its panel. Screenshots go to docs/screenshots/admin-*.png.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import expect

from gateway.app import REFRESHER
from tests.conftest import SCREENSHOTS, free_port
from tests.conftest import open_page as _page
from tests.fakes import Failure, FakeRegistry, server_entry
from tests.test_browser import _fits
from tests.web_catalog import ADMIN_TOKEN, write_web_config

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]

TOKEN_ID = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:8]
FLAKY = [server_entry(f"io.github.flaky/s{i:02d}", "1.0.0") for i in range(20)]
RETRY_ONCE = {"attempts": 1, "initial_wait": "0s", "max_wait": "0s"}


@pytest.fixture
async def site(tmp_path: Path, serve: Any) -> AsyncIterator[tuple[str, FakeRegistry, Path]]:
    """The web catalog over a file upstream; `flaky`, a registry that failed once (every sync
    a full walk, so a mass drop is held); `gone`, an optional upstream nothing answers. Yields
    (base URL, flaky, config directory)."""
    flaky = await FakeRegistry(FLAKY).start()
    config = write_web_config(
        tmp_path / "config",
        extra_upstreams=(
            {"name": "flaky", "url": flaky.url, "refresh": "1h", "full_sync": "0s",
             "retry": dict(RETRY_ONCE), "breaker": {"failures": 100}},
            {"name": "gone", "url": f"http://127.0.0.1:{free_port()}", "refresh": "1h",
             "optional": True, "retry": dict(RETRY_ONCE), "breaker": {"failures": 100}},
        ),
    )  # fmt: skip
    client = await serve(config, sync=False)  # no background sync, no config watch: the page acts
    refresher = client.server.app[REFRESHER]
    flaky.fail_next(1, Failure(status=500))
    for _ in range(3):
        await refresher.sync_all()
    yield str(client.make_url("")).rstrip("/"), flaky, config.directory
    await flaky.stop()


async def _sign_in(page: Any, base: str) -> None:
    await page.goto(base + "/admin/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#dashboard:not([hidden])")


async def _confirm(page: Any, title: str) -> None:
    """The in-page confirmation: asked, then confirmed."""
    await expect(page.locator("#confirm")).to_be_visible()
    await expect(page.locator("#confirm-title")).to_have_text(title)
    await page.click("#confirm-yes")
    await expect(page.locator("#confirm")).to_be_hidden()


async def test_an_operator_explains_a_server_from_the_search_box(
    browser: Any, site: tuple[str, FakeRegistry, Path]
) -> None:
    base, _, _ = site
    context, page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.fill("#explain-name", "io.github.acme/weather")
    await page.click("#explain button[type=submit]")
    versions = page.locator("#explain-result tbody tr")
    await expect(versions).to_have_count(4)
    heads = await page.locator("#explain-result th").all_inner_texts()
    assert heads[-2:] == ["In view default", "In view payments"]
    beta = await versions.filter(has_text="0.9.0-beta").inner_text()
    assert "hidden: denied" in beta
    assert "deciding rules: policy.yaml rules[0]" in beta
    young = await versions.filter(has_text="2.0.0").inner_text()
    assert "hidden: cooldown" in young
    assert "until 2099-01-0" in young
    assert "shown (latest)" in await versions.filter(has_text="1.1.0").inner_text()
    raw = orjson.loads(await page.locator("#explain-result details pre").text_content())
    assert raw["name"] == "io.github.acme/weather"  # the answer as it came, folded away
    assert await page.locator("#explain-result details").get_attribute("open") is None
    await page.screenshot(path=str(SCREENSHOTS / "admin-explain.png"), full_page=True)

    await page.select_option("#explain-view", "payments")  # the views come from the status
    await page.fill("#explain-version", "2.0.0")
    await page.click("#explain button[type=submit]")
    await expect(versions).to_have_count(1)
    heads = await page.locator("#explain-result th").all_inner_texts()
    assert heads[-1] == "In view payments"
    assert "In view default" not in heads

    await page.fill("#explain-name", "io.github.nobody/none")
    await page.fill("#explain-version", "")
    await page.click("#explain button[type=submit]")
    await expect(page.locator("#explain-result")).to_contain_text("No upstream offers a version")
    assert problems == []
    await context.close()


async def test_an_operator_syncs_confirms_a_held_drop_and_reads_the_audit(
    browser: Any, site: tuple[str, FakeRegistry, Path]
) -> None:
    base, flaky, _ = site
    context, page, problems = await _page(browser)
    await _sign_in(page, base)
    row = page.locator("#upstreams tr", has_text="flaky")
    result = page.locator("#action-result")
    asked = len(flaky.requests)
    await row.locator("button.sync").click()
    await expect(page.locator("#confirm")).to_be_visible()
    await page.click("#confirm-no")  # cancelled: nothing is done
    await expect(page.locator("#confirm")).to_be_hidden()
    assert len(flaky.requests) == asked
    assert await result.is_hidden()

    flaky.entries = dict(list(flaky.entries.items())[:1])  # 95 % gone: the gateway holds it
    await row.locator("button.sync").click()
    await expect(page.locator("#confirm-title")).to_have_text("Sync flaky now?")
    await page.screenshot(path=str(SCREENSHOTS / "admin-confirm.png"))
    await _confirm(page, "Sync flaky now?")
    await expect(result).to_contain_text("Synced flaky: a mass drop is held (20 → 1)")
    await expect(result).to_have_class(re.compile(r"result-held"))
    confirm = row.locator("button.confirm-drop")
    await expect(confirm).to_have_text("Confirm drop (20 → 1)")
    await confirm.click()
    await _confirm(page, "Apply the held drop of flaky?")
    await expect(result).to_contain_text("Applied the held drop of flaky: 1 entries now")
    await expect(row.locator("button.confirm-drop")).to_have_count(0)
    await expect(row.locator("td").nth(5)).to_have_text("1")

    gone = page.locator("#upstreams tr", has_text="gone")
    await gone.locator("button.sync").click()
    await _confirm(page, "Sync gone now?")
    await expect(result).to_have_class(re.compile(r"result-failed"))
    await expect(page.locator("#action-title")).to_have_text("The sync of gone failed")
    error = await gone.locator("td.last-error").inner_text()
    assert error
    await expect(page.locator("#action-lines li")).to_have_text(error)

    audit = page.locator("#audit tr")
    await expect(audit).to_have_count(3)
    rows = [text.split("\t") for text in await audit.all_inner_texts()]  # newest first
    assert [row[1:5] for row in rows] == [
        [f"token {TOKEN_ID}", "sync", "gone", "failed"],
        [f"token {TOKEN_ID}", "confirm-drop", "flaky", "ok"],
        [f"token {TOKEN_ID}", "sync", "flaky", "ok"],
    ]
    assert rows[1][5] == "applied: 1 entries"
    assert "mass drop is held" in rows[2][5]
    assert ADMIN_TOKEN not in await page.content()
    await page.screenshot(path=str(SCREENSHOTS / "admin-actions.png"), full_page=True)
    assert problems == []
    await context.close()


async def test_a_reload_with_a_broken_config_shows_each_mistake_on_its_line(
    browser: Any, site: tuple[str, FakeRegistry, Path]
) -> None:
    base, _, directory = site
    policy = directory / "policy.yaml"
    good = policy.read_text(encoding="utf-8")
    policy.write_text("default: allw\nmin_age: 72\n", encoding="utf-8")
    context, page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.click("#reload")
    await _confirm(page, "Reload the config?")
    result = page.locator("#action-result")
    await expect(result).to_have_class(re.compile(r"result-failed"))
    await expect(page.locator("#action-title")).to_have_text(
        "config refused, the previous one keeps serving (HTTP 400)"
    )
    mistakes = await page.locator("#action-lines li").all_inner_texts()
    assert len(mistakes) == 2
    assert any(line.startswith("policy.yaml: default:") for line in mistakes)
    assert any("min_age" in line for line in mistakes)
    await expect(page.locator("#config-alert")).to_be_visible()  # the status says so too
    await page.screenshot(path=str(SCREENSHOTS / "admin-reload-refused.png"))

    policy.write_text(good, encoding="utf-8")
    await page.click("#reload")
    await _confirm(page, "Reload the config?")
    await expect(page.locator("#action-title")).to_have_text("The config was reloaded")
    await expect(page.locator("#action-lines li")).to_have_text("Views: default, payments")
    await expect(page.locator("#config-alert")).to_be_hidden()
    rows = [text.split("\t") for text in await page.locator("#audit tr").all_inner_texts()]
    assert [row[1:5] for row in rows] == [
        [f"token {TOKEN_ID}", "reload", "-", "ok"],
        [f"token {TOKEN_ID}", "reload", "-", "refused"],
    ]
    assert "policy.yaml: default:" in rows[1][5]
    # The browser reports the 400 answer itself; nothing else may go wrong.
    assert [p for p in problems if "status of 400" not in p] == []
    await context.close()


async def test_the_sync_chart_has_axes_and_fills_its_panel_and_errors_are_readable(
    browser: Any, site: tuple[str, FakeRegistry, Path]
) -> None:
    base, _, _ = site
    context, page, problems = await _page(browser)  # 1280 pixels wide
    await _sign_in(page, base)
    charts = page.locator("#charts svg")
    await expect(charts).to_have_count(3)
    panel = await page.locator("#charts").bounding_box()
    for index in range(3):
        box = await charts.nth(index).bounding_box()
        assert abs(box["width"] - panel["width"]) <= 1  # as wide as its panel
    flaky = page.locator("#charts figure", has_text="flaky").locator("svg")
    durations = await flaky.locator("text.y-tick").all_text_contents()
    assert len(durations) >= 3
    assert durations[0] == "0 ms"
    assert all(re.fullmatch(r"[0-9.]+ (ms|s)", tick) for tick in durations), durations
    times = await flaky.locator("text.x-tick").all_text_contents()
    assert 8 <= len(times) <= 9  # every 3 hours of the last 24
    assert all(re.fullmatch(r"[0-2][0-9]:00", tick) for tick in times), times
    assert await flaky.locator("text.axis-label").all_text_contents() == [
        "sync duration",
        "time of the sync (the last 24 hours, local time)",
    ]
    assert await flaky.locator("line.axis").count() == 2
    assert await flaky.locator("rect.sync-failed").count() == 1

    error = page.locator("#upstreams tr", has_text="gone").locator("td.last-error")
    assert "Cannot connect" in await error.inner_text()
    actions = page.locator("#upstreams tr", has_text="gone").locator("td.actions")
    assert await actions.evaluate("cell => cell.getBoundingClientRect().right <= innerWidth")
    box = await error.bounding_box()
    assert box["width"] >= 250  # a readable column, not a sliver
    assert await error.evaluate("cell => cell.scrollWidth <= cell.clientWidth")  # wrapped, whole
    assert await _fits(page)

    drawn = await charts.first.get_attribute("width")
    await page.set_viewport_size({"width": 900, "height": 900})
    measure = "[document.querySelector('#charts svg').getAttribute('width'), "
    measure += "String(document.querySelector('#charts').clientWidth)]"
    for _ in range(100):  # drawn again to the narrower panel
        width, panel_width = await page.evaluate(measure)
        if width == panel_width != drawn:
            break
        await asyncio.sleep(0.05)
    assert width == panel_width != drawn
    assert problems == []
    await context.close()
