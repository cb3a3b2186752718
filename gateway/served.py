"""An item's bytes, and only here: the ServerResponse JSON a catalog serves for one entry in
one view, as a few byte strings written one after the other.

    {"server":SERVER,"_meta":{...,"<official>":{...,"isLatest":   the registry's `_meta`
    true},"<namespace>":{"upstream":...,"admittedBy":[...]       the suffix
    }}}   or   ,"packages":[...]}}}                               the end

- `server`: the upstream's own bytes, or a `Splice` of them around rewritten packages, or a
  `Deferred` rewrite (made when first written, then kept);
- the registry's `_meta` up to the value of `isLatest` (`RegistryMeta`: one per entry, shared
  by every view, made when first written);
- the suffix: `isLatest`'s value and the gateway's `_meta` left open (`suffix`: one per
  distinct key in a build, shared by every item with that key);
- the end: the gateway's `packages` when a view rewrote any, then the braces that close the
  gateway's `_meta`, `_meta` and the item (`CLOSE`, `packages_end`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.entry import OFFICIAL, Entry, ServerJson, Splice, format_timestamp

if TYPE_CHECKING:
    from collections.abc import Mapping

HEAD = b'{"server":'
CLOSE = b"}}}"  # the gateway's `_meta`, the item's `_meta`, the item
_OFFICIAL_KEY = orjson.dumps(OFFICIAL) + b":"

# What the advisory feeds say of a version, as served (see `trust.mark`): state, malicious,
# severity, advisory ids, the feeds that speak for its packages' types, their newest record.
Mark = tuple[str, bool | None, str | None, tuple[str, ...], tuple[str, ...]]  # no asOf
SuffixKey = tuple[bool, str, tuple[str, ...], Mark | None]  # isLatest, upstream, rules, mark


def packages_end(packages: tuple[dict[str, Any], ...]) -> bytes:
    """The end of an item whose view rewrote packages: their originals and mirror checks."""
    return b',"packages":' + orjson.dumps(packages) + CLOSE if packages else CLOSE


def namespace_key(namespace: str) -> bytes:
    return b"," + orjson.dumps(namespace) + b":"


def suffix(
    key: SuffixKey, namespace: bytes, origin_meta: Mapping[str, Any], as_of: str | None = None
) -> bytes:
    """`isLatest`'s value and the gateway's `_meta` (`namespace` is `namespace_key`'s), left
    open for its `packages`. `as_of` is how current the advisory feeds are: the build's, like
    the sync times, so that a feed refresh changes only the marks of what it changed."""
    is_latest, _, rules, mark = key
    gateway: dict[str, Any] = {**origin_meta, "admittedBy": list(rules)}
    if mark is not None:
        state, malicious, severity, ids, feeds = mark
        gateway["advisories"] = {"state": state, "malicious": malicious, "severity": severity,
                                 "ids": list(ids), "feeds": list(feeds), "asOf": as_of}  # fmt: skip
    meta = orjson.dumps(gateway)[:-1]
    return b"".join((b"true}" if is_latest else b"false}", namespace, meta))


def registry_meta(entry: Entry, namespace: str) -> bytes:
    """The entry's outer `_meta` up to the value of `isLatest`: the upstream's other keys as
    sent (but our own namespace, which this gateway writes anew), then the registry's own,
    with what a bare server.json lacks filled in."""
    meta = entry.meta
    meta.pop(namespace, None)
    official = meta.pop(OFFICIAL, None)
    if not isinstance(official, dict):
        official = {}
    official.pop("isLatest", None)
    if "status" not in official:
        official["status"] = entry.status
    if "publishedAt" not in official:
        official["publishedAt"] = format_timestamp(entry.published_at)
    if "updatedAt" not in official:
        official["updatedAt"] = format_timestamp(entry.updated_at)
    others = orjson.dumps(meta)[1:-1]
    return b"".join(
        (b',"_meta":{', others, b"," if others else b"", _OFFICIAL_KEY,
         orjson.dumps(official)[:-1], b',"isLatest":')
    )  # fmt: skip


class RegistryMeta:
    """An entry's outer `_meta` as served (see `registry_meta`), made when first written and
    kept with the items that share it (every view's, and while a rebuild keeps them)."""

    __slots__ = ("_made", "_namespace", "entry")

    def __init__(self, entry: Entry, namespace: str, made: bytes | None = None) -> None:
        self.entry = entry
        self._namespace = namespace
        self._made = made  # already made: a packed snapshot read back (see `unpack`)

    def made(self, keep: bool = True) -> bytes:
        """Its bytes, made now if they were not; kept for the next time unless `keep` is
        False (a reader of every item, such as packing, makes what it needs and lets go)."""
        made = self._made
        if made is None:  # two threads may both make it: the results are equal
            made = registry_meta(self.entry, self._namespace)
            if keep:
                self._made = made
        return made


class Rewrite(Protocol):
    """What a deferred rewrite applies: a value made of a view's package types and mirror
    settings (`shaping.Rewriter`), never the view's policy."""

    def served(self, entry: Entry) -> tuple[ServerJson, bytes]:
        """The entry's server object as the view serves it, and the item's end."""


class Deferred:
    """A rewrite the build decided (the entry is served, rewritten by these settings) whose
    bytes wait until the item is first written, then are kept: rewriting every package of a
    catalog is most of a cold build, and most items are not asked for before the next build
    keeps them. Self-contained: the entry and the settings, nothing that changes."""

    __slots__ = ("_end", "_entry", "_rewrite", "_server")

    def __init__(self, entry: Entry, rewrite: Rewrite) -> None:
        self._entry = entry
        self._rewrite = rewrite
        # Once made, its two parts: not a tuple of them (56 bytes more for each of the 160k
        # rewrites at 200k versions, once every page was served).
        self._server: ServerJson | None = None
        self._end = b""

    def made(self, keep: bool = True) -> tuple[ServerJson, bytes]:
        """The server JSON as served, and the item's end (the gateway's `packages`); kept
        for the next time unless `keep` is False (see `RegistryMeta.made`)."""
        server = self._server
        if server is not None:
            return server, self._end
        made = self._rewrite.served(self._entry)  # two threads may both: the results are equal
        if keep:
            self._end = made[1]
            self._server = made[0]  # last: a reader seeing it sees the end too
        return made


def write(
    server: ServerJson | Deferred,
    meta: RegistryMeta,
    suffix: bytes,
    end: bytes,
    out: list[bytes],
) -> None:
    """Append an item's ServerResponse JSON to `out`, in parts (`end` is b"" for a
    `Deferred` server: it makes its own)."""
    if isinstance(server, bytes):
        out.extend((HEAD, server, meta.made(), suffix, end))
        return
    if isinstance(server, Deferred):
        server, end = server.made()
    out.append(HEAD)
    if isinstance(server, Splice):
        out.extend(server.parts())
    else:
        out.append(server)
    out.extend((meta.made(), suffix, end))
