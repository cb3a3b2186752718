"""One server version as received from an upstream, and how raw items become entries.

An entry keeps the upstream's `server` object and `_meta` exactly as sent (unknown fields pass
through, nothing is renamed); only the few fields the gateway decides on are read out of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.errors import EntryRejected
from gateway.names import identity

OFFICIAL = "io.modelcontextprotocol.registry/official"
STATUSES = frozenset({"active", "deprecated", "deleted"})
NAME_PATTERN = re.compile(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+")  # matched whole (fullmatch)
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Fields the gateway reads or IDEs rely on: a wrong type makes the entry unusable.
_TYPED_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("description", str, "a string"),
    ("title", str, "a string"),
    ("packages", list, "a list"),
    ("remotes", list, "a list"),
    ("repository", dict, "an object"),
    ("_meta", dict, "an object"),
)


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp with a zone -> aware datetime; ValueError otherwise."""
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    return datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))


def format_timestamp(moment: datetime) -> str:
    """The registry's own timestamp form: UTC, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_INTERNED: dict[object, Any] = {}
_INTERNED_MAX = 4096  # facts come from upstream data: a hostile one could make each unique


def _intern(value: Any) -> Any:
    """One shared object for equal small facts (most entries have the same few)."""
    if len(_INTERNED) >= _INTERNED_MAX:
        return _INTERNED.get(value, value)
    return _INTERNED.setdefault(value, value)


@dataclass(slots=True, unsafe_hash=True)
class Entry:
    """A server version, kept compact: the upstream's objects as JSON bytes, exactly as
    received (field order included), plus the facts policy decisions read.

    Never changed once made, and hashed and compared by value as a frozen dataclass is; not
    declared frozen, whose construction costs four times as much (1.33 us against 0.33 us
    each, compiled: 0.27 s of the 1.45 s that reading back a kept catalog of 200k versions
    took).

    Catalogs of 200k versions live in memory, so the dicts are parsed only when needed
    (`server`, `meta`): a rewrite, an explain, an export.
    """

    name: str  # as the upstream spelled it: served, and looked up, byte for byte
    identity: str  # what every decision about the name compares (see `names`)
    version: str
    status: str
    published_at: datetime
    updated_at: datetime
    server_json: bytes
    meta_json: bytes  # the outer `_meta`, as the upstream sent it
    registry_types: frozenset[str]  # of its packages
    transports: frozenset[str]  # package and remote transport types, plus remote / local
    remote_hosts: tuple[str, ...]
    has_packages: bool
    has_remotes: bool
    text: str  # title and description, case-folded: what `search` looks in (see `search`)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def server(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.server_json)
        return value

    @property
    def meta(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.meta_json)
        return value

    @property
    def official(self) -> dict[str, Any]:
        value = self.meta.get(OFFICIAL)
        return value if isinstance(value, dict) else {}

    def item_json(self) -> bytes:
        """The registry's ServerResponse shape (what state files and exports hold)."""
        return b'{"server":' + self.server_json + b',"_meta":' + self.meta_json + b"}"

    def to_item(self) -> dict[str, Any]:
        return {"server": self.server, "_meta": self.meta}


_PACKAGES_KEY = b'"packages":'


@dataclass(slots=True)
class Splice:
    """A server's JSON with its `packages` array replaced, kept as the entry's own bytes
    around the new array: a mirror rewrite then costs the array, not a copy of the server."""

    whole: bytes
    start: int
    end: int
    middle: bytes

    def parts(self) -> tuple[bytes, bytes, bytes]:
        return self.whole[: self.start], self.middle, self.whole[self.end :]

    def __bytes__(self) -> bytes:
        return b"".join(self.parts())


ServerJson = bytes | Splice  # what a view serves as an entry's server object


def json_bytes(server: ServerJson) -> bytes:
    return server if isinstance(server, bytes) else bytes(server)


def _common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes a and b share: the highest differing bit of the two as big
    integers is in the first byte that differs (three C calls, no loop)."""
    size = min(len(a), len(b))
    differ = int.from_bytes(a[:size]) ^ int.from_bytes(b[:size])
    return size if differ == 0 else size - 1 - (differ.bit_length() - 1) // 8


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many trailing bytes a and b share, at most `limit`."""
    size = min(len(a), len(b), limit)
    if size == 0:
        return 0
    differ = int.from_bytes(a[-size:], "little") ^ int.from_bytes(b[-size:], "little")
    return size if differ == 0 else size - 1 - (differ.bit_length() - 1) // 8


def with_packages(entry: Entry, server: dict[str, Any], packages: list[Any]) -> ServerJson:
    """The entry's server JSON with `packages` replaced; `server` is the entry's parsed
    server. Where its packages array is found exactly once in the entry's bytes, only the
    bytes that differ are kept (a rewritten URL, mostly), spliced into the entry's own."""
    old = orjson.dumps(server.get("packages"))
    whole = entry.server_json
    at = whole.find(_PACKAGES_KEY + old)
    if "packages" not in server or at < 0 or whole.find(_PACKAGES_KEY + old, at + 1) >= 0:
        return compact_json({**server, "packages": packages})  # a nested look-alike: copy all
    new = orjson.dumps(packages)
    head = _common_prefix(old, new)
    tail = _common_suffix(old, new, min(len(old), len(new)) - head)
    start = at + len(_PACKAGES_KEY) + head
    return Splice(whole, start, start + len(old) - head - tail, new[head : len(new) - tail])


def newest_update(entries: Iterable[Entry]) -> datetime | None:
    """The newest `updatedAt` among entries: how far the data is synced, by the upstream's own
    clock. Every replica holding the same data computes the same moment."""
    return max((entry.updated_at for entry in entries), default=None)


def compact_json(value: Any) -> bytes:
    """JSON bytes that occupy only their length: orjson hands back a buffer of at least 4 KiB,
    which for a catalog of 200k small entries is most of the process's memory."""
    return memoryview(orjson.dumps(value)).tobytes()


def _facts(server: dict[str, Any]) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    types: set[str] = set()
    transports: set[str] = set()
    hosts: list[str] = []
    for package in server.get("packages") or ():
        if isinstance(package, dict):
            types.add(str(package.get("registryType")))
            transport = package.get("transport")
            if isinstance(transport, dict) and isinstance(transport.get("type"), str):
                transports.add(transport["type"])
            transports.add("local")
    for remote in server.get("remotes") or ():
        if isinstance(remote, dict):
            transports.add("remote")
            if isinstance(remote.get("type"), str):
                transports.add(remote["type"])
            url = remote.get("url")
            if isinstance(url, str):
                host = urlsplit(url).hostname
                if host:
                    hosts.append(host)
    return _intern(frozenset(types)), _intern(frozenset(transports)), tuple(hosts)


def _timestamp(official: dict[str, Any], key: str, fallback: datetime) -> datetime:
    value = official.get(key)
    if value is None:
        return fallback
    if not isinstance(value, str):
        raise EntryRejected(f"_meta official {key} is not a string")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise EntryRejected(f"_meta official {key} is not an RFC 3339 timestamp") from None


SEARCHED = 256  # characters of a title, and of a description, that `search` looks at


def search_text(server: dict[str, Any]) -> str:
    """An entry's title and description as `search` compares them ("" when it has neither):
    case-folded, the first SEARCHED characters of each (the schema allows 100), joined by a
    NUL, which no search can contain (a request with one is refused), so no match spans both."""
    title, description = server.get("title"), server.get("description")
    if not title and not description:
        return ""
    return f"{(title or '')[:SEARCHED]}\x00{(description or '')[:SEARCHED]}".casefold()


def parse_item(item: object, *, seen_at: datetime, shared: dict[str, str] | None = None) -> Entry:
    """A ServerResponse (`{"server":..., "_meta":...}`) or a bare server.json -> Entry.

    A bare server.json (a file upstream's plain array) has no registry metadata: it is taken as
    active, published and updated at `seen_at`. Equal search texts are one string across the
    entries parsed with the same `shared` table (most versions of a server share theirs).
    """
    if not isinstance(item, dict):
        raise EntryRejected("entry is not a JSON object")
    if "server" in item:
        server, meta = item["server"], item.get("_meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise EntryRejected("_meta is not an object")
    else:
        server, meta = item, {}
    if not isinstance(server, dict):
        raise EntryRejected("server is not an object")
    name = server.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or not 3 <= len(name) <= 200:
        raise EntryRejected("server.name is missing or not a namespace/name")
    version = server.get("version")
    if not isinstance(version, str) or not version or len(version) > 255:
        raise EntryRejected("server.version is missing or not a string", name)
    if not version.isprintable() or version != version.strip():
        raise EntryRejected("server.version has control characters or surrounding spaces", name)
    for key, kind, described in _TYPED_FIELDS:
        if key in server and not isinstance(server[key], kind):
            raise EntryRejected(f"server.{key} is not {described}", name)
    official = meta.get(OFFICIAL, {})
    if not isinstance(official, dict):
        raise EntryRejected("_meta official is not an object", name)
    status = official.get("status", "active")
    if status not in STATUSES:
        raise EntryRejected("_meta official status is not active, deprecated or deleted", name)
    try:
        published = _timestamp(official, "publishedAt", seen_at)
        updated = _timestamp(official, "updatedAt", published)
    except EntryRejected as exc:
        raise EntryRejected(exc.reason, name) from None
    types, transports, hosts = _facts(server)
    text = search_text(server)
    return Entry(
        name,
        identity(name),
        version,
        status,
        published,
        updated,
        compact_json(server),
        compact_json(meta),
        types,
        transports,
        hosts,
        bool(server.get("packages")),
        bool(server.get("remotes")),
        text if shared is None else shared.setdefault(text, text),
    )
