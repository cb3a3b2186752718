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
    from threading import Event

    from gateway.catalog import Item, ViewCatalog
    from gateway.served import SuffixKey
    from gateway.snapshot import Snapshot

_CHUNK = 1 << 20  # bytes gathered before they are hashed and written


class _Segments:
    """Distinct byte strings, once each: by object (what the snapshot shares) or by value."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = [b""]  # segment 0: empty (a kept server's middle)
        self._by_object: dict[int, int] = {}
        self._by_value: dict[bytes, int] = {b"": 0}

    def of(self, blob: bytes) -> int:
        """The segment of a byte string the snapshot holds (kept alive by it meanwhile)."""
        found = self._by_object.get(id(blob))
        if found is None:
            found = self._by_object[id(blob)] = self.valued(blob)
        return found

    def valued(self, blob: bytes) -> int:
        found = self._by_value.get(blob)
        if found is None:
            found = self._by_value[blob] = len(self.blobs)
            self.blobs.append(blob)
        return found

    def text(self, value: str) -> int:
        return self.valued(value.encode())


def _joined(values: frozenset[str] | tuple[str, ...]) -> str:
    return "\n".join(sorted(values) if isinstance(values, frozenset) else values)


class _Packer:
    def __init__(self, stop: Event | None = None) -> None:
        self.stop = stop
        self.segments = _Segments()
        self.parts: dict[str, array[int]] = {field: array("I") for field in PARTS}
        self.entries: dict[str, array[int]] = {f: array("I") for f in ENTRY_U32}
        self.entries.update({f: array("q") for f in ENTRY_I64})
        self.suffixes: list[list[Any]] = []
        self._suffix_rows: dict[tuple[SuffixKey, int], int] = {}
        self._entry_rows: dict[int, int] = {}
        self._parts_by_object: dict[int, int] = {}
        self._deferred: dict[int, tuple[int, int]] = {}
        self._keep: list[object] = []  # what was made here, alive until packed (ids stay unique)

    def _part(self, server: bytes | Splice) -> int:
        found = self._parts_by_object.get(id(server))
        if found is not None:
            return found
        if isinstance(server, Splice):
            whole, start, stop = server.whole, server.start, server.end
            middle = self.segments.valued(server.middle)
        else:
            whole, start, stop, middle = server, len(server), len(server), 0
        found = self._parts_by_object[id(server)] = len(self.parts["whole"])
        self._keep.append(server)
        for field, value in zip(PARTS, (self.segments.of(whole), start, stop, middle),
                                strict=True):  # fmt: skip
            self.parts[field].append(value)
        return found

    def _server(self, item: Item) -> tuple[int, int]:
        """The item's server part and end segment, a deferred rewrite made now."""
        server = item.server_json
        if not isinstance(server, Deferred):
            return self._part(server), self.segments.of(item.end)
        made = self._deferred.get(id(server))
        if made is None:
            json, end = server.made()
            made = self._deferred[id(server)] = (self._part(json), self.segments.of(end))
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
                  segments.of(meta.made()), segments.text(entry.text),
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
        columns["active"] = array("I", (rows[id(item)] for item in catalog.active.items))
        columns["latest"] = array("I", (rows[id(item)] for item in catalog.latest.items))
        return columns


Section = tuple[str, "array[int] | list[bytes]"]


def _size(data: array[int] | list[bytes]) -> int:
    return len(data) * data.itemsize if isinstance(data, array) else sum(map(len, data))


def _code(data: array[int] | list[bytes]) -> str:
    return data.typecode if isinstance(data, array) else "B"


def write_pack(snapshot: Snapshot, out: IO[bytes], stop: Event | None = None) -> int:
    """Write the snapshot packed to a seekable binary file; returns the bytes written. Its
    config's fingerprint goes with it (see `kept`: another config does not serve it).
    `Stopped` as soon as `stop` is set."""
    packer = _Packer(stop)
    sections: list[Section] = []
    views: list[dict[str, Any]] = []
    for name, catalog in snapshot.views.items():
        sections.extend((f"{name}.{field}", column)
                        for field, column in packer.view(catalog).items())  # fmt: skip
        signals = snapshot.signals.get(name, {})
        views.append({"name": name, "upstreamCounts": dict(catalog.upstream_counts),
                      "offered": catalog.offered,
                      "signals": [[s, state, n] for (s, state), n in signals.items()]})  # fmt: skip
    blobs = packer.segments.blobs
    bounds = array("Q", [0])
    for blob in blobs:
        bounds.append(bounds[-1] + len(blob))
    entries = packer.entries
    sections[:0] = [("segments", blobs), ("bounds", bounds),
                    *((f"parts.{f}", packer.parts[f]) for f in PARTS),
                    *((f"entries.{f}", column) for f, column in entries.items())]  # fmt: skip
    table: dict[str, list[object]] = {}
    offset = 0
    for name, data in sections:
        size = _size(data)
        table[name] = [offset, size, _code(data)]
        offset += size + aligned(size)
    contents = orjson.dumps({
        "fingerprint": snapshot.config, "builtAt": micros(snapshot.built_at),
        "stale": list(snapshot.stale), "hidden": snapshot.hidden,
        "verification": snapshot.verification,
        "nextChange": None if snapshot.next_change is None else micros(snapshot.next_change),
        "views": views, "suffixes": packer.suffixes, "sections": table,
    })  # fmt: skip
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
        size = 0
        if isinstance(data, array):
            raw = memoryview(data).cast("B")
            body.add(raw)
            size = len(raw)
        else:
            for blob in data:
                body.add(blob)
                size += len(blob)
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
    _write(out, contents, [("sections", [sections])])
    return out.getvalue()
