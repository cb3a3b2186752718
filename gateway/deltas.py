"""A catalog handed over as what changed since the one before: the servers whose items differ.

A build after a sync keeps the item objects of every server it did not decide again, so
the servers that changed between two catalogs are those with an item in one and not in the
other (by object: both are alive while they are compared). `changes` names them, view by
view; `part` is the new catalog with only their items (and every figure and suffix of the
whole: a build's sync times change the bytes of items it kept); `applied` puts them into
the catalog before, as a build in part does (`increment.spliced`). So a worker that serves
the catalog before serves, after `applied`, the same bytes as the one that built the new one.

What comes back through a file is checked before it is used: names in order and each
once, and the part's items only of those servers, in list order. Anything else is a
`StateError` (the worker then asks for the whole catalog).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import filterfalse, pairwise
from operator import attrgetter
from typing import TYPE_CHECKING

from gateway.catalog import Item, Listing, ViewCatalog
from gateway.errors import StateError
from gateway.increment import run, runs, spliced

if TYPE_CHECKING:
    from gateway.snapshot import Snapshot

Changes = dict[str, list[str]]  # view -> the servers whose items are replaced, in list order

WHOLE_SHARE = 0.25  # a part holding more of the catalog's items than this: the whole instead

_name = attrgetter("name")
_suffix = attrgetter("suffix")


def _only(items: Sequence[Item], among: Sequence[Item]) -> list[Item]:
    """The items not among these (as objects: an Item is equal only to itself; at C speed)."""
    return list(filterfalse(set(among).__contains__, items))


def changes(before: Snapshot, after: Snapshot, share: float = WHOLE_SHARE) -> Changes | None:
    """The servers whose items differ between two catalogs, view by view; None when a whole
    catalog is better: another config or other views, or more than `share` of the items."""
    if before.config != after.config or list(before.views) != list(after.views):
        return None
    found: Changes = {}
    most = share * sum(len(catalog.every.items) for catalog in after.views.values())
    items = 0
    for view, catalog in after.views.items():
        old, new = before.views[view].every.items, catalog.every.items
        names = set(map(_name, _only(new, old)))
        names.update(map(_name, _only(old, new)))
        found[view] = sorted(names)
        for name in names:
            start, stop = run(new, name)
            items += stop - start
        if items > most:
            return None
    return found


def part(snapshot: Snapshot, found: Changes) -> Snapshot:
    """The catalog with only the items of the servers `found` names (its figures whole)."""
    views: dict[str, ViewCatalog] = {}
    for view, catalog in snapshot.views.items():
        names = found[view]
        views[view] = replace(
            catalog, every=Listing(runs(catalog.every.items, names)),
            active=Listing(runs(catalog.active.items, names)),
            latest=Listing(runs(catalog.latest.items, names)), memo={},
        )  # fmt: skip
    return replace(snapshot, views=views)


def applied(before: Snapshot, delta: Snapshot, found: Mapping[str, Sequence[str]]) -> Snapshot:
    """The catalog `before` with the servers `found` names replaced by the items of `delta`
    (`part` of the catalog after it), and every figure and suffix of `delta`'s."""
    if list(delta.views) != list(before.views) or set(found) != set(before.views):
        raise StateError("a catalog in part", "its views are not the catalog's")
    if delta.config != before.config:
        raise StateError("a catalog in part", "built with another config")
    views: dict[str, ViewCatalog] = {}
    for view, catalog in before.views.items():
        names = list(found[view])
        if any(a >= b for a, b in pairwise(names)):
            raise StateError("a catalog in part", f"view {view}: its servers are not in order")
        made = delta.views[view]
        listings = []
        for listing, new in ((catalog.every, made.every), (catalog.active, made.active),
                             (catalog.latest, made.latest)):  # fmt: skip
            _check(view, new.items, set(names))
            listings.append(Listing(spliced(listing.items, names, new.items)))
        every, active, latest = listings
        if not set(map(_suffix, every.items)) <= made.suffixes.keys():  # the items kept too
            raise StateError("a catalog in part", f"view {view}: its table of suffixes is short")
        views[view] = replace(made, every=every, active=active, latest=latest, memo={})
    return replace(delta, views=views)


def _check(view: str, items: Sequence[Item], names: set[str]) -> None:
    """The part's items: each of a server named, in list order, each version once."""
    for item in items:
        if item.name not in names:
            raise StateError("a catalog in part", f"view {view}: {item.name} is not named")
    if any(a.key >= b.key for a, b in pairwise(items)):
        raise StateError("a catalog in part", f"view {view}: its items are not in list order")
