"""An immutable catalog snapshot of one view, every entry serialized once, in parts.

Items are kept in the contract's list order (name, then version, as byte strings); keyset
paging bisects them. An item's JSON is a few byte strings joined on demand: the server object
(the upstream's own bytes unless a mirror rewrote it, and then shared by every view with the
same mirrors), the registry's `_meta` (shared by every view), and a short suffix for `isLatest`
and the gateway's `_meta` (interned: most entries of an upstream share it). 200k versions in
three views then cost little more than the JSON itself. Nothing here is ever mutated.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, Protocol

import orjson

from gateway.entry import OFFICIAL, Entry, ServerJson, format_timestamp
from gateway.merge import Merged
from gateway.pacing import paced
from gateway.search import SearchIndex
from gateway.semver import pick_latest
from gateway.view import Admission, Reshaped

Key = tuple[str, str]
_HEAD = b'{"server":'
_OFFICIAL_KEY = orjson.dumps(OFFICIAL) + b":"


@dataclass(frozen=True, slots=True)
class Origin:
    """What the gateway says about an upstream in each entry's `_meta`."""

    upstream: str
    synced_up_to: datetime | None  # the newest updatedAt of the upstream's data (`syncedAt`)
    stale_since: datetime | None = None  # the upstream's syncs fail since then
    beyond_max_stale: bool = False
    hidden: bool = False  # beyond max_stale with on_stale: hide

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def as_meta(self) -> dict[str, Any]:
        # Data-derived, not this replica's fetch time: replicas with the same data serve the
        # same bytes (and ETags). When this replica fetched it is in /admin/status.
        synced = format_timestamp(self.synced_up_to) if self.synced_up_to else None
        meta: dict[str, Any] = {"upstream": self.upstream, "syncedAt": synced, "stale": self.stale}
        if self.stale_since is not None:
            meta["staleSince"] = format_timestamp(self.stale_since)
        if self.beyond_max_stale:
            meta["beyondMaxStale"] = True
        return meta


class Item:
    """One served entry: what filters read, and its ServerResponse JSON in parts. Never
    mutated; a plain class, made hundreds of thousands of times per build: compiled (see
    setup.py), its `__init__` is compiled too, where a dataclass's would be interpreted."""

    __slots__ = (
        "deleted", "end", "is_latest", "name", "name_folded", "published_at", "registry_meta",
        "server_json", "suffix", "updated_at", "version",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        version: str,
        name_folded: str,
        deleted: bool,
        is_latest: bool,
        updated_at: datetime,
        published_at: datetime,
        server_json: ServerJson | Reshaped,
        registry_meta: RegistryMeta,
        suffix: SuffixKey,  # `isLatest` and the gateway's `_meta`: in the build's table
        end: bytes,  # the gateway's `packages`, if any, and the closing braces (b"": Reshaped's)
    ) -> None:
        self.name = name
        self.version = version
        self.name_folded = name_folded
        self.deleted = deleted
        self.is_latest = is_latest
        self.updated_at = updated_at
        self.published_at = published_at
        self.server_json = server_json
        self.registry_meta = registry_meta
        self.suffix = suffix
        self.end = end

    @property
    def key(self) -> Key:
        return (self.name, self.version)


# The gateway's `_meta` names sync times and staleness, which change with every build: items
# hold a key into the build's table of suffixes, so an unchanged server's items are reused.
SuffixKey = tuple[bool, str, tuple[str, ...]]  # isLatest, upstream, admitting rules


def _order(item: Item) -> Key:
    return (item.name, item.version)


def _name(item: Item) -> str:
    return item.name


@dataclass(frozen=True, slots=True)
class Listing:
    """One ordered subset of the items."""

    items: list[Item]

    def after(self, key: Key | None) -> Iterator[Item]:
        """Items strictly after `key` in list order (all of them when key is None)."""
        items = self.items
        start = 0 if key is None else bisect_right(items, key, key=_order)
        for index in range(start, len(items)):
            yield items[index]


@dataclass(frozen=True, slots=True)
class ViewCatalog:
    """Everything one view serves, indexed for the read endpoints."""

    view: str
    every: Listing  # deleted entries included
    active: Listing  # deleted entries left out
    latest: Listing  # the isLatest entry of each server
    suffixes: Mapping[SuffixKey, bytes] = field(default_factory=dict)
    upstream_counts: Mapping[str, int] = field(default_factory=dict)
    search: SearchIndex | None = None  # shared by every view of a builder
    token: int = -1  # which build this is: the index answers once it covers that build

    def __len__(self) -> int:
        return len(self.active.items)

    def write(self, item: Item, out: list[bytes]) -> None:
        """Append the item's ServerResponse JSON, in parts."""
        server = item.server_json
        meta = item.registry_meta.made()
        if isinstance(server, bytes):
            out.extend((_HEAD, server, meta, self.suffixes[item.suffix], item.end))
            return
        end = item.end
        if isinstance(server, Reshaped):
            server, end = server.made()
        out.append(_HEAD)
        if isinstance(server, bytes):
            out.append(server)
        else:
            out.extend(server.parts())
        out.extend((meta, self.suffixes[item.suffix], end))

    def body(self, item: Item) -> bytes:
        out: list[bytes] = []
        self.write(item, out)
        return b"".join(out)

    def versions(self, name: str, include_deleted: bool) -> list[Item]:
        """Every version of a server, newest published first."""
        items = self.every.items
        start = bisect_left(items, name, key=_name)
        end = bisect_right(items, name, key=_name)
        chosen = [i for i in items[start:end] if include_deleted or not i.deleted]
        chosen.sort(key=lambda item: (item.published_at, item.version), reverse=True)
        return chosen

    def lookup(self, name: str, version: str, include_deleted: bool) -> Item | None:
        for item in self.versions(name, include_deleted=True):
            if item.deleted and not include_deleted:
                continue
            if (version == "latest" and item.is_latest) or item.version == version:
                return item
        return None


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

    def __init__(self, entry: Entry, namespace: str) -> None:
        self.entry = entry
        self._namespace = namespace
        self._made: bytes | None = None

    def made(self) -> bytes:
        made = self._made
        if made is None:  # two threads may both make it: the results are equal
            made = self._made = registry_meta(self.entry, self._namespace)
        return made


class Admitter(Protocol):
    """Decides what a view serves, one server at a time."""

    def begin(self) -> None:
        """A server's entries follow."""

    def __call__(self, upstream: str, entry: Entry) -> Admission | None:
        """What the view serves of this entry, or None."""

    def end(self) -> tuple[bool, dict[str, int], dict[str, int]]:
        """After the server: can its items be kept for the next build; what was hidden (by
        reason) and verified (by result) among its entries."""

    def tally(self, hidden: dict[str, int], verification: dict[str, int]) -> None:
        """Count a kept server's figures again."""


Order = list[tuple[str, str, list[Entry]]]  # (name, owning upstream, versions), in list order


class PartCache:
    """Byte strings shared by every view of a build: the suffixes (isLatest and the gateway's
    `_meta`) by value."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.namespace_key = b"," + orjson.dumps(namespace) + b":"
        self.suffixes: dict[SuffixKey, bytes] = {}
        self._keys: dict[SuffixKey, SuffixKey] = {}  # a few per upstream, kept across builds

    def new_build(self) -> dict[SuffixKey, bytes]:
        self.suffixes = {}  # they name sync times and staleness: fresh for every build
        return self.suffixes

    def suffix(self, key: SuffixKey, origin_meta: dict[str, Any]) -> SuffixKey:
        """Make sure this build has the suffix: `isLatest`'s value and the gateway's `_meta`
        up to its `packages` (left open)."""
        shared = self._keys.get(key)
        if shared is None:  # one tuple per distinct key, not one per item
            shared = self._keys[key] = key
        if key not in self.suffixes:
            is_latest, _, rules = key
            meta = orjson.dumps({**origin_meta, "admittedBy": list(rules)})[:-1]
            flag = b"true}" if is_latest else b"false}"
            self.suffixes[key] = b"".join((flag, self.namespace_key, meta))
        return shared


def order_of(merged: Merged, names: list[str] | None = None) -> Order:
    """Merged servers in list order: names, then versions, as byte strings.

    `names`, when given, is the merged names already sorted (a previous build's): a long sort
    is one call that holds the GIL, and requests wait behind it.
    """
    servers = merged.servers
    order: Order = []
    for name in paced(names if names is not None else sorted(servers)):
        upstream, entries = servers[name]
        order.append(
            (name, upstream, sorted(entries, key=_version) if len(entries) > 1 else entries)
        )
    return order


_version = attrgetter("version")


class ServerItems:
    """One server's items in one view, kept for the next build while nothing they depend on
    changes: the same entry objects, the same owning upstream, no cooldown or mirror check.
    A plain class, like Item."""

    __slots__ = ("entries", "items", "tally", "upstream", "verification")

    def __init__(
        self,
        upstream: str,
        entries: list[Entry],
        items: list[Item],
        tally: dict[str, int],  # hidden entries by reason
        verification: dict[str, int],
    ) -> None:
        self.upstream = upstream
        self.entries = entries
        self.items = items
        self.tally = tally
        self.verification = verification


def _same(a: list[Entry], b: list[Entry]) -> bool:
    return a == b  # identical objects compare at C speed; equal ones give equal items anyway


@dataclass(slots=True)
class _ViewBuild:
    """One view's part of a build in progress."""

    name: str
    admit: Admitter
    kept: dict[str, ServerItems] | None
    items: list[Item] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    keep: dict[str, ServerItems] = field(default_factory=dict)

    def catalog(
        self, parts: PartCache, search: SearchIndex | None, token: int
    ) -> tuple[ViewCatalog, dict[str, ServerItems]]:
        items = self.items
        active: list[Item] = []
        latest: list[Item] = []
        # A paced loop, not C-level filters: one C loop over every item of a view holds the
        # GIL throughout, and requests wait behind it (p99 27 -> 113 ms, measured).
        for item in paced(items):
            if not item.deleted:
                active.append(item)
            if item.is_latest:
                latest.append(item)
        catalog = ViewCatalog(
            view=self.name,
            every=Listing(items),
            active=Listing(active),
            latest=Listing(latest),
            suffixes=parts.suffixes,
            upstream_counts=self.counts,
            search=search,
            token=token,
        )
        return catalog, self.keep


def build_views(
    order: Order,
    origins: Mapping[str, Origin],
    views: list[tuple[str, Admitter, dict[str, ServerItems] | None]],
    parts: PartCache,
    search: SearchIndex | None = None,
    token: int = -1,
) -> list[tuple[ViewCatalog, dict[str, ServerItems]]]:
    """Build every view's snapshot from the merged upstreams, already in list order, in one
    pass: each entry is decided by every view in turn, so what the views share (policy.yaml's
    verdict, a package rewrite) is worked out once and needs no memory beyond the entry.

    Each view is (name, admit, kept): `admit(upstream, entry)` says what the view serves of an
    entry, or None; `kept` are the view's items per server from the previous build. `isLatest`
    is recomputed on what each view serves, among versions not deleted. Returned per view: its
    catalog, and the servers whose items can be kept for the next build.
    """
    builds = [_ViewBuild(name, admit, kept) for name, admit, kept in views]
    known: dict[SuffixKey, SuffixKey] = {}  # this build's suffixes, made once each
    origin_metas = {name: origin.as_meta() for name, origin in origins.items()}
    for name, upstream, entries in paced(order, 16):
        origin_meta = origin_metas[upstream]
        hidden = origins[upstream].hidden
        deciding: list[tuple[_ViewBuild, list[tuple[Entry, RegistryMeta, Admission]]]] = []
        for build in builds:
            previous = build.kept.get(name) if build.kept else None
            if (
                previous is not None
                and previous.upstream == upstream
                and not hidden
                and _same(previous.entries, entries)
            ):
                for item in previous.items:
                    parts.suffix(item.suffix, origin_meta)
                build.items.extend(previous.items)
                build.admit.tally(previous.tally, previous.verification)
                build.counts[upstream] = build.counts.get(upstream, 0) + len(previous.items)
                build.keep[name] = previous
            else:
                build.admit.begin()
                deciding.append((build, []))
        if not deciding:
            continue
        for entry in entries:
            meta = None
            for build, admitted in deciding:
                admission = build.admit(upstream, entry)
                if admission is not None:
                    if meta is None:  # one per entry, shared by the views of this build
                        meta = RegistryMeta(entry, parts.namespace)
                    admitted.append((entry, meta, admission))
        folded = name.casefold()
        folded = name if folded == name else folded  # most names are lower case: share them
        for build, admitted in deciding:
            if len(admitted) == 1:  # a third of servers have one version
                latest = admitted[0][0] if admitted[0][0].status != "deleted" else None
            else:
                latest = pick_latest(e for e, _, _ in admitted if e.status != "deleted")
            server_items = []
            for entry, meta, (server_json, rules, end) in admitted:
                is_latest = entry is latest
                key = (is_latest, upstream, rules)
                suffix = known.get(key)
                if suffix is None:
                    suffix = known[key] = parts.suffix(key, origin_meta)
                server_items.append(
                    Item(
                        name,
                        entry.version,
                        folded,
                        entry.status == "deleted",
                        is_latest,
                        entry.updated_at,
                        entry.published_at,
                        server_json,
                        meta,
                        suffix,
                        end,
                    )
                )
            build.items.extend(server_items)
            build.counts[upstream] = build.counts.get(upstream, 0) + len(server_items)
            reusable, tally, verification = build.admit.end()
            if reusable:
                build.keep[name] = ServerItems(upstream, entries, server_items, tally, verification)
    return [view.catalog(parts, search, token) for view in builds]


def plain_view(
    view: str, merged: Merged, origins: Mapping[str, Origin], namespace: str
) -> ViewCatalog:
    """A view serving every merged entry as received (no policy), admitted by default."""

    parts = PartCache(namespace)
    parts.new_build()
    return build_views(order_of(merged), origins, [(view, _Everything(), None)], parts)[0][0]


class _Everything:
    def begin(self) -> None:
        pass

    def __call__(self, upstream: str, entry: Entry) -> Admission:
        return entry.server_json, ("default",), b"}}}"

    def end(self) -> tuple[bool, dict[str, int], dict[str, int]]:
        return False, {}, {}

    def tally(self, hidden: dict[str, int], verification: dict[str, int]) -> None:
        pass
