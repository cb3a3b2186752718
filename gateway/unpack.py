"""A packed snapshot made live again: the catalog a restart serves at once, before its state
is loaded and built (see `kept`).

Every item is made of the buffer's bytes, copied once per distinct segment (never a view into
the buffer: the file is closed after), byte for byte what the snapshot packed served; its
entries carry what filters and the search index read. Column by column, at C speed where it
can be: a restart's time is mostly this. Compiled (see setup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from gateway.build import Order
from gateway.catalog import Item, Listing, ViewCatalog
from gateway.entry import Entry, ServerJson, Splice
from gateway.errors import StateError
from gateway.increment import runs, spliced
from gateway.packed import DELETED, LATEST, PACKAGES, REMOTES, Packed, PackedView, moment
from gateway.search import SearchIndex, fold
from gateway.served import RegistryMeta, SuffixKey
from gateway.snapshot import Snapshot

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

_MADE = ""  # a registry `_meta` read back is made already: no namespace to make it with


def _decoded(blobs: list[bytes], column: list[int]) -> list[str]:
    """A column of text segments, decoded: one str per distinct segment, shared."""
    texts = {index: blobs[index].decode() for index in set(column)}
    return [texts[index] for index in column]


def _lines(blobs: list[bytes], column: list[int]) -> list[tuple[str, ...]]:
    """A column of sets or tuples written one per line (`pack._joined`)."""
    made: dict[int, tuple[str, ...]] = {}
    for index in set(column):
        text = blobs[index].decode()
        made[index] = tuple(text.split("\n")) if text else ()
    return [made[index] for index in column]


def _sets(blobs: list[bytes], column: list[int]) -> list[frozenset[str]]:
    made = {index: frozenset(lines) for index, lines in zip(column, _lines(blobs, column),
                                                            strict=True)}  # fmt: skip
    return [made[index] for index in column]


def _moments(column: list[int]) -> list[datetime]:
    made = {micros: moment(micros) for micros in set(column)}
    return [made[micros] for micros in column]


@dataclass(frozen=True, slots=True)
class _Entries:
    """The buffer's entries, and per entry what every view's items share: its registry
    `_meta` as served and its name as searches compare it."""

    entries: list[Entry]
    registry: list[RegistryMeta]
    folded: list[str]


def _entries(packed: Packed, blobs: list[bytes]) -> _Entries:
    column = {name: values.tolist() for name, values in packed.entries.items()}
    names = _decoded(blobs, column["name"])
    entries = [
        Entry(name, identity, version, status, published, updated, server, meta, types,
              transports, hosts, bool(flag & PACKAGES), bool(flag & REMOTES), text)
        for (name, identity, version, status, published, updated, server, meta, types,
             transports, hosts, flag, text) in zip(
            names, _decoded(blobs, column["identity"]),
            _decoded(blobs, column["version"]), _decoded(blobs, column["status"]),
            _moments(column["published"]), _moments(column["updated"]),
            [blobs[index] for index in column["server"]],
            [blobs[index] for index in column["meta"]],
            _sets(blobs, column["types"]), _sets(blobs, column["transports"]),
            _lines(blobs, column["hosts"]), column["flags"], _decoded(blobs, column["text"]),
            strict=True,
        )
    ]  # fmt: skip
    registry = [RegistryMeta(entry, _MADE, blobs[index])
                for entry, index in zip(entries, column["registry"], strict=True)]  # fmt: skip
    folded = {name: fold(name) for name in set(names)}
    return _Entries(entries, registry, [folded[name] for name in names])


def _servers(packed: Packed, blobs: list[bytes]) -> list[ServerJson]:
    """Each server part as a view serves it: the upstream's bytes, or a `Splice` of them."""
    return [
        blobs[whole] if start == stop == len(blobs[whole]) and middle == 0
        else Splice(blobs[whole], start, stop, blobs[middle])
        for whole, start, stop, middle in packed.parts()
    ]  # fmt: skip


def _view(
    view: PackedView,
    read: _Entries,
    made: tuple[list[bytes], list[ServerJson], list[SuffixKey], Mapping[SuffixKey, bytes]],
) -> ViewCatalog:
    blobs, servers, keys, suffixes = made
    entries, registry, folded = read.entries, read.registry, read.folded
    column = {name: values.tolist() for name, values in view.columns.items()}
    items: list[Item] = []
    for at, flags, server, suffix, end in zip(
        column["entry"], column["flags"], column["server"], column["suffix"], column["end"],
        strict=True,
    ):  # fmt: skip
        entry = entries[at]
        items.append(Item(
            entry.name, entry.version, folded[at], bool(flags & DELETED), bool(flags & LATEST),
            entry.updated_at, entry.published_at, servers[server], registry[at], keys[suffix],
            blobs[end],
        ))  # fmt: skip
    return ViewCatalog(
        view.name, Listing(items), Listing([items[row] for row in column["active"]]),
        Listing([items[row] for row in column["latest"]]), suffixes,
        dict(view.upstream_counts), offered=view.offered,
    )  # fmt: skip


def unpack(packed: Packed) -> Snapshot:
    """The snapshot the buffer holds, as live objects (the buffer can be released after)."""
    blobs = packed.blobs()
    try:
        read = _entries(packed, blobs)
    except UnicodeDecodeError as exc:
        raise StateError("a packed snapshot", f"a text in it is not UTF-8 ({exc})") from exc
    keys = [key for _, key in packed.suffixes]
    suffixes = {key: blobs[segment] for segment, key in packed.suffixes}
    made = (blobs, _servers(packed, blobs), keys, suffixes)
    views = {name: _view(view, read, made) for name, view in packed.views.items()}
    signals = {name: dict(view.signals) for name, view in packed.views.items() if view.signals}
    return Snapshot(
        views, packed.built_at, hidden=packed.hidden, next_change=packed.next_change,
        stale=packed.stale, verification=packed.verification, signals=signals,
        config=packed.fingerprint,
    )  # fmt: skip


# A catalog read back, its search index's token and the servers to bring the index up to date
# with (`SearchIndex.update`), and the servers changed since the catalog before (None: all).
Followed = tuple[Snapshot, int, Order, "frozenset[str] | None"]


def searched(
    snapshot: Snapshot, search: SearchIndex, since: tuple[Order, frozenset[str]] | None = None
) -> Followed:
    """A read-back snapshot whose views ask `search` once it covers their new token, and
    the servers to bring it up to date with: every view's, in list order, each with the
    entries its items were made of. `since`: the servers of the catalog before and those
    changed since (a catalog handed over in part), so that only those are looked at."""
    if since is None:
        order = _order(snapshot, None)
        changed = None
    else:
        before, changed = since
        names = sorted(changed)
        order = spliced(before, names, _order(snapshot, names), key=_server)
    token = search.next_token()
    views = {
        name: replace(view, search=search, token=token) for name, view in snapshot.views.items()
    }
    return replace(snapshot, views=views), token, order, changed


def unindexed(pending: list[Any] | None, changed: frozenset[str] | None) -> frozenset[str] | None:
    """The servers a search index must look at again after a catalog in part (`changed`)
    when the update still pending (token, order, servers; None: none yet) has not run: its
    servers too. None: every server (a whole catalog, or nothing known of the index)."""
    if pending is None or pending[2] is None or changed is None:
        return None
    earlier: frozenset[str] = pending[2]
    return changed | earlier


def _order(snapshot: Snapshot, names: list[str] | None) -> Order:
    """Every view's servers (or only these, in list order) with the entries of their items."""
    servers: dict[str, dict[int, Entry]] = {}
    for view in snapshot.views.values():
        items = view.every.items
        if names is not None:
            items = runs(items, names)
        for item in items:
            entry = item.registry_meta.entry
            servers.setdefault(entry.name, {})[id(entry)] = entry
    return [(name, "", sorted(servers[name].values(), key=_version)) for name in sorted(servers)]


_version = attrgetter("version")
_server = itemgetter(0)
