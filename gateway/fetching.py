"""One GET or HEAD to a configured location, its redirects confined there: the only way the
gateway follows a redirect (upstream registries, mirror checks, advisory feeds).

aiohttp follows redirects to any host and keeps custom headers on the way (it drops only
`Authorization` across hosts): an `X-API-Key` for one registry would reach whatever host its
answer names. Here every hop must stay under the configured prefix (`locations.within`),
carries only the headers configured for its own URL, and there are at most `MAX_REDIRECTS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.errors import RedirectRefused
from gateway.locations import within

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
T = TypeVar("T")


def host_of(url: str) -> str:
    try:
        return URL(url).host or "?"
    except (TypeError, ValueError):
        return "?"


async def confined(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    under: str,
    headers_for: Callable[[str], Mapping[str, str]],
    per_request: aiohttp.ClientTimeout,
    read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
) -> tuple[int, T, CIMultiDictProxy[str]]:
    """(status, what `read` made of the final answer, its headers). `RedirectRefused` when a
    hop leaves `under` or there are too many; aiohttp's own errors pass through."""
    current = url if isinstance(url, URL) else URL(url, encoded=True)
    configured = (current.user, current.password)  # a user:password the operator wrote
    for _ in range(MAX_REDIRECTS + 1):
        text = str(current)
        plain = (
            current.with_user(None) if (current.user, current.password) == configured else current
        )
        if not within(str(plain), under):
            raise RedirectRefused(host_of(text), "outside its configured location")
        async with session.request(
            method, current, headers=dict(headers_for(text)), timeout=per_request,
            allow_redirects=False,
        ) as response:  # fmt: skip
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                current = response.url.join(URL(location))
                continue
            return response.status, await read(response), response.headers
    raise RedirectRefused(host_of(str(current)), f"more than {MAX_REDIRECTS} redirects")
