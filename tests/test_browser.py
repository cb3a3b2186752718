"""The web pages in a real browser: Playwright driving Debian's Chromium (no browser download).

A developer searches the catalog, opens a server, copies an install command; a description
containing `<script>` stays text; an operator signs in to /admin/ and sees upstream health and
the sync chart; every page fits a phone. Screenshots of the pages are written to
docs/screenshots/ (the README links them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from gateway.app import REFRESHER
from tests.conftest import SCREENSHOTS
from tests.conftest import open_page as _page
from tests.fakes import Failure, FakeRegistry, server_entry
from tests.web_catalog import ADMIN_TOKEN, HOSTILE, NPM_MIRROR, write_web_config

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
async def site(tmp_path: Path, serve: Any) -> AsyncIterator[tuple[str, Any]]:
    """The web catalog over a file upstream, plus a registry upstream that fails now and then
    (so the operators' chart has failures to draw). Yields (base URL, refresher)."""
    flaky = await FakeRegistry([server_entry("io.github.flaky/one", "1.0.0")]).start()
    config = write_web_config(
        tmp_path / "config",
        extra_upstreams=(
            {"name": "flaky", "url": flaky.url, "refresh": "1h",
             "retry": {"attempts": 1, "initial_wait": "0s", "max_wait": "0s"},
             "breaker": {"failures": 100}},
        ),
    )  # fmt: skip
    client = await serve(config)
    refresher = client.server.app[REFRESHER]
    flaky.fail_next(2, Failure(status=500))
    for _ in range(4):  # two failures, then successes
        await refresher.sync_all()
    yield str(client.make_url("")).rstrip("/"), refresher
    await flaky.stop()


async def _fits(page: Any) -> bool:
    width: bool = await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"
    )
    return width


async def test_a_developer_searches_opens_a_server_and_copies_its_install_command(
    browser: Any, site: tuple[str, Any]
) -> None:
    base, _ = site
    context, page, problems = await _page(browser)
    await page.goto(base + "/")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "catalog.png"))
    await page.fill("input[name=q]", "weather")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**/?q=weather")
    cards = page.locator("article.server")
    assert await cards.count() == 1
    assert await page.locator("article.server .icon").inner_text() == "A"  # no third-party icon
    await page.click("text=Acme Weather")
    await page.wait_for_url("**/server/io.github.acme/weather")
    versions = page.locator("tbody tr")
    assert await versions.count() == 4
    held = page.locator("tr", has_text="2.0.0")
    assert "hidden: cooldown" in await held.inner_text()
    denied = page.locator("tr", has_text="0.9.0-beta")
    assert "policy.yaml rules[0]" in await denied.inner_text()
    await page.screenshot(path=str(SCREENSHOTS / "server.png"), full_page=True)
    copy = page.locator("ul.install button.copy").first
    await copy.click()
    await expect(copy).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == f"npx -y --registry {NPM_MIRROR} @acme/weather@1.1.0"
    assert problems == []  # no script error, no CSP violation
    await context.close()


async def test_a_description_with_script_renders_as_text(
    browser: Any, site: tuple[str, Any]
) -> None:
    base, _ = site
    context, page, problems = await _page(browser)
    for path in ("/?q=mallory", "/server/io.github.evil/mallory"):
        await page.goto(base + path)
        description = page.locator("p.description").first
        assert await description.text_content() == HOSTILE
        injected = await page.evaluate(
            "[document.querySelectorAll('script:not([src])').length,"
            " document.querySelectorAll('img[src=\"x\"]').length]"
        )
        assert injected == [0, 0]
    assert problems == []  # no alert() ran
    await context.close()


async def test_an_operator_signs_in_and_sees_upstream_health(
    browser: Any, site: tuple[str, Any]
) -> None:
    base, _ = site
    context, page, problems = await _page(browser)
    await page.goto(base + "/admin/")
    assert await page.locator("#dashboard").is_hidden()
    await page.fill("#token", "wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in await page.inner_text("#login-error")
    problems.clear()  # the browser logs the 401 itself
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#dashboard:not([hidden])")
    upstreams = page.locator("#upstreams tr")
    assert await upstreams.count() == 2
    flaky = await page.locator("#upstreams tr", has_text="flaky").inner_text()
    assert "closed" in flaky
    views = await page.locator("#views").inner_text()
    assert "default" in views
    assert "payments" in views
    assert "denied" in views  # entries hidden by policy, by reason
    assert await page.locator("#charts svg").count() == 2
    assert await page.locator("#charts rect.sync-failed").count() == 2
    assert await page.locator("#charts rect.sync-ok").count() >= 3
    await page.screenshot(path=str(SCREENSHOTS / "admin.png"), full_page=True)
    # The token lives in this tab's session: a reload keeps it, a new session does not.
    await page.reload()
    await page.wait_for_selector("#dashboard:not([hidden])")
    other, other_page, _ = await _page(browser)
    await other_page.goto(base + "/admin/")
    assert await other_page.locator("#dashboard").is_hidden()
    await other.close()
    await page.click("#logout")
    assert await page.locator("#login").is_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    assert [p for p in problems if "401" not in p] == []
    await context.close()


async def test_the_pages_fit_a_phone(browser: Any, site: tuple[str, Any]) -> None:
    base, _ = site
    context, page, problems = await _page(browser, phone=True)
    for path in ("/", "/server/io.github.acme/weather", "/views/payments/", "/admin/"):
        await page.goto(base + path)
        assert await _fits(page), path
    await page.goto(base + "/")
    await page.screenshot(path=str(SCREENSHOTS / "catalog-phone.png"))
    await page.goto(base + "/admin/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#dashboard:not([hidden])")
    assert await _fits(page)
    assert problems == []
    await context.close()


async def test_a_refused_config_is_an_alert_with_each_mistake_on_its_line(
    browser: Any, site: tuple[str, Any], tmp_path: Path
) -> None:
    import aiohttp

    base, _ = site
    (tmp_path / "config" / "policy.yaml").write_text(
        "default: allw\nmin_age: 72\n", encoding="utf-8"
    )
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with session.post(f"{base}/admin/reload", headers=headers) as answer:
            assert answer.status == 400  # refused; the config before it is served
    context, page, problems = await _page(browser)
    await page.goto(base + "/admin/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#config-alert:not([hidden])")
    mistakes = await page.locator("#config-issues li").all_inner_texts()
    assert len(mistakes) == 2
    assert any(line.startswith("policy.yaml: default:") for line in mistakes)
    assert any("min_age" in line for line in mistakes)
    await page.screenshot(path=str(SCREENSHOTS / "admin-refused-config.png"))
    assert problems == []
    await context.close()
