"""The snapshot as one buffer: every view's items as distinct byte segments and tables of
numbers, laid out so that a file (or shared memory) holds it as it is and a reader uses it in
place, with no Python object per item.

    MAGIC, FORMAT (u32), the contents' length (u64), SHA-256 of everything after the header
    the contents (JSON: the snapshot's own fields, the views, the table of sections), padding
    then sections, each at a multiple of 8 from the start:
      segments        the distinct byte strings, one after the other
      bounds          u64 [segments + 1]: where each begins (and the last ends)
      parts.*         u32 [server parts] x 4: whole, start, stop, middle (segment ids)
      <view>.*        u32/i64 columns, one row per item in list order (name, version):
                      name, version, flags (deleted 1, isLatest 2), published, updated
                      (microseconds since the epoch), server (a part), meta, suffix, end
      <view>.active   u32 rows without deleted entries; <view>.latest: the isLatest rows

An item's JSON is `HEAD`, the part's `whole[:start] + middle + whole[stop:]`, then its
registry `_meta`, suffix and end segments: exactly what `served.write` joins. A server
object kept as the upstream sent it is a part with start = stop = its length and an empty
middle; a mirror rewrite (`Splice`) shares the upstream's bytes with the views that serve them
unchanged. Every segment is written once however many views and items share it.

`pack` makes what a build left deferred (mirror rewrites, registry `_meta`s) as it goes: the
buffer is the snapshot with every byte made. `Packed` checks the digest, then every number
it reads against the buffer's bounds, before it serves anything: a buffer cut short, changed,
or made to point outside itself is a `StateError`.
The search index is not in it: it is rebuilt from the items, as after every build.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.entry import Splice
from gateway.errors import StateError
from gateway.served import HEAD, Deferred

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.catalog import Item, ViewCatalog
    from gateway.snapshot import Snapshot

MAGIC = b"MCPGSNAP"
FORMAT = 1
_HEADER = struct.Struct("<8sIQ32s")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FIRST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LAST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
DELETED, LATEST = 1, 2
_U32 = ("name", "version", "flags", "server", "meta", "suffix", "end")
_I64 = ("published", "updated")
_PARTS = ("whole", "start", "stop", "middle")


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


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


class _Packer:
    def __init__(self) -> None:
        self.segments = _Segments()
        self.parts: dict[str, array[int]] = {field: array("I") for field in _PARTS}
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
        for field, value in zip(_PARTS, (self.segments.of(whole), start, stop, middle),
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

    def view(self, catalog: ViewCatalog) -> dict[str, array[int]]:
        columns: dict[str, array[int]] = {f: array("I") for f in _U32}
        columns.update({f: array("q") for f in _I64})
        segments = self.segments
        rows: dict[int, int] = {}
        for row, item in enumerate(catalog.every.items):
            rows[id(item)] = row
            server, end = self._server(item)
            flags = (DELETED if item.deleted else 0) | (LATEST if item.is_latest else 0)
            values = (segments.valued(item.name.encode()), segments.valued(item.version.encode()),
                      flags, server, segments.of(item.registry_meta.made()),
                      segments.of(catalog.suffixes[item.suffix]), end)  # fmt: skip
            for field, value in zip(_U32, values, strict=True):
                columns[field].append(value)
            columns["published"].append(_micros(item.published_at))
            columns["updated"].append(_micros(item.updated_at))
        columns["active"] = array("I", (rows[id(item)] for item in catalog.active.items))
        columns["latest"] = array("I", (rows[id(item)] for item in catalog.latest.items))
        return columns


def _aligned(size: int) -> int:
    return -size % 8


def pack(snapshot: Snapshot) -> bytes:
    """The snapshot as one buffer (see the module's layout)."""
    packer = _Packer()
    sections: list[tuple[str, array[int] | bytes]] = []
    views: list[dict[str, Any]] = []
    for name, catalog in snapshot.views.items():
        sections.extend((f"{name}.{field}", column)
                        for field, column in packer.view(catalog).items())  # fmt: skip
        views.append({"name": name, "upstreamCounts": dict(catalog.upstream_counts)})
    blobs = packer.segments.blobs
    bounds = array("Q", [0])
    for blob in blobs:
        bounds.append(bounds[-1] + len(blob))
    sections[:0] = [("segments", b"".join(blobs)), ("bounds", bounds),
                    *((f"parts.{f}", packer.parts[f]) for f in _PARTS)]  # fmt: skip
    table: dict[str, list[object]] = {}
    offset = 0
    for name, data in sections:
        size = len(data) * (data.itemsize if isinstance(data, array) else 1)
        code = data.typecode if isinstance(data, array) else "B"
        table[name] = [offset, size, code]
        offset += size + _aligned(size)
    contents = orjson.dumps({
        "builtAt": _micros(snapshot.built_at), "stale": list(snapshot.stale),
        "hidden": snapshot.hidden, "verification": snapshot.verification,
        "nextChange": None if snapshot.next_change is None else _micros(snapshot.next_change),
        "views": views, "sections": table,
    })  # fmt: skip
    out: list[bytes] = []
    for _, data in sections:
        raw = data.tobytes() if isinstance(data, array) else data
        out.extend((raw, b"\0" * _aligned(len(raw))))
    return seal(contents, b"".join(out))


def seal(contents: bytes, sections: bytes) -> bytes:
    """The header, the contents and the sections (each already at its multiple of 8)."""
    after = contents + b"\0" * _aligned(_HEADER.size + len(contents)) + sections
    digest = hashlib.sha256(after).digest()
    return _HEADER.pack(MAGIC, FORMAT, len(contents), digest) + after


@dataclass(frozen=True, slots=True)
class PackedView:
    """One view's items, read in place from the buffer."""

    name: str
    columns: dict[str, memoryview]
    upstream_counts: dict[str, int]
    _packed: Packed

    def __len__(self) -> int:
        return len(self.columns["active"])

    def rows(self) -> int:
        return len(self.columns["name"])

    def key(self, row: int) -> tuple[str, str]:
        segment = self._packed.segment
        columns = self.columns
        return (bytes(segment(columns["name"][row])).decode(),
                bytes(segment(columns["version"][row])).decode())  # fmt: skip

    def deleted(self, row: int) -> bool:
        return bool(self.columns["flags"][row] & DELETED)

    def is_latest(self, row: int) -> bool:
        return bool(self.columns["flags"][row] & LATEST)

    def published_at(self, row: int) -> datetime:
        return _moment(self.columns["published"][row])

    def updated_at(self, row: int) -> datetime:
        return _moment(self.columns["updated"][row])

    def write(self, row: int, out: list[bytes | memoryview]) -> None:
        """Append the item's ServerResponse JSON, in parts (as `served.write` does)."""
        packed, columns = self._packed, self.columns
        segment = packed.segment
        whole, start, stop, middle = packed.part(columns["server"][row])
        out.extend((HEAD, whole[:start], segment(middle), whole[stop:],
                    segment(columns["meta"][row]), segment(columns["suffix"][row]),
                    segment(columns["end"][row])))  # fmt: skip

    def body(self, row: int) -> bytes:
        out: list[bytes | memoryview] = []
        self.write(row, out)
        return b"".join(out)

    def listing(self, which: str) -> Iterator[int]:
        """The rows of a listing: `every`, `active` or `latest`."""
        return iter(range(self.rows())) if which == "every" else iter(self.columns[which])


class _ViewContents(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    upstreamCounts: dict[str, int]  # the buffer's JSON keys, as the wire spells them


class _Contents(BaseModel):
    """The contents' JSON, validated exactly before anything is read by it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    builtAt: int
    stale: list[str]
    hidden: dict[str, dict[str, int]]
    verification: dict[str, int]
    nextChange: int | None
    views: list[_ViewContents]
    sections: dict[str, tuple[int, int, Literal["B", "I", "Q", "q"]]]


class Packed:
    """A packed snapshot read in place: checked once, then every read is a slice."""

    def __init__(self, buffer: bytes | memoryview, source: str = "a packed snapshot") -> None:
        self._source = source  # what a refusal names: the file it came from
        self._buffer = memoryview(buffer).cast("B")
        contents = self._contents()
        sections = self._sections(contents)
        try:
            self._segments = sections["segments"]
            self._bounds = sections["bounds"]
            self._parts = [sections[f"parts.{f}"] for f in _PARTS]
            self.views: dict[str, PackedView] = {}
            for view in contents.views:
                columns = {f: sections[f"{view.name}.{f}"]
                           for f in (*_U32, *_I64, "active", "latest")}  # fmt: skip
                self.views[view.name] = PackedView(view.name, columns, view.upstreamCounts, self)
            self.built_at = _moment(contents.builtAt)
            self.next_change = None if contents.nextChange is None else _moment(contents.nextChange)
        except KeyError as exc:
            raise self._refuse(f"it has no section {exc}") from exc
        except OverflowError as exc:
            raise self._refuse("a moment in it is out of range") from exc
        self.stale = tuple(contents.stale)
        self.hidden = contents.hidden
        self.verification = contents.verification
        self._check()

    def _contents(self) -> _Contents:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            raise self._refuse("shorter than its header")
        magic, form, size, digest = _HEADER.unpack_from(buffer)
        if magic != MAGIC or form != FORMAT:
            raise self._refuse(f"not a packed snapshot of format {FORMAT}")
        if hashlib.sha256(buffer[_HEADER.size :]).digest() != digest:
            raise self._refuse("its digest does not match: it was cut short or changed")
        if _HEADER.size + size > len(buffer):
            raise self._refuse("its contents run past its end")
        try:
            contents = _Contents.model_validate_json(
                bytes(buffer[_HEADER.size : _HEADER.size + size])
            )
        except ValidationError as exc:
            raise self._refuse(f"its contents are malformed ({exc.errors()[0]['msg']})") from exc
        size += _HEADER.size
        self._start = size + _aligned(size)
        return contents

    def _sections(self, contents: _Contents) -> dict[str, memoryview]:
        out: dict[str, memoryview] = {}
        for name, (offset, size, code) in contents.sections.items():
            start = self._start + offset
            if start % 8 or offset < 0 or size < 0 or start + size > len(self._buffer):
                raise self._refuse(f"section {name!r} lies outside the buffer")
            try:
                out[name] = self._buffer[start : start + size].cast(code)
            except TypeError as exc:  # not a whole number of its items
                raise self._refuse(f"section {name!r} is cut ({exc})") from exc
        return out

    def _check(self) -> None:
        """Every number that indexes the buffer, in bounds (once: reads then trust them)."""
        bounds, segments = self._bounds, len(self._bounds) - 1
        typed = [(self._segments, "B"), (bounds, "Q"), *((p, "I") for p in self._parts)]
        for view in self.views.values():
            typed.extend((c, "q" if f in _I64 else "I") for f, c in view.columns.items())
        if any(column.format != code for column, code in typed):
            raise self._refuse("a section holds numbers of the wrong kind")
        if segments < 1 or bounds[0] != 0 or bounds[segments] != len(self._segments):
            raise self._refuse("its segment bounds do not cover its segments")
        if any(a > b for a, b in itertools.pairwise(bounds)):
            raise self._refuse("its segment bounds go backwards")
        whole, start, stop, middle = self._parts
        if not len(whole) == len(start) == len(stop) == len(middle):
            raise self._refuse("its server parts' columns differ in length")
        self._within(whole, segments, "a server part's segment")
        self._within(middle, segments, "a server part's middle")
        for at in range(len(whole)):
            size = bounds[whole[at] + 1] - bounds[whole[at]]
            if not start[at] <= stop[at] <= size:
                raise self._refuse("a server part's span lies outside its segment")
        for name, view in self.views.items():
            columns = view.columns
            rows = len(columns["name"])
            if any(len(columns[f]) != rows for f in (*_U32, *_I64)):
                raise self._refuse(f"view {name!r}: its columns differ in length")
            for field in ("name", "version", "meta", "suffix", "end"):
                self._within(columns[field], segments, f"view {name!r}: {field}")
            self._within(columns["server"], len(whole), f"view {name!r}: server")
            self._within(columns["active"], rows, f"view {name!r}: active")
            self._within(columns["latest"], rows, f"view {name!r}: latest")
            for field in _I64:
                column = columns[field]
                if len(column) and (min(column) < _FIRST or max(column) > _LAST):
                    raise self._refuse(f"view {name!r}: a {field} moment is out of range")

    def release(self) -> None:
        """Let go of the buffer (a mapped file can be closed then); reads fail after."""
        for view in self.views.values():
            for column in view.columns.values():
                column.release()
        for section in (self._segments, self._bounds, *self._parts, self._buffer):
            section.release()

    def __enter__(self) -> Packed:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def _refuse(self, why: str) -> StateError:
        return StateError(self._source, f"not a usable packed snapshot: {why}")

    def _within(self, column: memoryview, limit: int, what: str) -> None:
        if len(column) and max(column) >= limit:
            raise self._refuse(f"{what} names an entry past the last")

    def segment(self, index: int) -> memoryview:
        bounds = self._bounds
        return self._segments[bounds[index] : bounds[index + 1]]

    def part(self, index: int) -> tuple[memoryview, int, int, int]:
        whole, start, stop, middle = self._parts
        return self.segment(whole[index]), start[index], stop[index], middle[index]
