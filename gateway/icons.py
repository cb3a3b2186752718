"""Server icons served by the gateway itself (`GET /_icons?src=...`), when `icons.allow` names
prefixes: what the pages link (`icon_src`), the fetcher (`Icons`) and its answer (`answer`).

An icon URL comes from a stranger's server.json, so the fetch is bounded everywhere:
- only a URL under an allowed prefix, compared parsed and requested in canonical form
  (`icon_config`); no redirect is followed (a 3xx is a failure);
- only to global addresses: a name's addresses are checked after resolution, by the resolver
  the connection uses, so the address checked is the address connected to (a DNS answer that
  changes in between cannot swap it); a literal address is checked before connecting;
- no cookies, no credentials, no proxy; bounded in time (`timeout`) and bytes (`max_bytes`);
- an image is what its first bytes say, PNG, JPEG or WebP, whatever its Content-Type: SVG
  (which can carry script) and everything else is refused.
Icons are kept in memory, bounded in bytes; a failure is remembered for `failure_ttl`, so a bad
host is not asked again on every page view, and the requests for one URL share one fetch.
A failure answers 404 with a neutral placeholder image, so a page never shows a broken image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cachetools import TTLCache

from gateway.errors import FieldError, NotFound, ValidationFailed
from gateway.icon_config import TYPES, IconSettings, IconUrl, allowed

log = structlog.get_logger("gateway.icons")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Permitted = Callable[[Address], bool]
MAX_PENDING = 64  # distinct URLs being fetched at once; more are refused, not queued
FAILURE_BYTES = 1024 * 1024  # memory for remembered failures
_ENTRY_BYTES = 256  # what one kept entry costs besides its URL and body
CSP = "default-src 'none'; sandbox"
PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="6" fill="#d8dee4"/></svg>'
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: Address) -> bool:
    """Whether an address is one the fetcher may connect to: globally routable unicast,
    an IPv4 address embedded in IPv6 (mapped, 6to4, NAT64) judged as itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:  # a translator reaches the IPv4 address it embeds
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not is_public(embedded):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def image_type(body: bytes) -> str | None:
    """The image type the first bytes say, among the ones served; None for anything else."""
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if body.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(body) >= 12 and body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class Icon:
    """A fetched image, as served."""

    src: str
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A fetch that gave no icon, and why (for the log; the client sees a placeholder)."""

    src: str
    reason: str


Fetched = Icon | Refusal


def _size(entry: Fetched) -> int:
    body = entry.body if isinstance(entry, Icon) else entry.reason.encode()
    return len(body) + len(entry.src) + _ENTRY_BYTES


class _Guard(AbstractResolver):
    """A resolver whose answers hold only permitted addresses: a name with any other address
    is refused whole, before a connection is attempted."""

    def __init__(self, inner: AbstractResolver, permitted: Permitted) -> None:
        self._inner = inner
        self._permitted = permitted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not found or not all(self._allows(answer["host"]) for answer in found):
            raise OSError(f"{host} resolves to an address the gateway does not connect to")
        return found

    def _allows(self, host: str) -> bool:
        try:
            return self._permitted(ipaddress.ip_address(host))
        except ValueError:
            return False

    async def close(self) -> None:
        await self._inner.close()


class Icons:
    """Fetches icons and keeps them: one per app (`app.ICONS`), its session opened on the
    first fetch and closed with the app. `permitted`, `resolver` and `tls` (an `ssl` context, or
    True for the system's CAs) are seams for tests, which serve icons from loopback with a CA of
    their own; the config reaches none of them."""

    def __init__(
        self,
        *,
        permitted: Permitted = is_public,
        resolver: AbstractResolver | None = None,
        tls: ssl.SSLContext | bool = True,
    ) -> None:
        self._permitted = permitted
        self._resolver = resolver
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._settings: IconSettings | None = None
        self._kept: TTLCache[str, Fetched, float] = TTLCache(1, 1)
        self._failed: TTLCache[str, Fetched, float] = TTLCache(1, 1)
        self._pending: dict[str, asyncio.Task[Fetched]] = {}
        self._closed = False

    async def fetch(self, url: IconUrl, settings: IconSettings) -> Fetched:
        """The icon at `url` (already checked against `settings.allow`), from memory when kept."""
        self._adopt(settings)
        src = url.text
        if self._closed:
            return Refusal(src, "the gateway is stopping")
        known = self._kept.get(src) or self._failed.get(src)
        if known is not None:
            return known
        task = self._pending.get(src)
        if task is None:
            if len(self._pending) >= MAX_PENDING:
                return Refusal(src, "too many icons being fetched at once")
            task = asyncio.create_task(self._fetch(url, settings))
            self._pending[src] = task
            task.add_done_callback(lambda _: self._pending.pop(src, None))
        return await asyncio.shield(task)  # a client leaving does not cancel the others' fetch

    def _adopt(self, settings: IconSettings) -> None:
        if settings is not self._settings and settings != self._settings:  # a reload's bounds
            self._settings = settings
            self._kept = TTLCache(settings.cache_bytes, settings.ttl, getsizeof=_size)
            self._failed = TTLCache(FAILURE_BYTES, settings.failure_ttl, getsizeof=_size)

    async def _fetch(self, url: IconUrl, settings: IconSettings) -> Fetched:
        fetched = await self._download(url, settings)
        cache = self._kept if isinstance(fetched, Icon) else self._failed
        if _size(fetched) <= cache.maxsize:
            cache[url.text] = fetched
        if isinstance(fetched, Refusal):
            log.info("icon_refused", src=url.text[:256], reason=fetched.reason)
        return fetched

    async def _download(self, url: IconUrl, settings: IconSettings) -> Fetched:
        src = url.text
        address = url.address()
        if address is not None and not self._permitted(address):
            return Refusal(src, "the address is not one the gateway connects to")
        try:
            async with self._open().get(
                yarl.URL(src, encoded=True),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=settings.timeout),
            ) as response:
                if response.status != 200:
                    return Refusal(src, f"answered {response.status}")  # a redirect too
                if response.headers.get("Content-Encoding", "identity") != "identity":
                    return Refusal(src, "answered encoded though identity was asked for")
                if (response.content_length or 0) > settings.max_bytes:
                    return Refusal(src, f"larger than max_bytes ({settings.max_bytes})")
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > settings.max_bytes:
                        response.close()  # the rest is never read
                        return Refusal(src, f"larger than max_bytes ({settings.max_bytes})")
        except aiohttp.ClientConnectorError as exc:  # the guard's refusal is its os_error
            return Refusal(src, f"{type(exc).__name__}: {str(exc.os_error)[:200]}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Refusal(src, f"{type(exc).__name__}: {str(exc)[:200]}")
        kind = image_type(bytes(body[:16]))
        if kind is None:
            return Refusal(src, "not a PNG, JPEG or WebP image (SVG is never served)")
        return Icon(src, bytes(body), kind)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # inside the running loop: the first fetch
            resolver = self._resolver or aiohttp.ThreadedResolver()
            connector = aiohttp.TCPConnector(
                resolver=_Guard(resolver, self._permitted),
                use_dns_cache=False,  # every connection's addresses pass the guard
                ssl=self._tls,
                limit=16,
                limit_per_host=4,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # no proxy from the environment
                headers={
                    "User-Agent": "mcp-discovery-gateway",
                    "Accept": ", ".join(sorted(TYPES)),
                    "Accept-Encoding": "identity",
                },
            )
        return self._session

    async def close(self) -> None:
        """Cancel fetches under way and close the session (with the app): no fetch after."""
        self._closed = True
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _headers(content_type: str, max_age: float) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": f"public, max-age={int(max_age)}",
        "Vary": "Origin",
    }


async def answer(given: list[str], icons: Icons, settings: IconSettings) -> web.Response:
    """`GET /_icons?src=...`: the icon, or the placeholder (404) when it cannot be had. Off, or
    a `src` that is not an allowed https URL: a problem, and nothing is fetched."""
    if not settings.allow:
        raise NotFound("icons are off: gateway.yaml icons.allow names no prefix")
    if len(given) != 1:
        raise ValidationFailed([FieldError("expected one https URL", "query.src", len(given))])
    try:
        url = allowed(given[0], settings.prefixes())
    except ValueError as exc:
        raise ValidationFailed([FieldError(str(exc), "query.src", given[0][:256])]) from None
    fetched = await icons.fetch(url, settings)
    if isinstance(fetched, Refusal):
        headers = _headers("image/svg+xml", settings.failure_ttl)
        return web.Response(status=404, body=PLACEHOLDER, headers=headers)
    return web.Response(body=fetched.body, headers=_headers(fetched.content_type, settings.ttl))
