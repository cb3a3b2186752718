"""A packed snapshot served in place from its buffer (a restart's kept catalog, see `kept`):
each segment, entry and item is made the first time something reads it (a request, a scan,
a pack), not all 500k of them before the first answer. What is made is kept, so each is made
once and reads always see the same object, as in a catalog unpacked whole (`unpack`).

The buffer lives as long as the catalog: released with it (`released`), or when its parts
are collected, whichever comes first. Before anything is served it passes every check
`unpack` relies on: `Packed`'s numbers, the digest, and every segment UTF-8 on its own (a
text cut mid-character would otherwise fail one request later, not the read).
"""

from __future__ import annotations

import codecs
import threading
import weakref
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, overload

from gateway.catalog import Item, Listing, ViewCatalog
from gateway.entry import Entry, ServerJson, Splice
from gateway.errors import StateError
from gateway.packed import DELETED, LATEST, PACKAGES, REMOTES, Packed, PackedView, moment
from gateway.search import fold
from gateway.served import RegistryMeta
from gateway.snapshot import Snapshot

if TYPE_CHECKING:
    from datetime import datetime

_MADE = ""  # a registry `_meta` read back is made already (as in `unpack`)
_CHUNK = 1 << 20  # bytes decoded at a time while checking the segments are UTF-8
_CONTINUATION = bytes(1 if 0x80 <= value < 0xC0 else 0 for value in range(256))


def check_text(packed: Packed) -> None:
    """Every segment is UTF-8 on its own: the whole decodes, and no segment starts inside a
    character. A `StateError` otherwise (the same refusal `unpack` makes)."""
    segments, bounds = packed.segments_and_bounds()
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for at in range(0, len(segments), _CHUNK):
            decoder.decode(segments[at : at + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise StateError("a packed snapshot", f"a text in it is not UTF-8 ({exc})") from exc
    starts = [start for start in bounds.tolist() if start < len(segments)]
    firsts = bytes(itemgetter(*starts)(segments)) if len(starts) > 1 else bytes(segments[:1])
    if 1 in firsts.translate(_CONTINUATION):
        raise StateError("a packed snapshot", "a text in it is cut inside a character")


class Parts:
    """What every view of a snapshot served in place shares, made on first read: segments,
    entries,
    their registry `_meta`s, server parts. One lock: a request and a worker thread (a scan,
    a pack) may read the same row at once, and must get the same object."""

    def __init__(self, packed: Packed) -> None:
        self.packed = packed
        # Packed and its views refer to each other: a cycle the collector may never free once
        # frozen (`gc.freeze`). The buffer goes with these parts, which no cycle holds.
        weakref.finalize(self, packed.release)
        self.lock = threading.Lock()
        self.keys = [key for _, key in packed.suffixes]
        self._columns = packed.entries
        self._blobs: dict[int, bytes] = {}
        self._texts: dict[int, str] = {}
        self._lines: dict[int, tuple[str, ...]] = {}
        self._sets: dict[int, frozenset[str]] = {}
        self._moments: dict[int, datetime] = {}
        self._folded: dict[str, str] = {}
        count = len(self._columns["name"])
        self._entries: list[Entry | None] = [None] * count
        self._registry: list[RegistryMeta | None] = [None] * count
        self._servers: list[ServerJson | None] = [None] * packed.part_count()

    def blob(self, index: int) -> bytes:
        made = self._blobs.get(index)
        if made is None:
            made = self._blobs[index] = bytes(self.packed.segment(index))
        return made

    def _text(self, field: str, entry: int) -> str:
        index = self._columns[field][entry]
        made = self._texts.get(index)
        if made is None:  # decoded from the buffer: no byte string kept beside it
            made = self._texts[index] = str(self.packed.segment(index), "utf-8")
        return made

    def _line_tuple(self, field: str, entry: int) -> tuple[str, ...]:
        index = self._columns[field][entry]
        made = self._lines.get(index)
        if made is None:
            text = str(self.packed.segment(index), "utf-8")
            made = self._lines[index] = tuple(text.split("\n")) if text else ()
        return made

    def _set(self, field: str, entry: int) -> frozenset[str]:
        index = self._columns[field][entry]
        made = self._sets.get(index)
        if made is None:
            made = self._sets[index] = frozenset(self._line_tuple(field, entry))
        return made

    def _moment(self, field: str, entry: int) -> datetime:
        micros = self._columns[field][entry]
        made = self._moments.get(micros)
        if made is None:
            made = self._moments[micros] = moment(micros)
        return made

    def entry(self, index: int) -> Entry:
        """The entry of a row of the entries' columns (call it holding `lock`)."""
        made = self._entries[index]
        if made is None:
            flags = self._columns["flags"][index]
            made = self._entries[index] = Entry(
                self._text("name", index), self._text("identity", index),
                self._text("version", index), self._text("status", index),
                self._moment("published", index), self._moment("updated", index),
                self.blob(self._columns["server"][index]), self.blob(self._columns["meta"][index]),
                self._set("types", index), self._set("transports", index),
                self._line_tuple("hosts", index), bool(flags & PACKAGES), bool(flags & REMOTES),
                self._text("text", index),
            )  # fmt: skip
        return made

    def registry(self, index: int) -> RegistryMeta:
        made = self._registry[index]
        if made is None:
            blob = self.blob(self._columns["registry"][index])
            made = self._registry[index] = RegistryMeta(self.entry(index), _MADE, blob)
        return made

    def folded(self, name: str) -> str:
        made = self._folded.get(name)
        if made is None:
            made = self._folded[name] = fold(name)
        return made

    def let_go(self) -> list[list[Any]]:
        """What was made, as lists for `released` to empty a slice at a time (then `release`
        the buffer): once nothing reads the catalog any more."""
        with self.lock:
            made: list[list[Any]] = [self._entries, self._registry, self._servers]
            for cache in (self._blobs, self._texts, self._lines, self._sets, self._moments,
                          self._folded):  # fmt: skip
                made.append(list(cache.values()))
                cache.clear()
            self._entries, self._registry, self._servers = [], [], []
        return made

    def server(self, index: int) -> ServerJson:
        """A server part as a view serves it: the upstream's bytes, or a `Splice` of them."""
        made = self._servers[index]
        if made is None:
            whole, start, stop, middle = self.packed.part_segments(index)
            blob = self.blob(whole)
            if start == stop == len(blob) and middle == 0:
                made = blob
            else:
                made = Splice(blob, start, stop, self.blob(middle))
            self._servers[index] = made
        return made


class _Listed(Sequence[Item]):
    """Items by row, read as a list reads (indexes, negative ones too, slices, iteration)."""

    def _item(self, row: int) -> Item:
        raise NotImplementedError

    @overload
    def __getitem__(self, at: int) -> Item: ...

    @overload
    def __getitem__(self, at: slice) -> list[Item]: ...

    def __getitem__(self, at: int | slice) -> Item | list[Item]:
        if isinstance(at, slice):
            return [self._item(row) for row in range(*at.indices(len(self)))]
        return self._item(range(len(self))[at])  # an IndexError as a list's

    def __iter__(self) -> Iterator[Item]:
        for row in range(len(self)):
            yield self._item(row)


class PlacedItems(_Listed):
    """A view's items in list order, each made the first time it is read."""

    def __init__(self, parts: Parts, view: PackedView) -> None:
        self._parts = parts
        self._columns = view.columns
        self._made: list[Item | None] = [None] * view.rows()

    def __len__(self) -> int:
        return len(self._made)

    def _item(self, row: int) -> Item:
        item = self._made[row]
        return item if item is not None else self._make(row)

    def _make(self, row: int) -> Item:
        parts, columns = self._parts, self._columns
        with parts.lock:
            item = self._made[row]
            if item is not None:  # another thread made it meanwhile
                return item
            at, flags = columns["entry"][row], columns["flags"][row]
            entry = parts.entry(at)
            item = self._made[row] = Item(
                entry.name, entry.version, parts.folded(entry.name), bool(flags & DELETED),
                bool(flags & LATEST), entry.updated_at, entry.published_at,
                parts.server(columns["server"][row]), parts.registry(at),
                parts.keys[columns["suffix"][row]], parts.blob(columns["end"][row]),
            )  # fmt: skip
            return item

    def made(self) -> list[list[Any]]:
        """What this view and the parts it shares made, as lists for `released` to empty a
        slice at a time (then `release`)."""
        return [self._made, *self._parts.let_go()]

    def release(self) -> None:
        """Let go of the buffer now (before the catalog's last reference goes)."""
        self._parts.packed.release()


class PlacedRows(_Listed):
    """A subset of a view's items (`active`, `latest`) by row: the same objects as `every`'s."""

    def __init__(self, every: PlacedItems, rows: Sequence[int]) -> None:
        self._every = every
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def _item(self, row: int) -> Item:
        return self._every._item(self._rows[row])


def in_place(packed: Packed) -> Snapshot:
    """The snapshot the buffer holds, made as it is read: the buffer must stay as it is for
    as long as the snapshot lives (private to it: never a file another process can cut
    short under it, and never released by the caller)."""
    check_text(packed)
    parts = Parts(packed)
    suffixes = {key: parts.blob(segment) for segment, key in packed.suffixes}
    views: dict[str, ViewCatalog] = {}
    signals = {}
    for name, view in packed.views.items():
        every = PlacedItems(parts, view)
        views[name] = ViewCatalog(
            view.name, Listing(every), Listing(PlacedRows(every, view.columns["active"])),
            Listing(PlacedRows(every, view.columns["latest"])), suffixes,
            dict(view.upstream_counts), offered=view.offered,
        )  # fmt: skip
        if view.signals:
            signals[name] = dict(view.signals)
    return Snapshot(
        views, packed.built_at, hidden=packed.hidden, next_change=packed.next_change,
        stale=packed.stale, verification=packed.verification, signals=signals,
        config=packed.fingerprint,
    )  # fmt: skip
