"""gateway.yaml `icons`: the option for the gateway to fetch and serve server icons itself, and
the one URL form the config and the fetcher (`icons`) both compare.

Off by default: with no `allow` prefix a browser never sees a server's icon, only a placeholder.
A URL is compared parsed, never as text: scheme (https only), host case-folded, port, and the
path decoded with its dot segments resolved (`%2e%2e` too). A URL whose path climbs above the
root, or hides a separator, a percent sign or a dot segment some server would still resolve
(`%2F`, `%252e`, `..;x`, `...`), is refused outright rather than guessed at. A prefix matches on
a path-segment boundary: `https://a.com/x` allows `https://a.com/x/logo.png`, never
`https://a.com/xevil`. The fetcher requests the URL in this canonical form, so the server is
asked for exactly the path that was checked.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from gateway.fields import Duration, Model, ecma

MAX_URL = 2048
HTTPS_PORT = 443
_LABELS = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_QUERY = re.compile(r"([A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"  # sub-delims and unreserved: left as they are


@dataclass(frozen=True, slots=True)
class IconUrl:
    """An https URL in canonical form: what is compared, and what is fetched."""

    host: str  # case-folded; an IPv6 address without its brackets
    port: int
    segments: tuple[str, ...]  # decoded, dot segments resolved
    query: str = ""  # as given, valid percent-encoding (a prefix has none)

    @property
    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == HTTPS_PORT else f":{self.port}"
        path = "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in self.segments)
        query = f"?{self.query}" if self.query else ""
        return f"https://{host}{port}/{path}{query}"

    def under(self, prefix: IconUrl) -> bool:
        """Whether this URL is the prefix or below it, segment by segment."""
        depth = len(prefix.segments)
        return (
            self.host == prefix.host
            and self.port == prefix.port
            and self.segments[:depth] == prefix.segments
        )

    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address a literal host names (no resolver is asked for one); None for a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def _host(netloc_host: str, hostname: str) -> str:
    if netloc_host.startswith("["):
        if "%" in hostname:
            raise ValueError(f"{hostname!r} names a zone: not a global address")
        try:
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise ValueError(f"{hostname!r} is not an IPv6 address") from None
    host = hostname[:-1] if hostname.endswith(".") else hostname
    if not _LABELS.fullmatch(host):
        raise ValueError(f"{hostname!r} is not a host name (IDN hosts are written in punycode)")
    if host.rpartition(".")[2].isdigit():  # an IPv4 address: only its dotted-quad form
        try:
            if str(ipaddress.IPv4Address(host)) == host:
                return host
        except ValueError:
            pass
        raise ValueError(f"{hostname!r} is not a dotted-quad IPv4 address")
    return host


def _segment(raw: str) -> str:
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"path segment {raw!r} is not UTF-8 once decoded") from None
    if any(c in "/\\%" or ord(c) < 0x21 or c == "\x7f" or c.isspace() for c in decoded):
        raise ValueError(
            f"path segment {raw!r} hides a separator, a percent sign, a space or a control "
            "character once decoded"
        )
    bare = decoded.split(";", 1)[0]
    if decoded and set(bare) <= {"."} and decoded not in (".", ".."):
        raise ValueError(f"path segment {raw!r} is a dot segment (or parameters alone) in disguise")
    return decoded


def _path(raw_path: str, *, prefix: bool) -> tuple[str, ...]:
    raws = raw_path.split("/")[1:] if raw_path else []
    if prefix and raws and raws[-1] == "":
        raws.pop()  # `.../icons/`: the directory, matched segment by segment anyway
    segments: list[str] = []
    for raw in raws:
        decoded = _segment(raw)
        if decoded in (".", "..") and prefix:
            raise ValueError("a prefix is written without . or .. segments")
        if decoded == "..":
            if not segments:
                raise ValueError("the path climbs above the root")
            segments.pop()
        elif decoded == "":
            raise ValueError("the path has an empty segment (// or a trailing /)")
        elif decoded != ".":
            segments.append(decoded)
    return tuple(segments)


def parse_icon_url(text: str, *, prefix: bool = False) -> IconUrl:
    """`text` as an `IconUrl`; ValueError saying what is wrong. A prefix may not carry a query
    or a fragment; an icon's fragment is dropped (it is never sent)."""
    if len(text) > MAX_URL:
        raise ValueError(f"longer than {MAX_URL} characters")
    if not text.isascii() or any(ord(c) < 0x21 or c == "\x7f" for c in text) or "\\" in text:
        raise ValueError("has a space, a backslash, a control or a non-ASCII character")
    parts = urlsplit(text)
    if parts.scheme.lower() != "https":
        raise ValueError("is not an https URL")
    if "@" in parts.netloc:
        raise ValueError("carries a user name or password")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = HTTPS_PORT if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    if prefix and (parts.query or parts.fragment or text.endswith(("?", "#"))):
        raise ValueError("a prefix has no query or fragment")
    if not _QUERY.fullmatch(parts.query):
        raise ValueError("has a query that is not percent-encoded")
    host = _host(parts.netloc.rpartition("@")[2], parts.hostname)
    segments = _path(parts.path, prefix=prefix)
    if not prefix and not segments:
        raise ValueError("names no file")
    return IconUrl(host, port, segments, parts.query)


def _check_prefix(value: str) -> str:
    parse_icon_url(value, prefix=True)  # the message names what is wrong
    return value


IconPrefix = Annotated[
    str,
    AfterValidator(_check_prefix),
    WithJsonSchema({"type": "string", "pattern": ecma(r"https://[^\s/?#@\\]+(/[^\s?#\\]*)?")}),
]


class IconSettings(Model):
    """`icons`: the gateway fetches server icons from these prefixes and serves them itself at
    `/_icons` (PNG, JPEG and WebP; never SVG). No prefix: off, every icon is a placeholder."""

    allow: list[IconPrefix] = Field(
        default_factory=list, description="https URL prefixes icons may come from; none: off"
    )
    max_bytes: int = Field(
        256 * 1024, ge=1024, le=8 * 1024 * 1024, description="a larger icon is refused"
    )
    timeout: Duration = Field(5.0, gt=0, le=60, description="one fetch, connect to last byte")
    cache_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="memory held by fetched icons, URLs counted"
    )
    ttl: Duration = Field(
        86400.0, gt=0, description="a fetched icon is kept, and browsers may cache it, this long"
    )
    failure_ttl: Duration = Field(
        300.0, gt=0, description="a failed fetch is answered from memory this long"
    )

    @model_validator(mode="after")
    def _an_icon_fits(self) -> IconSettings:
        if self.cache_bytes < self.max_bytes:
            raise ValueError(
                f"cache_bytes ({self.cache_bytes}) is smaller than max_bytes "
                f"({self.max_bytes}): the largest icon would never be kept"
            )
        return self

    def prefixes(self) -> tuple[str, ...]:
        """The allowed prefixes, as `icons.icon_src` takes them (empty: off)."""
        return tuple(self.allow)


ENDPOINT = "/_icons"
TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
MAX_ICONS = 16  # of a server's `icons` (a stranger's list), the first ones looked at


@functools.lru_cache(maxsize=16)
def _prefixes(allow: tuple[str, ...]) -> tuple[IconUrl, ...]:
    return tuple(parse_icon_url(prefix, prefix=True) for prefix in allow)


def allowed(text: str, allow: tuple[str, ...]) -> IconUrl:
    """`text` parsed, when it is under one of the `allow` prefixes; ValueError saying why not."""
    url = parse_icon_url(text)
    if not any(url.under(prefix) for prefix in _prefixes(allow)):
        raise ValueError("is not under a prefix icons.allow names")
    return url


def icon_src(server: dict[str, Any], allow: tuple[str, ...]) -> str | None:
    """The `/_icons?src=...` path of a server's first icon the gateway may serve (an https
    URL under an `allow` prefix; a PNG, JPEG or WebP, or no type given); None when none is."""
    icons = server.get("icons")
    if not allow or not isinstance(icons, list):
        return None
    for icon in icons[:MAX_ICONS]:
        if not isinstance(icon, dict):
            continue
        src, kind = icon.get("src"), icon.get("mimeType")
        if not isinstance(src, str) or (kind is not None and kind not in TYPES):
            continue
        try:
            url = allowed(src, allow)
        except ValueError:
            continue
        return f"{ENDPOINT}?src={quote(url.text, safe='')}"
    return None
