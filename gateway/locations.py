"""Whether a URL stays under a prefix: the one test for every URL the gateway builds from a
configured location (mirror rewrites, mirror checks, their redirects, credentials).

A URL is under a prefix when it has the same scheme, host and port, carries no user:password,
and its path, decoded as a server might decode it (percent-escapes, repeatedly; `\\` as `/`;
a segment's `;parameters` dropped), climbs nowhere (`..`) and starts with the prefix's path at
a segment boundary. The URL is read
as aiohttp reads it (yarl), dot segments and `%2e%2e` resolved first.
"""

from __future__ import annotations

from urllib.parse import unquote

from yarl import URL

_DECODE_ROUNDS = 4  # `%252e%252e` is `..` to a server that decodes twice


def decoded(path: str) -> str:
    """A path with percent-escapes decoded until nothing changes (a few rounds at most)."""
    for _ in range(_DECODE_ROUNDS):
        plain = unquote(path)
        if plain == path:
            break
        path = plain
    return path.replace("\\", "/")


def _parsed(url: str) -> URL | None:
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.absolute and parsed.host else None


def within(url: str, prefix: str) -> bool:
    """Whether `url` stays under `prefix` (see the module's docstring)."""
    target, base = _parsed(url), _parsed(prefix)
    if target is None or base is None or target.user is not None or target.password is not None:
        return False
    if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
        return False
    path = decoded(target.raw_path)
    # A segment's parameters (`..;x`) are dropped by some servers before they resolve it.
    if any(segment.split(";", 1)[0] in (".", "..") for segment in path.split("/")):
        return False
    root = decoded(base.raw_path)
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def origin(url: str) -> str:
    """The scheme, host and port of a URL, as a prefix of every path there."""
    parsed = _parsed(url)
    return str(parsed.origin()) + "/" if parsed is not None else ""
