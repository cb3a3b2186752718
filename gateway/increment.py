"""Rebuilds in proportion to what changed.

A sync changes a few of an upstream's entries, and a build then needs to decide only the
servers they belong to. What a build keeps for the next (`Increment`): each upstream's entry
list as it was, the merge (each name's owning upstream and versions; each identity's owner
and the upstreams that offer it), the names in list order, and each view's catalog and
figures. The next build compares each upstream's list with the last, position by position (a
feed keeps an unchanged entry's object and, mostly, its place): the names at the positions
that differ, and every name of their identities in any upstream that offers one (an owner
may change), are merged again (`Remerge`). The servers to decide are those, and those
whose items could not be kept last time (a version held back until it comes of age). Each
view's listings are then the last ones with those servers' runs replaced, slices copied at C
speed (`spliced`), and its figures the last ones less what those servers counted and plus
what they count now.

Whatever a whole build would give, this gives too (tests compare them, item by item and
figure by figure, over random syncs). A build that cannot be made so is a whole one (`None`
here): the first, one after a reload, one where a view's items wait on mirror answers or
signals, where an upstream is hidden for staleness, or where a large part of the catalog
changed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

from gateway.build import Built, Order, PartCache, ServerItems
from gateway.catalog import Item, Origin
from gateway.entry import Entry
from gateway.merge import Merged, Source, owner_by_reservation
from gateway.names import identity
from gateway.pacing import Pacer
from gateway.served import SuffixKey

_version = attrgetter("version")
_STEP = 4096  # positions compared (or entries scanned) between two offers of the GIL


def _offered(entries: list[Entry]) -> int:
    """1 when a server has a version not deleted (the upstreams offer it), else 0."""
    for entry in entries:
        if entry.status != "deleted":
            return 1
    return 0


def differing(before: Sequence[Entry], after: Sequence[Entry]) -> set[str]:
    """The names of the entries that are not the same object at the same position, in
    either list: every name whose entries changed is among them."""
    names: set[str] = set()
    pacer = Pacer()
    common = min(len(before), len(after))
    for start in range(0, common, _STEP):
        for index in range(start, min(start + _STEP, common)):
            old = before[index]
            new = after[index]
            if old is not new:
                names.add(old.name)
                names.add(new.name)
        pacer.tick()
    for entry in before[common:]:
        names.add(entry.name)
    for entry in after[common:]:
        names.add(entry.name)
    return names


def _shared(sources: Sequence[Source], owners: dict[str, str]) -> dict[str, int]:
    """The identities offered by another upstream than their owner, or owned by none, with
    the upstreams that offer them (bit i: the i-th source). Most identities are offered by
    their owner alone: they are not kept (see `Increment.offering`)."""
    holders: dict[str, int] = {}
    pacer = Pacer()
    for index, source in enumerate(sources):
        bit = 1 << index
        for count, entry in enumerate(source.entries):
            known = entry.identity
            holders[known] = holders.get(known, 0) | bit
            if count % _STEP == 0:
                pacer.tick()
    bits = {source.upstream: 1 << index for index, source in enumerate(sources)}
    return {known: held for known, held in holders.items()
            if held != bits.get(owners.get(known, ""), 0)}  # fmt: skip


@dataclass(slots=True)
class ViewState:
    """One view's last build: its catalog (whose lists are never changed), the servers whose
    items it kept, what the others hid, and what it hid in all."""

    built: Built
    hidden: dict[str, int]


@dataclass(slots=True)
class Increment:
    """What the last build leaves for the next to start from (see the module)."""

    upstreams: tuple[tuple[str, tuple[str, ...]], ...]  # (name, owns) of each source, in order
    lists: list[Sequence[Entry]]
    servers: dict[str, tuple[str, list[Entry]]]  # name -> (owning upstream, versions in order)
    owners: dict[str, str]  # identity -> the upstream serving it
    shared: dict[str, int]  # identity -> the upstreams offering it, if not its owner alone
    owned: dict[str, int]  # upstream -> servers it owns
    offered: int  # servers with a version not deleted
    names: list[str]  # of the servers, in list order
    order: Order
    views: dict[str, ViewState]

    def next(
        self, sources: Sequence[Source], merged: Remerge, views: dict[str, ViewState]
    ) -> Increment:
        """What a build made in part leaves for the next."""
        return Increment(self.upstreams, [s.entries for s in sources], merged.servers,
                         merged.owners, merged.shared, merged.owned, merged.offered,
                         merged.names, merged.order, views)  # fmt: skip

    @classmethod
    def after_whole(
        cls, sources: Sequence[Source], merged: Merged, names: list[str], order: Order,
        offered: int, views: dict[str, ViewState],
    ) -> Increment:  # fmt: skip
        """What a whole build leaves (its merge, names and order as it made them)."""
        servers = {name: (upstream, entries) for name, upstream, entries in order}
        owned: dict[str, int] = {}
        for upstream, _ in servers.values():
            owned[upstream] = owned.get(upstream, 0) + 1
        shared = _shared(sources, merged.owners)
        return cls(_shape(sources), [s.entries for s in sources], servers, merged.owners,
                   shared, owned, offered, names, order, views)  # fmt: skip

    def offering(self, known: str) -> int:
        """The upstreams that offer a name of this identity (bit i: the i-th source)."""
        held = self.shared.get(known)
        if held is not None:
            return held
        owner = self.owners.get(known)
        if owner is None:
            return 0
        return 1 << [name for name, _ in self.upstreams].index(owner)


def _shape(sources: Sequence[Source]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((source.upstream, tuple(source.owns)) for source in sources)


@dataclass(slots=True)
class Remerge:
    """The merge after a sync, made from the last one and what changed."""

    servers: dict[str, tuple[str, list[Entry]]]
    owners: dict[str, str]
    shared: dict[str, int]
    owned: dict[str, int]
    offered: int
    names: list[str]
    order: Order
    affected: set[str]  # every name merged again (served now, before, or both)
    new_identities: list[str]  # identities served now that were not before


_RESORT = 512  # names come or go past this many: the names are sorted again, all at once


def remerge(last: Increment, sources: Sequence[Source]) -> Remerge | None:
    """The merge of these sources from the last one, or None when their upstreams (or what
    they own) are not the last build's."""
    if _shape(sources) != last.upstreams:
        return None
    changed = [differing(before, source.entries) if before is not source.entries else set()
               for before, source in zip(last.lists, sources, strict=True)]  # fmt: skip
    names = set().union(*changed)
    identities = {identity(name) for name in names}
    groups = _groups(last, sources, changed, identities)
    affected = set(names)
    for group in groups:
        affected.update(group)
    servers, owners, shared = dict(last.servers), dict(last.owners), dict(last.shared)
    owned, offered = dict(last.owned), last.offered
    for name in affected:
        old = servers.pop(name, None)
        if old is not None:
            owned[old[0]] -= 1
            offered -= _offered(old[1])
    for known in identities:
        owners.pop(known, None)
        shared.pop(known, None)
    offers: dict[str, list[tuple[int, str, list[Entry]]]] = {}
    for index, group in enumerate(groups):
        for name, entries in group.items():
            offers.setdefault(entries[0].identity, []).append((index, name, entries))
    any_owns = any(source.owns for source in sources)
    index_of = {source.upstream: index for index, source in enumerate(sources)}
    new_identities: list[str] = []
    for known, offered_by in offers.items():
        bits = 0
        for index, _, _ in offered_by:
            bits |= 1 << index
        owner = owner_by_reservation(known, sources) if any_owns else None
        if owner is None:
            owner = sources[offered_by[0][0]].upstream
        served = [(n, e) for i, n, e in offered_by if sources[i].upstream == owner]
        if not served:
            shared[known] = bits
            continue  # owned by an upstream that does not offer it: nobody serves it
        if bits != 1 << index_of[owner]:
            shared[known] = bits
        if known not in last.owners:
            new_identities.append(known)
        owners[known] = owner
        for name, entries in served:
            versions = sorted(entries, key=_version) if len(entries) > 1 else entries
            servers[name] = (owner, versions)
            owned[owner] = owned.get(owner, 0) + 1
            offered += _offered(versions)
    names_now, order = _ordered(last, servers, affected)
    return Remerge(servers, owners, shared, owned, offered, names_now, order, affected,
                   new_identities)  # fmt: skip


def _groups(
    last: Increment, sources: Sequence[Source], changed: list[set[str]], identities: set[str]
) -> list[dict[str, list[Entry]]]:
    """Per source, its names of these identities and their entries (in its order): read
    from every source that changed, and from those that offered one of them before."""
    groups: list[dict[str, list[Entry]]] = []
    pacer = Pacer()
    for index, (source, diff) in enumerate(zip(sources, changed, strict=True)):
        bit = 1 << index
        wanted = identities if diff else {i for i in identities if last.offering(i) & bit}
        group: dict[str, list[Entry]] = {}
        if wanted:
            for count, entry in enumerate(source.entries):
                if entry.identity in wanted:
                    group.setdefault(entry.name, []).append(entry)
                if count % _STEP == 0:
                    pacer.tick()
        groups.append(group)
    return groups


def _ordered(
    last: Increment, servers: dict[str, tuple[str, list[Entry]]], affected: set[str]
) -> tuple[list[str], Order]:
    """The names in list order, and the order, from the last ones."""
    gone = sorted(name for name in affected if name not in servers and name in last.servers)
    new = sorted(name for name in affected if name in servers and name not in last.servers)
    if len(gone) + len(new) > _RESORT:
        names = sorted(servers)
        return names, [(name, *servers[name]) for name in names]
    names, order = list(last.names), list(last.order)
    for name in reversed(gone):
        at = bisect_left(names, name)
        del names[at]
        del order[at]
    for name in new:
        at = bisect_left(names, name)
        names.insert(at, name)
        order.insert(at, (name, *servers[name]))
    for name in affected:
        if name in servers and name in last.servers:
            order[bisect_left(names, name)] = (name, *servers[name])
    return names, order


def deciding(last: Increment, merge: Remerge, refreshed: set[str]) -> list[str]:
    """The servers a build decides again, in list order: those merged again, those whose
    items some view could not keep, and those a new advisory feed may say otherwise of."""
    names = set(merge.affected)
    for view in last.views.values():
        names.update(view.built.unkept)
    names.update(name for name in refreshed if name in merge.servers)
    return sorted(names)


def _name(item: Any) -> str:  # an Item's server (`spliced` takes other rows, by `key`)
    name: str = item.name
    return name


T = TypeVar("T")


def spliced(
    before: Sequence[T], names: list[str], made: Sequence[T], key: Callable[[T], str] = _name
) -> list[T]:
    """`before` with the runs of these servers (in list order) replaced by their items in
    `made` (the items of these servers alone, in list order); `key`: an item's server."""
    out: list[T] = []
    last = 0
    at = 0
    size = len(made)
    for name in names:
        start = bisect_left(before, name, lo=last, key=key)
        end = bisect_right(before, name, lo=start, key=key)
        out += before[last:start]
        stop = at
        while stop < size and key(made[stop]) == name:
            stop += 1
        out += made[at:stop]
        at = stop
        last = end
    out += before[last:]
    return out


def run(items: Sequence[Item], name: str) -> tuple[int, int]:
    """Where a server's items are in a listing (in list order): start and stop."""
    start = bisect_left(items, name, key=_name)
    return start, bisect_right(items, name, lo=start, key=_name)


def run_length(items: Sequence[Item], name: str) -> int:
    start, stop = run(items, name)
    return stop - start


def runs(items: Sequence[Item], names: list[str]) -> list[Item]:
    """The items of these servers (names in list order), in list order."""
    out: list[Item] = []
    for name in names:
        start, stop = run(items, name)
        out += items[start:stop]
    return out


def view_figures(
    last: Increment, merge: Remerge, view: ViewState, decided: list[str], made: Built,
    hidden_now: dict[str, int],
) -> tuple[dict[str, int], dict[str, int]]:  # fmt: skip
    """A view's upstream counts and hidden tally: the last ones, less what the servers
    decided again counted then, plus what they count now (`made`, `hidden_now`)."""
    before = view.built
    counts = dict(before.catalog.upstream_counts)
    hidden = dict(view.hidden)
    for name in decided:
        old = last.servers.get(name)
        if old is not None:
            counts[old[0]] -= run_length(before.catalog.every.items, name)
        kept: ServerItems | None = before.keep.get(name)
        tally = kept.tally if kept is not None else before.unkept.get(name)
        for reason, count in (tally or {}).items():
            hidden[reason] -= count
    for upstream, count in made.catalog.upstream_counts.items():
        counts[upstream] = counts.get(upstream, 0) + count
    for reason, count in hidden_now.items():
        hidden[reason] = hidden.get(reason, 0) + count
    counts = {u: n for u, n in sorted(counts.items()) if merge.owned.get(u, 0) > 0}
    return counts, {reason: n for reason, n in sorted(hidden.items()) if n}


def carry_suffixes(
    last: Increment, parts: PartCache, origins: dict[str, Origin], prune: bool
) -> None:
    """Put in this build's table of suffixes the keys of the last one (the servers not decided
    again name them), with this build's sync times and staleness. With `prune`, only those
    the last build's items name (a key no item names any more is carried until then)."""
    table: Iterable[SuffixKey] = next(iter(last.views.values())).built.catalog.suffixes
    if prune:
        used: set[SuffixKey] = set()
        pacer = Pacer()
        for view in last.views.values():
            for count, item in enumerate(view.built.catalog.every.items):
                used.add(item.suffix)
                if count % _STEP == 0:
                    pacer.tick()
        table = used
    metas = {name: origin.as_meta() for name, origin in origins.items()}
    for key in table:
        meta = metas.get(key[1])
        if meta is not None and key not in parts.suffixes:
            parts.suffix(key, meta)


def any_hidden(origins: dict[str, Origin]) -> bool:
    return any(origin.hidden for origin in origins.values())


def kept_without(
    kept: dict[str, ServerItems] | None, refreshed: set[str]
) -> dict[str, ServerItems] | None:
    """A view's kept servers but those a new feed may say otherwise of."""
    if kept is None or not refreshed:
        return kept
    return {name: items for name, items in kept.items() if name not in refreshed}


def kept_for(
    kept: dict[str, ServerItems], decided: list[str], refreshed: set[str]
) -> dict[str, ServerItems]:
    """What a build in part may keep of the servers it decides."""
    return {n: kept[n] for n in decided if n in kept and n not in refreshed}
