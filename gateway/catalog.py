"""An immutable catalog snapshot of one view, with every entry serialized once.

Items are kept in the contract's list order (name, then version, as byte strings) with parallel
key lists for keyset paging by bisection; pages are assembled from the pre-serialized bytes.
A new snapshot replaces the old one with a single assignment; nothing here is ever mutated.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.entry import OFFICIAL, Entry, format_timestamp
from gateway.merge import Merged
from gateway.semver import pick_latest

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Origin:
    """What the gateway says about an upstream in each entry's `_meta`."""

    upstream: str
    synced_at: datetime | None
    stale_since: datetime | None = None  # the upstream's syncs fail since then
    beyond_max_stale: bool = False
    hidden: bool = False  # beyond max_stale with on_stale: hide

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def as_meta(self) -> dict[str, Any]:
        synced = format_timestamp(self.synced_at) if self.synced_at else None
        meta: dict[str, Any] = {"upstream": self.upstream, "syncedAt": synced, "stale": self.stale}
        if self.stale_since is not None:
            meta["staleSince"] = format_timestamp(self.stale_since)
        if self.beyond_max_stale:
            meta["beyondMaxStale"] = True
        return meta


@dataclass(frozen=True, slots=True)
class Item:
    """One served entry: the sort key, what filters read, and its serialized ServerResponse."""

    name: str
    version: str
    name_folded: str
    deleted: bool
    is_latest: bool
    updated_at: datetime
    published_at: datetime
    body: bytes

    @property
    def key(self) -> Key:
        return (self.name, self.version)


@dataclass(frozen=True, slots=True)
class Listing:
    """One ordered subset of the items, with its keys for bisection."""

    items: list[Item]
    keys: list[Key]

    @classmethod
    def of(cls, items: list[Item]) -> Listing:
        return cls(items, [item.key for item in items])

    def after(self, key: Key | None) -> Iterator[Item]:
        """Items strictly after `key` in list order (all of them when key is None)."""
        start = 0 if key is None else bisect_right(self.keys, key)
        items = self.items
        for index in range(start, len(items)):
            yield items[index]


@dataclass(frozen=True, slots=True)
class ViewCatalog:
    """Everything one view serves, indexed for the read endpoints."""

    view: str
    every: Listing  # deleted entries included
    active: Listing  # deleted entries left out
    latest: Listing  # the isLatest entry of each server
    by_name: Mapping[str, list[Item]]  # newest publishedAt first, deleted included
    digest: str
    upstream_counts: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.active.items)

    def versions(self, name: str, include_deleted: bool) -> list[Item]:
        items = self.by_name.get(name, [])
        return items if include_deleted else [item for item in items if not item.deleted]

    def lookup(self, name: str, version: str, include_deleted: bool) -> Item | None:
        for item in self.by_name.get(name, ()):
            if item.deleted and not include_deleted:
                continue
            if (version == "latest" and item.is_latest) or item.version == version:
                return item
        return None


# What a view serves of an entry: the server object (packages possibly filtered or rewritten)
# and the gateway's extra `_meta` fields for it.
Admission = tuple[dict[str, Any], dict[str, Any]]
Admit = Callable[[str, Entry], Admission | None]


def serialize(
    entry: Entry,
    server: dict[str, Any],
    is_latest: bool,
    namespace: str,
    gateway_meta: dict[str, Any],
) -> bytes:
    """The entry as a compact ServerResponse: upstream fields as sent, registry meta recomputed."""
    official = dict(entry.official)
    official.setdefault("status", entry.status)
    official.setdefault("publishedAt", format_timestamp(entry.published_at))
    official.setdefault("updatedAt", format_timestamp(entry.updated_at))
    official["isLatest"] = is_latest
    meta = dict(entry.meta)
    meta[OFFICIAL] = official
    meta[namespace] = gateway_meta
    return orjson.dumps({"server": server, "_meta": meta})


def build_view(
    view: str,
    merged: Merged,
    origins: Mapping[str, Origin],
    namespace: str,
    admit: Admit | None = None,
) -> ViewCatalog:
    """Build a view's snapshot from merged upstreams.

    `admit(upstream, entry)` returns the server object to serve and extra gateway `_meta`
    fields, or None to leave the entry out; without it every merged entry is served as is.
    `isLatest` is recomputed on what the view serves, among versions that are not deleted.
    """
    items: list[Item] = []
    by_name: dict[str, list[Item]] = {}
    counts: dict[str, int] = {}
    for name, (upstream, entries) in merged.servers.items():
        origin_meta = origins[upstream].as_meta()
        admitted: list[tuple[Entry, Admission]] = []
        for entry in entries:
            admission = (entry.server, {}) if admit is None else admit(upstream, entry)
            if admission is not None:
                admitted.append((entry, admission))
        if not admitted:
            continue
        latest = pick_latest(e for e, _ in admitted if e.status != "deleted")
        versions = []
        for entry, (server, extra) in admitted:
            is_latest = entry is latest
            body = serialize(entry, server, is_latest, namespace, {**origin_meta, **extra})
            versions.append(
                Item(
                    name,
                    entry.version,
                    name.casefold(),
                    entry.status == "deleted",
                    is_latest,
                    entry.updated_at,
                    entry.published_at,
                    body,
                )
            )
        versions.sort(key=lambda item: (item.published_at, item.version), reverse=True)
        by_name[name] = versions
        items.extend(versions)
        counts[upstream] = counts.get(upstream, 0) + len(versions)
    items.sort(key=lambda item: (item.name, item.version))
    digest = hashlib.blake2b(digest_size=16)
    for item in items:
        digest.update(item.body)
    return ViewCatalog(
        view=view,
        every=Listing.of(items),
        active=Listing.of([item for item in items if not item.deleted]),
        latest=Listing.of([item for item in items if item.is_latest]),
        by_name=by_name,
        digest=digest.hexdigest(),
        upstream_counts=counts,
    )


def empty_view(view: str) -> ViewCatalog:
    return build_view(view, Merged(), {}, "unused")
