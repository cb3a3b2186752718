"""Writing a snapshot as one buffer (the layout is `packed`'s): streamed to a file a chunk at
a time, hashed as it goes, so that packing a catalog costs its tables, not a second copy of
its bytes in memory.

`pack` makes what a build left deferred (mirror rewrites, registry `_meta`s) as it goes: the
buffer is the snapshot with every byte made. It reads the snapshot, never changes what it
serves: run it in a worker thread, while the snapshot is still being read (not released).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from array import array
from typing import IO, TYPE_CHECKING, Any

import orjson

from gateway.entry import Splice
from gateway.errors import Stopped
from gateway.packed import (
    DELETED,
    ENTRY_I64,
    ENTRY_U32,
    FORMAT,
    HEADER,
    LATEST,
    MAGIC,
    PACKAGES,
    PARTS,
    REMOTES,
    ROW_U32,
    aligned,
    micros,
)
from gateway.served import Deferred

if TYPE_CHECKING:
    from collections.abc import Mapping
    from threading import Event

    from gateway.catalog import Item, ViewCatalog
    from gateway.served import SuffixKey
    from gateway.snapshot import Snapshot

_CHUNK = 1 << 20  # bytes gathered before they are hashed and written


class _Segments:
    """Distinct byte strings, written to a spool as they come (the segments section): byte
    strings once each by value (the dict holds those the snapshot holds, and what is made
    here, such as deferred rewrites, until packed), texts once each."""

    def __init__(self, spool: IO[bytes]) -> None:
        self.spool = spool
        self.bounds = array("Q", [0])
        self._by_value: dict[bytes, int] = {}  # keys the snapshot holds: no copies
        self._texts: dict[str, int] = {}
        self.of(b"")  # segment 0: empty (a kept server's middle)

    def _write(self, blob: bytes) -> int:
        self.spool.write(blob)
        bounds = self.bounds
        bounds.append(bounds[-1] + len(blob))
        return len(bounds) - 2

    def of(self, blob: bytes) -> int:
        """A byte string the snapshot holds (the dict's key is no copy)."""
        found = self._by_value.get(blob)
        if found is None:
            found = self._by_value[blob] = self._write(blob)
        return found

    def text(self, value: str) -> int:
        found = self._texts.get(value)
        if found is None:
            found = self._texts[value] = self._write(value.encode())
        return found


def _joined(values: frozenset[str] | tuple[str, ...]) -> str:
    return "\n".join(sorted(values) if isinstance(values, frozenset) else values)


class _Packer:
    def __init__(self, spool: IO[bytes], stop: Event | None = None) -> None:
        self.stop = stop
        self.segments = _Segments(spool)
        self.parts: dict[str, array[int]] = {field: array("I") for field in PARTS}
        self.entries: dict[str, array[int]] = {f: array("I") for f in ENTRY_U32}
        self.entries.update({f: array("q") for f in ENTRY_I64})
        self.suffixes: list[list[Any]] = []
        self._suffix_rows: dict[tuple[SuffixKey, int], int] = {}
        # by the id of an object the snapshot holds (alive meanwhile: ids stay unique)
        self._entry_rows: dict[int, int] = {}
        self._parts_by_object: dict[int, int] = {}
        self._deferred: dict[int, tuple[int, int]] = {}

    def _new_part(self, server: bytes | Splice) -> int:
        """A server object's part: a Splice's whole, span and middle, or bytes kept whole."""
        segments = self.segments
        if isinstance(server, Splice):
            values = (segments.of(server.whole), server.start, server.end,
                      segments.of(server.middle))  # fmt: skip
        else:
            values = (segments.of(server), len(server), len(server), 0)
        for field, value in zip(PARTS, values, strict=True):
            self.parts[field].append(value)
        return len(self.parts["whole"]) - 1

    def _part(self, server: bytes | Splice) -> int:
        """A server object the snapshot holds: its part, once (by its id: it stays alive)."""
        found = self._parts_by_object.get(id(server))
        if found is None:
            found = self._parts_by_object[id(server)] = self._new_part(server)
        return found

    def _server(self, item: Item) -> tuple[int, int]:
        """The item's server part and end segment, a deferred rewrite made now."""
        server = item.server_json
        if not isinstance(server, Deferred):
            return self._part(server), self.segments.of(item.end)
        made = self._deferred.get(id(server))
        if made is None:
            json, end = server.made(keep=False)
            made = self._deferred[id(server)] = (self._new_part(json), self.segments.of(end))
        return made

    def _entry(self, item: Item) -> int:
        meta = item.registry_meta
        entry = meta.entry
        found = self._entry_rows.get(id(entry))
        if found is not None:
            return found
        found = self._entry_rows[id(entry)] = len(self.entries["name"])
        segments = self.segments
        flags = (PACKAGES if entry.has_packages else 0) | (REMOTES if entry.has_remotes else 0)
        values = (segments.text(entry.name), segments.text(entry.version),
                  segments.text(entry.identity), segments.text(entry.status),
                  segments.of(entry.server_json), segments.of(entry.meta_json),
                  segments.of(meta.made(keep=False)), segments.text(entry.text),
                  segments.text(_joined(entry.registry_types)),
                  segments.text(_joined(entry.transports)),
                  segments.text(_joined(entry.remote_hosts)), flags)  # fmt: skip
        for field, value in zip(ENTRY_U32, values, strict=True):
            self.entries[field].append(value)
        self.entries["published"].append(micros(entry.published_at))
        self.entries["updated"].append(micros(entry.updated_at))
        return found

    def _suffix(self, key: SuffixKey, suffix: bytes) -> int:
        segment = self.segments.of(suffix)
        found = self._suffix_rows.get((key, segment))
        if found is None:
            found = self._suffix_rows[(key, segment)] = len(self.suffixes)
            is_latest, upstream, rules, mark = key
            self.suffixes.append([segment, is_latest, upstream, list(rules), mark])
        return found

    def view(self, catalog: ViewCatalog) -> dict[str, array[int]]:
        columns: dict[str, array[int]] = {f: array("I") for f in ROW_U32}
        rows: dict[int, int] = {}
        stop = self.stop
        for row, item in enumerate(catalog.every.items):
            if stop is not None and not row & 4095 and stop.is_set():
                raise Stopped
            rows[id(item)] = row
            server, end = self._server(item)
            flags = (DELETED if item.deleted else 0) | (LATEST if item.is_latest else 0)
            values = (self._entry(item), flags, server,
                      self._suffix(item.suffix, catalog.suffixes[item.suffix]), end)  # fmt: skip
            for field, value in zip(ROW_U32, values, strict=True):
                columns[field].append(value)
        for key, suffix in catalog.suffixes.items():  # every one: a catalog in part serves
            self._suffix(key, suffix)  # with them what the catalog before holds (`deltas`)
        columns["active"] = array("I", (rows[id(item)] for item in catalog.active.items))
        columns["latest"] = array("I", (rows[id(item)] for item in catalog.latest.items))
        return columns


Section = tuple[str, "array[int] | bytes | IO[bytes]"]  # a spool: from its start to its end


def _size(data: array[int] | bytes | IO[bytes]) -> int:
    if isinstance(data, array):
        return len(data) * data.itemsize
    return len(data) if isinstance(data, bytes) else data.seek(0, io.SEEK_END)


def _code(data: array[int] | bytes | IO[bytes]) -> str:
    return data.typecode if isinstance(data, array) else "B"


def _view_contents(snapshot: Snapshot, view: str) -> dict[str, Any]:
    catalog = snapshot.views[view]
    signals = snapshot.signals.get(view, {})
    return {"name": view, "upstreamCounts": dict(catalog.upstream_counts),
            "offered": catalog.offered,
            "signals": [[signal, state, n] for (signal, state), n in signals.items()]}  # fmt: skip


def write_pack(
    snapshot: Snapshot, out: IO[bytes], stop: Event | None = None, spool: str | None = None,
    changes: Mapping[str, list[str]] | None = None,
) -> int:  # fmt: skip
    """Write the snapshot packed to a seekable binary file; returns the bytes written. Its
    config's fingerprint goes with it (see `kept`: another config does not serve it).
    `Stopped` as soon as `stop` is set. Its segments go first to a temporary file in the
    directory `spool` (in memory without one) as they are found, and are copied after.
    `changes`: the snapshot is a catalog in part, of these servers (see `deltas`)."""
    with (
        io.BytesIO()
        if spool is None
        else tempfile.TemporaryFile(dir=spool, buffering=_CHUNK) as segments
    ):
        packer = _Packer(segments, stop)
        sections: list[Section] = []
        for view, catalog in snapshot.views.items():
            sections.extend((f"{view}.{field}", column)
                            for field, column in packer.view(catalog).items())  # fmt: skip
        entries = packer.entries.items()
        sections[:0] = [("bounds", packer.segments.bounds),
                        *((f"parts.{f}", packer.parts[f]) for f in PARTS),
                        *((f"entries.{f}", column) for f, column in entries)]  # fmt: skip
        sections.append(("segments", segments))
        table: dict[str, list[object]] = {}
        offset = 0
        for section, data in sections:
            size = _size(data)
            table[section] = [offset, size, _code(data)]
            offset += size + aligned(size)
        contents = orjson.dumps({
            "fingerprint": snapshot.config, "builtAt": micros(snapshot.built_at),
            "stale": list(snapshot.stale), "hidden": snapshot.hidden,
            "verification": snapshot.verification,
            "nextChange": None if snapshot.next_change is None else micros(snapshot.next_change),
            "views": [_view_contents(snapshot, view) for view in snapshot.views],
            "suffixes": packer.suffixes, "sections": table,
            **({} if changes is None else {"changes": changes}),
        })  # fmt: skip
        del packer  # what it looked things up by, let go before the copy
        return _write(out, contents, sections, stop)


class _Out:
    """The sections after the header, hashed and written a chunk at a time."""

    def __init__(self, out: IO[bytes], stop: Event | None) -> None:
        self.out = out
        self.stop = stop
        self.digest = hashlib.sha256()
        self.pending = bytearray()
        self.written = 0

    def add(self, data: bytes | memoryview) -> None:
        self.pending += data
        if len(self.pending) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        self.digest.update(self.pending)
        self.out.write(self.pending)
        self.written += len(self.pending)
        self.pending.clear()


def _write(
    out: IO[bytes], contents: bytes, sections: list[Section], stop: Event | None = None
) -> int:
    """The header, the contents and the sections (each at its multiple of 8), hashed."""
    start = out.tell()
    out.write(b"\0" * HEADER.size)
    body = _Out(out, stop)
    body.add(contents)
    body.add(b"\0" * aligned(HEADER.size + len(contents)))
    for _, data in sections:
        if isinstance(data, array):
            raw = memoryview(data).cast("B")
            body.add(raw)
            size = len(raw)
        elif isinstance(data, bytes):
            body.add(data)
            size = len(data)
        else:  # a spool, from its start
            size = 0
            data.seek(0)
            while chunk := data.read(_CHUNK):
                body.add(chunk)
                size += len(chunk)
        body.add(b"\0" * aligned(size))
    body.flush()
    out.seek(start)
    out.write(HEADER.pack(MAGIC, FORMAT, len(contents), body.digest.digest()))
    out.seek(start + HEADER.size + body.written)
    return HEADER.size + body.written


def pack(snapshot: Snapshot) -> bytes:
    """The snapshot as one buffer, in memory (see `write_pack`)."""
    out = io.BytesIO()
    write_pack(snapshot, out)
    return out.getvalue()


def seal(contents: bytes, sections: bytes) -> bytes:
    """A buffer of these contents and sections (already laid out): what tests change and
    seal again, to show a reader checks more than the digest."""
    out = io.BytesIO()
    _write(out, contents, [("sections", sections)])
    return out.getvalue()
