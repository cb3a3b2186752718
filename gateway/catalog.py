"""An immutable catalog snapshot of one view, every entry serialized once, in parts.

Items are kept in the contract's list order (name, then version, as byte strings); keyset
paging bisects them. An item's JSON is a few byte strings joined on demand (`served` owns
them): the server object (the upstream's own bytes unless a mirror rewrote it, and then shared
by every view with the same mirrors), the registry's `_meta` (shared by every view), and a
short suffix for `isLatest` and the gateway's `_meta` (interned: most entries of an upstream
share it). 200k versions in three views then cost little more than the JSON itself. Nothing
here is ever mutated, and nothing here decides: the catalog reads what the build made.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.entry import ServerJson, format_timestamp
from gateway.search import SearchIndex
from gateway.served import Deferred, RegistryMeta, SuffixKey, write

Key = tuple[str, str]


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
        server_json: ServerJson | Deferred,
        registry_meta: RegistryMeta,
        suffix: SuffixKey,  # `isLatest` and the gateway's `_meta`: in the build's table
        end: bytes,  # the gateway's `packages`, if any, and the closing braces (b"": Deferred's)
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
# hold a key into the build's table of suffixes (`served.SuffixKey`), so an unchanged server's
# items are reused.


def _order(item: Item) -> Key:
    return (item.name, item.version)


def _name(item: Item) -> str:
    return item.name


@dataclass(frozen=True, slots=True)
class Listing:
    """One ordered subset of the items (a list; in a catalog served from a packed buffer,
    a sequence that makes each item as it is first read: see `inplace`)."""

    items: Sequence[Item]

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
    offered: int = 0  # servers the upstreams offer (a version not deleted), served here or not
    # what pages work out from this catalog once (see `listing`): it lives and dies with it
    memo: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def hidden(self) -> int:
        """Servers the upstreams offer of which this view serves no version."""
        return max(0, self.offered - len(self.latest.items))

    def __len__(self) -> int:
        return len(self.active.items)

    def write(self, item: Item, out: list[bytes]) -> None:
        """Append the item's ServerResponse JSON, in parts (see `served`)."""
        write(item.server_json, item.registry_meta, self.suffixes[item.suffix], item.end, out)

    def page(self, items: list[Item], tail: bytes) -> bytes:
        """A list answer's body: `{"servers":[` and its items' JSON, then `tail` (its
        metadata and the closing brackets). Here, compiled, as the items' own bytes are."""
        out = [b'{"servers":[']
        for index, item in enumerate(items):
            if index:
                out.append(b",")
            self.write(item, out)
        out.append(tail)
        return b"".join(out)

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
