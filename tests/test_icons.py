"""Server icons served by the gateway (`/_icons`): only allowed https URLs, only global
addresses, no redirects, bounded in time and bytes, images by their bytes, kept in memory.

The icon host is a real HTTPS server on loopback (tests/icon_host.py). The fetcher refuses
loopback by design, so most tests permit 127.0.0.1 explicitly; the tests of the address check
use the default and prove that no connection reached the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import ICONS, create_app
from gateway.config import GatewaySettings
from gateway.errors import ConfigError
from gateway.icon_config import IconSettings, allowed, icon_src, parse_icon_url
from gateway.icons import PLACEHOLDER, Icon, Icons, Refusal, is_public
from gateway.routes import Route, resolve
from tests.conftest import GatewayServer, file_upstream, write_config
from tests.fakes import server_entry
from tests.icon_host import HTML, JPEG, SVG, WEBP, IconHost, MapResolver, Served, png

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def loopback_only(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address == LOOPBACK


@pytest.fixture
async def host() -> AsyncIterator[IconHost]:
    started = await IconHost().start()
    yield started
    await started.stop()


@pytest.fixture
async def make_icons(host: IconHost) -> AsyncIterator[Callable[..., Icons]]:
    """Fetchers resolving the test names to the host; closed at the end of the test."""
    made: list[Icons] = []

    def make(permitted: Callable[..., bool] = loopback_only, **names: str) -> Icons:
        mapped: dict[str, tuple[str, int | None]] = {
            "icons.test": ("127.0.0.1", None),
            "other.test": ("127.0.0.1", None),
        }
        mapped.update({name.replace("_", "."): (address, None) for name, address in names.items()})
        icons = Icons(permitted=permitted, resolver=MapResolver(mapped), tls=host.client_tls())
        made.append(icons)
        return icons

    yield make
    for icons in made:
        await icons.close()


def settings(host: IconHost, **values: Any) -> IconSettings:
    allow = values.pop("allow", [host.url("/icons/"), host.url("/icons/", "other.test")])
    return IconSettings.model_validate({"allow": allow, **values})


async def fetch(icons: Icons, host: IconHost, path: str, **values: Any) -> Icon | Refusal:
    given = settings(host, **values)
    return await icons.fetch(allowed(host.url(path), given.prefixes()), given)


async def gateway(aiohttp_client: Any, directory: Path, icons: Icons | None, **values: Any) -> Any:
    """A gateway app on loopback (no sync needed: icons do not wait for a catalog)."""
    upstream = file_upstream(directory / "data", "demo", [server_entry("io.github.a/b", "1.0.0")])
    document: dict[str, Any] = {"access_log": False, "upstreams": [upstream]}
    if values:
        document["icons"] = values
    app = create_app(write_config(directory / "config", document), sync=False)
    if icons is not None:
        app[ICONS] = icons
    return await aiohttp_client(GatewayServer(app))


# -- what is served ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "labelled", "served"),
    [
        (png(), "image/png", "image/png"),
        (JPEG, "image/png", "image/jpeg"),  # the bytes decide, not the label
        (WEBP, "application/octet-stream", "image/webp"),
    ],
)
async def test_an_image_is_served_with_its_real_type_and_sandboxed(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any,
    body: bytes, labelled: str, served: str,
) -> None:  # fmt: skip
    host.files["/icons/a"] = Served(body, labelled)
    client = await gateway(aiohttp_client, tmp_path, make_icons(), allow=[host.url("/icons/")])
    response = await client.get("/_icons", params={"src": host.url("/icons/a")})
    assert response.status == 200
    assert await response.read() == body
    assert response.headers["Content-Type"] == served
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response.headers["Cache-Control"] == "public, max-age=86400"
    seen = host.seen[0]
    assert "Cookie" not in seen
    assert "Authorization" not in seen
    assert seen["Accept-Encoding"] == "identity"


async def test_a_cookie_a_host_sets_is_never_sent_back(host: IconHost, make_icons: Any) -> None:
    icons = make_icons()
    host.files["/icons/a.png"] = Served(png(), headers={"Set-Cookie": "session=s3cret; Path=/"})
    host.files["/icons/b.png"] = Served(png())
    for path in ("/icons/a.png", "/icons/b.png"):
        assert isinstance(await fetch(icons, host, path), Icon)
    assert [headers.get("Cookie") for headers in host.seen] == [None, None]


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (Served(SVG, "image/svg+xml"), "SVG is never served"),
        (Served(HTML, "image/png"), "not a PNG, JPEG or WebP"),  # HTML in disguise
        (Served(b"GIF89a" + b"\x00" * 32, "image/gif"), "not a PNG, JPEG or WebP"),
        (Served(png(), status=500), "answered 500"),
        (Served(png(), headers={"Content-Encoding": "gzip"}), "encoded"),
    ],
)
async def test_anything_but_a_plain_image_is_refused(
    host: IconHost, make_icons: Any, served: Served, reason: str
) -> None:
    host.files["/icons/a.png"] = served
    fetched = await fetch(make_icons(), host, "/icons/a.png")
    assert isinstance(fetched, Refusal)
    assert reason in fetched.reason


async def test_a_failure_answers_the_placeholder_and_is_not_fetched_again(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.svg"] = Served(SVG, "image/svg+xml")
    client = await gateway(aiohttp_client, tmp_path, make_icons(), allow=[host.url("/icons/")])
    for _ in range(3):
        response = await client.get("/_icons", params={"src": host.url("/icons/a.svg")})
        assert response.status == 404
        assert await response.read() == PLACEHOLDER  # ours, never the host's SVG
        assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert response.headers["Cache-Control"] == "public, max-age=300"
    assert host.hits["/icons/a.svg"] == 1  # failures are remembered


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_icon_over_max_bytes_is_refused_without_reading_on(
    host: IconHost, make_icons: Any, streamed: bool
) -> None:
    body = png(padding=8 * 1024 * 1024)
    host.files["/icons/big.png"] = Served(body, drip=0.001 if streamed else 0.0)
    started = time.monotonic()
    fetched = await fetch(make_icons(), host, "/icons/big.png", max_bytes=2048, timeout="20s")
    assert isinstance(fetched, Refusal)
    assert "max_bytes" in fetched.reason
    assert time.monotonic() - started < 5  # stopped past 2048 bytes, long before the end


async def test_a_redirect_is_a_failure_and_its_target_is_never_asked(
    host: IconHost, make_icons: Any
) -> None:
    target = host.url("/icons/target.png", "other.test")  # allowed too: still not followed
    host.files["/icons/target.png"] = Served(png())
    host.files["/icons/moved.png"] = Served(b"", status=302, headers={"Location": target})
    fetched = await fetch(make_icons(), host, "/icons/moved.png")
    assert isinstance(fetched, Refusal)
    assert fetched.reason == "answered 302"
    assert host.hits["/icons/target.png"] == 0


@pytest.mark.parametrize(("served", "limit"), [(Served(png(), delay=5), "300ms"),
                                               (Served(png(padding=2000), drip=0.2), "500ms")])  # fmt: skip
async def test_a_slow_host_is_bounded_by_the_timeout(
    host: IconHost, make_icons: Any, served: Served, limit: str
) -> None:
    host.files["/icons/slow.png"] = served
    started = time.monotonic()
    fetched = await fetch(make_icons(), host, "/icons/slow.png", timeout=limit)
    assert isinstance(fetched, Refusal)
    assert "Timeout" in fetched.reason
    assert time.monotonic() - started < 2


# -- where it may come from -------------------------------------------------------------------


async def test_loopback_is_refused_by_default_before_any_connection(
    host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.png"] = Served(png())
    default = make_icons(permitted=is_public)
    named = await fetch(default, host, "/icons/a.png")  # icons.test resolves to 127.0.0.1
    literal = host.url("/icons/a.png", "127.0.0.1")
    given = settings(host, allow=[host.url("/icons/", "127.0.0.1")])
    literally = await default.fetch(allowed(literal, given.prefixes()), given)
    assert isinstance(named, Refusal)
    assert "does not connect to" in named.reason
    assert isinstance(literally, Refusal)
    assert host.connections == 0
    assert isinstance(await fetch(make_icons(), host, "/icons/a.png"), Icon)  # when permitted
    assert host.connections == 1


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "169.254.169.254", "192.168.1.1", "::1", "fd00::1", "0.0.0.0"]
)
async def test_a_name_resolving_to_a_private_address_is_refused(
    host: IconHost, make_icons: Any, address: str
) -> None:
    icons = make_icons(permitted=is_public, rebind_test=address)
    given = settings(host, allow=["https://rebind.test/"])
    fetched = await icons.fetch(allowed("https://rebind.test/a.png", given.prefixes()), given)
    assert isinstance(fetched, Refusal)
    assert "does not connect to" in fetched.reason


@pytest.mark.parametrize(
    ("address", "public"),
    [("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False),
     ("10.1.2.3", False), ("172.16.0.1", False), ("100.64.0.1", False), ("169.254.169.254", False),
     ("224.0.0.1", False), ("239.255.255.250", False), ("240.0.0.1", False),
     ("255.255.255.255", False), ("0.0.0.0", False), ("192.0.2.1", False), ("::", False),
     ("::1", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
     ("::ffff:127.0.0.1", False), ("64:ff9b::7f00:1", False), ("64:ff9b::808:808", True),
     ("2002:7f00:1::", False), ("fec0::1", False)],
)  # fmt: skip
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


PREFIX = "https://icons.test/icons"


@pytest.mark.parametrize(
    "src",
    [
        "https://icons.test/iconsevil/a.png", "https://icons.test/icons/../secret.png",
        "https://icons.test/icons/%2e%2e/secret.png", "https://icons.test/icons/%2E./secret.png",
        "https://icons.test/icons/..%2fsecret.png", "https://icons.test/icons/%252e%252e/x.png",
        "https://icons.test/icons/..;/secret.png", "https://icons.test/icons/.../x.png",
        "https://icons.test/icons/..%5csecret.png", "https://icons.test/icons\\..\\secret.png",
        "http://icons.test/icons/a.png", "https://icons.test:8443/icons/a.png",
        "https://user@icons.test/icons/a.png", "https://icons.test.evil.com/icons/a.png",
        "https://evil.com#@icons.test/icons/a.png", "https://icons.test/icons/a%00.png",
        "https://icons.test/icons/ a.png", "https://icons.tést/icons/a.png",
    ],
)  # fmt: skip
def test_a_url_outside_the_prefix_is_refused(src: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is the user's, per case)
        allowed(src, (PREFIX,))


@pytest.mark.parametrize(
    ("src", "canonical"),
    [
        ("https://ICONS.test/icons/a.png", "https://icons.test/icons/a.png"),
        ("https://icons.test.:443/icons/./a.png", "https://icons.test/icons/a.png"),
        ("https://icons.test/icons/x/../a.png", "https://icons.test/icons/a.png"),
        ("https://icons.test/icons/%61.png?v=4#top", "https://icons.test/icons/a.png?v=4"),
        ("https://icons.test/icons", "https://icons.test/icons"),
    ],
)
def test_a_url_under_the_prefix_is_fetched_in_canonical_form(src: str, canonical: str) -> None:
    assert allowed(src, (PREFIX,)).text == canonical


_TOKENS = ["a", "icons", "secret", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%2f",
           "%2F", "%5c", "%5C", "%25", "%252e", "%252e%252e", "..;", ";x", "...", "%00", "",
           "\\", "%", "%c0%ae", "%ef%bc%8e", "a%2f..%2f..", "..%00", "%20..", "x.png"]  # fmt: skip


def _lenient(path: str) -> str:
    """What a careless server might make of a path: decoded again and again, backslashes as
    separators, parameters dropped, dot segments resolved."""
    for _ in range(3):
        path = unquote(path)
    path = path.replace("\\", "/")
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    return posixpath.normpath(path)


@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=8))
def test_no_encoding_of_a_path_escapes_the_prefix(tokens: list[str]) -> None:
    src = "https://icons.test/icons/" + "/".join(tokens)
    try:
        url = allowed(src, (PREFIX + "/",))
    except ValueError:
        return
    assert url.segments[0] == "icons"
    path = url.text.removeprefix("https://icons.test")
    assert _lenient(path) == "/icons" or _lenient(path).startswith("/icons/")
    assert parse_icon_url(url.text) == url  # the canonical form reads back as itself


# -- the cache --------------------------------------------------------------------------------


async def test_a_kept_icon_is_served_without_asking_the_host_again(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.png"] = Served(png())
    client = await gateway(aiohttp_client, tmp_path, make_icons(), allow=[host.url("/icons/")])
    bodies = []
    for _ in range(2):
        response = await client.get("/_icons", params={"src": host.url("/icons/a.png")})
        assert response.status == 200
        bodies.append(await response.read())
    assert bodies == [png(), png()]
    assert host.hits["/icons/a.png"] == 1


async def test_the_cache_is_bounded_by_bytes(host: IconHost, make_icons: Any) -> None:
    icons = make_icons()
    for name in "abc":
        host.files[f"/icons/{name}.png"] = Served(png(padding=2000))
    bounds = {"max_bytes": 4096, "cache_bytes": 5500}  # two icons of about 2.3 kB with URLs
    for name in "abc":
        assert isinstance(await fetch(icons, host, f"/icons/{name}.png", **bounds), Icon)
    for name in "ca":
        assert isinstance(await fetch(icons, host, f"/icons/{name}.png", **bounds), Icon)
    assert host.hits == {"/icons/a.png": 2, "/icons/b.png": 1, "/icons/c.png": 1}


async def test_concurrent_requests_for_one_icon_share_one_fetch(
    host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.png"] = Served(png(), delay=0.3)
    icons = make_icons()
    fetched = await asyncio.gather(*(fetch(icons, host, "/icons/a.png") for _ in range(10)))
    assert all(isinstance(one, Icon) for one in fetched)
    assert host.hits["/icons/a.png"] == 1


async def test_a_kept_icon_is_not_served_once_its_prefix_is_no_longer_allowed(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.png"] = Served(png())
    icons = make_icons()
    assert isinstance(await fetch(icons, host, "/icons/a.png"), Icon)
    client = await gateway(aiohttp_client, tmp_path, icons, allow=[host.url("/other/")])
    response = await client.get("/_icons", params={"src": host.url("/icons/a.png")})
    assert response.status == 422


# -- the endpoint and the config --------------------------------------------------------------


async def test_icons_are_off_by_default(
    aiohttp_client: Any, tmp_path: Path, host: IconHost
) -> None:
    plain = GatewaySettings.model_validate({"upstreams": [{"name": "a", "url": "https://r.x"}]})
    assert plain.icons.allow == []
    host.files["/icons/a.png"] = Served(png())
    client = await gateway(aiohttp_client, tmp_path, None)
    response = await client.get("/_icons", params={"src": host.url("/icons/a.png")})
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert "icons are off" in (await response.json())["detail"]
    assert host.connections == 0


@pytest.mark.parametrize(
    "query",
    [{}, {"src": "https://icons.test/elsewhere/a.png"}, {"src": "javascript:alert(1)"},
     [("src", "https://icons.test/icons/a.png"), ("src", "https://icons.test/icons/b.png")]],
)  # fmt: skip
async def test_a_src_that_is_not_allowed_is_a_problem_and_nothing_is_fetched(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any, query: Any
) -> None:
    allow = ["https://icons.test/icons/"]
    client = await gateway(aiohttp_client, tmp_path, make_icons(), allow=allow)
    response = await client.get("/_icons", params=query)
    assert response.status == 422
    problem = await response.json()
    assert problem["errors"][0]["location"] == "query.src"
    assert host.connections == 0


def test_the_route_and_its_metrics_label() -> None:
    assert resolve("GET", "/_icons") == Route("default", "icon", area="page")
    assert resolve("GET", "/_icons").label == "icon"


@pytest.mark.parametrize(
    ("icons", "key", "message"),
    [
        ({"allow": ["http://cdn.example.com/"]}, "icons.allow[0]", "https"),
        ({"allow": ["https://u:p@cdn.example.com/"]}, "icons.allow[0]", "user name"),
        ({"allow": ["https://a.com/", "https://a.com/x?y=1"]}, "icons.allow[1]", "query"),
        ({"allow": ["https://a.com/x#f"]}, "icons.allow[0]", "fragment"),
        ({"allow": ["https:///x/"]}, "icons.allow[0]", "no host"),
        ({"allow": ["https://a.com/x/../y/"]}, "icons.allow[0]", ". or .."),
        ({"timeout": "0s"}, "icons.timeout", "greater than 0"),
        ({"max_bytes": 10}, "icons.max_bytes", "greater than or equal"),
        ({"max_bytes": 65536, "cache_bytes": 4096}, "icons", "cache_bytes"),
        ({"allowed": []}, "icons.allowed", "unknown key"),
    ],
)
def test_a_config_mistake_names_its_key(
    tmp_path: Path, icons: dict[str, Any], key: str, message: str
) -> None:
    document = {"upstreams": [{"name": "a", "url": "https://r.example"}], "icons": icons}
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, document)
    issue = refused.value.issues[0]
    assert (issue.file, issue.key) == ("gateway.yaml", key)
    assert message in issue.message


def test_icon_src_names_the_first_servable_icon() -> None:
    allow = ("https://cdn.example.com/icons/",)
    server = {"icons": [
        {"src": "https://cdn.example.com/icons/a.svg", "mimeType": "image/svg+xml"},
        {"src": "http://cdn.example.com/icons/b.png"},
        {"src": "https://cdn.example.com/other/c.png"},
        {"src": "javascript:alert(1)"}, "not an icon",
        {"src": "https://CDN.example.com/icons/d e.png"},
        {"src": "https://cdn.example.com/icons/%64.png", "mimeType": "image/png", "sizes": ["48x48"]},
    ]}  # fmt: skip
    assert icon_src(server, allow) == "/_icons?src=https%3A%2F%2Fcdn.example.com%2Ficons%2Fd.png"
    assert icon_src(server, ()) is None
    assert icon_src({"icons": server["icons"][:4]}, allow) is None
    assert icon_src({"icons": "https://cdn.example.com/icons/a.png"}, allow) is None
    assert icon_src({}, allow) is None


async def test_the_app_closes_the_fetchers_session_on_shutdown(
    aiohttp_client: Any, tmp_path: Path, host: IconHost, make_icons: Any
) -> None:
    host.files["/icons/a.png"] = Served(png())
    icons = make_icons()
    client = await gateway(aiohttp_client, tmp_path, icons, allow=[host.url("/icons/")])
    assert (await client.get("/_icons", params={"src": host.url("/icons/a.png")})).status == 200
    await client.close()
    assert icons._session is None
