"""Server icons in a real browser: with `icons` on, a catalog card shows the server's icon,
served by the gateway from `/_icons` (the browser contacts nothing but the gateway); with it
off, a placeholder and no image.

The catalog's icon is `https://acme.example.com/icon.png`. The gateway reaches it on a loopback
HTTPS host through the fetcher's test seams (tests/icon_host.py): a resolver that answers
acme.example.com with 127.0.0.1 and the host's port, a TLS context trusting the host's own CA,
and loopback permitted. The config is the one an operator writes: an https prefix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import ICONS, REFRESHER, create_app
from gateway.icons import Icons
from tests.conftest import GatewayServer
from tests.conftest import open_page as _page
from tests.icon_host import HTML, IconHost, MapResolver, Served, png
from tests.web_catalog import write_web_config

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]

ICON = "https://acme.example.com/icon.png"  # what tests/web_catalog.py's servers name


@pytest.fixture
async def icon_host() -> AsyncIterator[IconHost]:
    host = await IconHost().start()
    host.files["/icon.png"] = Served(png(32, 32))
    yield host
    await host.stop()


async def _site(aiohttp_client: Any, directory: Path, host: IconHost, **gateway: Any) -> str:
    """The web catalog, its icons fetched from the loopback host; its base URL."""
    app = create_app(write_web_config(directory, **gateway))
    app[ICONS] = Icons(
        permitted=lambda address: address == ipaddress.ip_address("127.0.0.1"),
        resolver=MapResolver({"acme.example.com": ("127.0.0.1", host.port)}),
        tls=host.client_tls(),
    )
    client = await aiohttp_client(GatewayServer(app))
    await app[REFRESHER].wait_ready()
    return str(client.make_url("")).rstrip("/")


async def test_with_icons_on_a_card_shows_the_icon_served_by_the_gateway(
    browser: Any, aiohttp_client: Any, tmp_path: Path, icon_host: IconHost
) -> None:
    base = await _site(
        aiohttp_client,
        tmp_path / "config",
        icon_host,
        icons={"allow": ["https://acme.example.com/"]},
    )
    context, page, problems = await _page(browser)
    await page.goto(base + "/?q=weather")
    image = page.locator("article.server img")
    assert await image.count() == 1
    src = await image.get_attribute("src")
    assert src is not None
    assert src.startswith("/_icons?")
    width = await image.evaluate("img => img.decode().then(() => img.naturalWidth)")
    assert width == 32
    assert icon_host.hits["/icon.png"] == 1  # fetched by the gateway, once
    await page.goto(base + "/?q=mallory")  # its icon is javascript:...: never an image
    assert await page.locator("article.server img").count() == 0
    assert problems == []  # nothing left loopback, no CSP violation, no script error
    await context.close()


async def test_an_icon_that_cannot_be_had_shows_the_placeholder_not_a_broken_image(
    browser: Any, aiohttp_client: Any, tmp_path: Path, icon_host: IconHost
) -> None:
    icon_host.files["/icon.png"] = Served(HTML, "image/png")  # a page, labelled as an image
    allow = {"allow": ["https://acme.example.com/"]}
    base = await _site(aiohttp_client, tmp_path / "config", icon_host, icons=allow)
    context, page, problems = await _page(browser)
    failed: list[int] = []
    page.on("response", lambda r: failed.append(r.status) if "/_icons?" in r.url else None)
    await page.goto(base + "/?q=weather")
    image = page.locator("article.server img")
    assert await image.count() == 1
    width = await image.evaluate("img => img.decode().then(() => img.naturalWidth)")
    assert width == 32  # the gateway's placeholder, decoded: no broken-image icon
    assert failed == [404]
    assert [p for p in problems if "404" not in p] == []  # the console notes the 404 only
    await context.close()


async def test_with_icons_off_a_card_shows_a_placeholder_and_no_image(
    browser: Any, aiohttp_client: Any, tmp_path: Path, icon_host: IconHost
) -> None:
    base = await _site(aiohttp_client, tmp_path / "config", icon_host)
    context, page, problems = await _page(browser)
    await page.goto(base + "/?q=weather")
    card = page.locator("article.server")
    assert await card.count() == 1
    assert await card.locator("img").count() == 0
    assert await card.locator(".icon").inner_text() == "A"  # the title's first letter
    assert icon_host.connections == 0
    assert problems == []
    await context.close()
