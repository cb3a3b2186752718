"""Building each view's catalog from the merged servers: per server, every view's decision,
its items (kept from the previous build when the server's entries did not change), then
the view's listings. The result is a passive `catalog.ViewCatalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from gateway.catalog import Item, Listing, Origin, ViewCatalog
from gateway.entry import Entry
from gateway.merge import Merged
from gateway.search import SearchIndex
from gateway.semver import pick_latest
from gateway.served import CLOSE, Mark, RegistryMeta, SuffixKey, namespace_key, suffix
from gateway.stepping import paced
from gateway.view import Admission


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
        self.namespace_key = namespace_key(namespace)
        self.suffixes: dict[SuffixKey, bytes] = {}
        self._keys: dict[SuffixKey, SuffixKey] = {}  # a few per upstream, kept across builds
        self.as_of: str | None = None  # how current the advisory feeds are, for this build

    def new_build(self, as_of: str | None = None) -> dict[SuffixKey, bytes]:
        self.suffixes = {}  # they name sync times, staleness and the feeds' date: fresh
        self.as_of = as_of
        return self.suffixes

    def suffix(self, key: SuffixKey, origin_meta: dict[str, Any]) -> SuffixKey:
        """Make sure this build has the suffix: `isLatest`'s value and the gateway's `_meta`
        up to its `packages` (left open)."""
        shared = self._keys.get(key)
        if shared is None:  # one tuple per distinct key, not one per item
            shared = self._keys[key] = key
        if key not in self.suffixes:
            self.suffixes[key] = suffix(key, self.namespace_key, origin_meta, self.as_of)
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
    """The same Entry objects: what the trust feed's answers are remembered by (an equal entry
    that is another object is decided again)."""
    if len(a) != len(b):
        return False
    return all(one is other for one, other in zip(a, b, strict=True))


@dataclass(slots=True)
class _ViewBuild:
    """One view's part of a build in progress."""

    name: str
    admit: Admitter
    kept: dict[str, ServerItems] | None
    items: list[Item] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    keep: dict[str, ServerItems] = field(default_factory=dict)
    unkept: dict[str, dict[str, int]] = field(default_factory=dict)  # the others' hidden tallies

    def catalog(
        self, parts: PartCache, search: SearchIndex | None, token: int, offered: int
    ) -> Built:
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
            upstream_counts=dict(sorted(self.counts.items())),  # one order, however made
            search=search,
            token=token,
            offered=offered,
        )
        return Built(catalog, self.keep, self.unkept)


@dataclass(frozen=True, slots=True)
class Built:
    """One view's part of a build: its catalog; the servers whose items can be kept for the
    next build; the others, with what each hid (they are decided again next time)."""

    catalog: ViewCatalog
    keep: dict[str, ServerItems]
    unkept: dict[str, dict[str, int]]


Admitted = tuple[Entry, RegistryMeta, Admission, Mark | None]  # what a view serves of an entry


def build_views(
    order: Order,
    origins: Mapping[str, Origin],
    views: list[tuple[str, Admitter, dict[str, ServerItems] | None]],
    parts: PartCache,
    search: SearchIndex | None = None,
    token: int = -1,
    marks: Callable[[Entry], Mark | None] | None = None,
) -> list[Built]:
    """Build every view's snapshot from the merged upstreams, already in list order, in one
    pass: each entry is decided by every view in turn, so what the views share (policy.yaml's
    verdict, a package rewrite) is worked out once and needs no memory beyond the entry.

    Each view is (name, admit, kept): `admit(upstream, entry)` says what the view serves of an
    entry, or None; `kept` are the view's items per server from the previous build. `isLatest`
    is recomputed on what each view serves, among versions not deleted. Returned per view: its
    catalog, and the servers whose items can be kept for the next build. `marks` says what the
    advisory feeds say of an entry, for its gateway `_meta` (when trust.yaml names feeds).
    """
    builds = [_ViewBuild(name, admit, kept) for name, admit, kept in views]
    known: dict[SuffixKey, SuffixKey] = {}  # this build's suffixes, made once each
    origin_metas = {name: origin.as_meta() for name, origin in origins.items()}
    offered = 0  # servers with a version not deleted, whether a view serves them or not
    for name, upstream, entries in paced(order, 16):
        offered += any(entry.status != "deleted" for entry in entries)
        origin_meta = origin_metas[upstream]
        hidden = origins[upstream].hidden
        deciding: list[
            tuple[_ViewBuild, list[tuple[Entry, RegistryMeta, Admission, Mark | None]]]
        ] = []
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
            mark = None
            for build, admitted in deciding:
                admission = build.admit(upstream, entry)
                if admission is not None:
                    if meta is None:  # one per entry, shared by the views of this build
                        meta = RegistryMeta(entry, parts.namespace)
                        mark = marks(entry) if marks is not None else None
                    admitted.append((entry, meta, admission, mark))
        folded = name.casefold()
        folded = name if folded == name else folded  # most names are lower case: share them
        for build, admitted in deciding:
            if len(admitted) == 1:  # a third of servers have one version
                latest = admitted[0][0] if admitted[0][0].status != "deleted" else None
            else:
                latest = pick_latest(e for e, _, _, _ in admitted if e.status != "deleted")
            server_items = []
            for entry, meta, (server_json, rules, end), mark in admitted:
                is_latest = entry is latest
                key = (is_latest, upstream, rules, mark)
                shared = known.get(key)
                if shared is None:
                    shared = known[key] = parts.suffix(key, origin_meta)
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
                        shared,
                        end,
                    )
                )
            build.items.extend(server_items)
            build.counts[upstream] = build.counts.get(upstream, 0) + len(server_items)
            reusable, tally, verification = build.admit.end()
            if reusable:
                build.keep[name] = ServerItems(upstream, entries, server_items, tally, verification)
            else:
                build.unkept[name] = tally
    return [view.catalog(parts, search, token, offered) for view in builds]


def plain_view(
    view: str, merged: Merged, origins: Mapping[str, Origin], namespace: str
) -> ViewCatalog:
    """A view serving every merged entry as received (no policy), admitted by default."""

    parts = PartCache(namespace)
    parts.new_build()
    return build_views(order_of(merged), origins, [(view, _Everything(), None)], parts)[0].catalog


class _Everything:
    def begin(self) -> None:
        pass

    def __call__(self, upstream: str, entry: Entry) -> Admission:
        return entry.server_json, ("default",), CLOSE

    def end(self) -> tuple[bool, dict[str, int], dict[str, int]]:
        return False, {}, {}

    def tally(self, hidden: dict[str, int], verification: dict[str, int]) -> None:
        pass
