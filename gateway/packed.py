"""The snapshot as one buffer: its entries and every view's items as distinct byte segments
and tables of numbers, laid out so that a file (or shared memory) holds it as it is and a
reader uses it in place, with no Python object per item.

    MAGIC, FORMAT (u32), the contents' length (u64), SHA-256 of everything after the header
    the contents (JSON: the snapshot's own fields, the config's fingerprint, the views, the
    table of suffixes, the table of sections), padding
    then sections, each at a multiple of 8 from the start:
      segments        the distinct byte strings, one after the other
      bounds          u64 [segments + 1]: where each begins (and the last ends)
      parts.*         u32 [server parts] x 4: whole, start, stop, middle (segment ids)
      entries.*       one row per upstream entry served anywhere: name, version, identity,
                      status, server, meta (the upstream's JSON), registry (its `_meta` as
                      served, every view's), text, types, transports, hosts (segments; sets
                      sorted, one per line), flags (packages 1, remotes 2), published,
                      updated (i64 microseconds since the epoch)
      <view>.*        u32 columns, one row per item in list order (name, version):
                      entry, flags (deleted 1, isLatest 2), server (a part), suffix (a row
                      of the suffix table), end
      <view>.active   u32 rows without deleted entries; <view>.latest: the isLatest rows

An item's JSON is `HEAD`, the part's `whole[:start] + middle + whole[stop:]`, then its
registry `_meta`, suffix and end segments: exactly what `served.write` joins. A server
object kept as the upstream sent it is a part with start = stop = its length and an empty
middle; a mirror rewrite (`Splice`) shares the upstream's bytes with the views that serve them
unchanged. Every segment is written once however many views and items share it. The entries
carry what filters and the search index read, so a packed snapshot serves as the live one.

`pack` writes it. `Packed` checks the digest, then every number it reads against the
buffer's bounds, before it serves anything: a buffer cut short, changed, or made to point
outside itself is a `StateError`. The search index is not in it: it is rebuilt from the
entries, as after every build.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import StateError
from gateway.served import HEAD

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.served import SuffixKey

MAGIC = b"MCPGSNAP"
FORMAT = 2
HEADER = struct.Struct("<8sIQ32s")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FIRST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LAST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
DELETED, LATEST = 1, 2  # an item's flags
PACKAGES, REMOTES = 1, 2  # an entry's flags
PARTS = ("whole", "start", "stop", "middle")
ENTRY_TEXT = ("name", "version", "identity", "status", "server", "meta", "registry", "text",
              "types", "transports", "hosts")  # fmt: skip
ENTRY_U32 = (*ENTRY_TEXT, "flags")
ENTRY_I64 = ("published", "updated")
ROW_U32 = ("entry", "flags", "server", "suffix", "end")
ROW_LISTS = ("active", "latest")


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def moment(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def aligned(size: int) -> int:
    """Padding that brings `size` to a multiple of 8."""
    return -size % 8


@dataclass(frozen=True, slots=True)
class PackedView:
    """One view's items, read in place from the buffer."""

    name: str
    columns: dict[str, memoryview]
    upstream_counts: dict[str, int]
    offered: int
    signals: dict[tuple[str, str], int]
    _packed: Packed

    def __len__(self) -> int:
        return len(self.columns["active"])

    def rows(self) -> int:
        return len(self.columns["entry"])

    def entry(self, row: int) -> int:
        return int(self.columns["entry"][row])

    def key(self, row: int) -> tuple[str, str]:
        entry = self.entry(row)
        return (self._packed.text("name", entry), self._packed.text("version", entry))

    def deleted(self, row: int) -> bool:
        return bool(self.columns["flags"][row] & DELETED)

    def is_latest(self, row: int) -> bool:
        return bool(self.columns["flags"][row] & LATEST)

    def published_at(self, row: int) -> datetime:
        return moment(self._packed.entries["published"][self.entry(row)])

    def updated_at(self, row: int) -> datetime:
        return moment(self._packed.entries["updated"][self.entry(row)])

    def write(self, row: int, out: list[bytes | memoryview]) -> None:
        """Append the item's ServerResponse JSON, in parts (as `served.write` does)."""
        packed, columns = self._packed, self.columns
        segment = packed.segment
        whole, start, stop, middle = packed.part(columns["server"][row])
        suffix = packed.suffixes[columns["suffix"][row]][0]
        registry = packed.entries["registry"][columns["entry"][row]]
        out.extend((HEAD, whole[:start], segment(middle), whole[stop:], segment(registry),
                    segment(suffix), segment(columns["end"][row])))  # fmt: skip

    def body(self, row: int) -> bytes:
        out: list[bytes | memoryview] = []
        self.write(row, out)
        return b"".join(out)

    def listing(self, which: str) -> Iterator[int]:
        """The rows of a listing: `every`, `active` or `latest`."""
        return iter(range(self.rows())) if which == "every" else iter(self.columns[which])


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _ViewContents(_Strict):
    name: str
    upstreamCounts: dict[str, int]  # the buffer's JSON keys, as the wire spells them
    offered: int
    signals: list[tuple[str, str, int]]


# What the advisory feeds say of a version (`served.Mark`), as JSON: lists for tuples.
_Mark = tuple[str, bool | None, str | None, tuple[str, ...], tuple[str, ...]]


class _Contents(_Strict):
    """The contents' JSON, validated exactly before anything is read by it."""

    fingerprint: str
    builtAt: int
    stale: list[str]
    hidden: dict[str, dict[str, int]]
    verification: dict[str, int]
    nextChange: int | None
    views: list[_ViewContents]
    # the suffix table: segment, then the key the build made it of (`served.SuffixKey`)
    suffixes: list[tuple[int, bool, str, tuple[str, ...], _Mark | None]]
    sections: dict[str, tuple[int, int, Literal["B", "I", "Q", "q"]]]
    # a catalog in part (see `deltas`): the servers it replaces in each view
    changes: dict[str, list[str]] | None = None


class Packed:
    """A packed snapshot read in place: checked once, then every read is a slice."""

    def __init__(
        self, buffer: bytes | memoryview, source: str = "a packed snapshot", *, digest: bool = True
    ) -> None:
        """Check a buffer, its digest too unless `digest` is False: then `check_digest` must
        pass before anything read from it is served (a worker thread can hash it meanwhile:
        hashing lets go of the GIL)."""
        self._source = source  # what a refusal names: the file it came from
        self._views: list[memoryview] = []  # every view made of the buffer, released together
        try:
            self._open(buffer)
            if digest:
                self.check_digest()
        except BaseException:
            self.release()  # a mapped file can be closed after a refusal too
            raise

    def _open(self, buffer: bytes | memoryview) -> None:
        self._buffer = memoryview(buffer).cast("B")
        self._views.append(self._buffer)
        contents = self._contents()
        sections = self._sections(contents)
        self.suffixes: list[tuple[int, SuffixKey]] = [
            (segment, (is_latest, upstream, rules, mark))
            for segment, is_latest, upstream, rules, mark in contents.suffixes
        ]
        try:
            self._segments = sections["segments"]
            self._bounds = sections["bounds"]
            self._parts = [sections[f"parts.{f}"] for f in PARTS]
            self.entries = {f: sections[f"entries.{f}"] for f in (*ENTRY_U32, *ENTRY_I64)}
            self.views: dict[str, PackedView] = {}
            for view in contents.views:
                columns = {f: sections[f"{view.name}.{f}"] for f in (*ROW_U32, *ROW_LISTS)}
                signals = {(signal, state): n for signal, state, n in view.signals}
                self.views[view.name] = PackedView(view.name, columns, view.upstreamCounts,
                                                   view.offered, signals, self)  # fmt: skip
            self.built_at = moment(contents.builtAt)
            self.next_change = None if contents.nextChange is None else moment(contents.nextChange)
        except KeyError as exc:
            raise self._refuse(f"it has no section {exc}") from exc
        except OverflowError as exc:
            raise self._refuse("a moment in it is out of range") from exc
        self.fingerprint = contents.fingerprint
        self.stale = tuple(contents.stale)
        self.hidden = contents.hidden
        self.verification = contents.verification
        self.changes = contents.changes
        self._check()

    def _contents(self) -> _Contents:
        contents, self._digest, self._start = _contents(self._buffer, self._source)
        return contents

    def check_digest(self) -> None:
        """Its SHA-256 as its header says: a `StateError` if it was cut short or changed."""
        if hashlib.sha256(self._buffer[HEADER.size :]).digest() != self._digest:
            raise self._refuse("its digest does not match: it was cut short or changed")

    def _sections(self, contents: _Contents) -> dict[str, memoryview]:
        out: dict[str, memoryview] = {}
        for name, (offset, size, code) in contents.sections.items():
            start = self._start + offset
            if start % 8 or offset < 0 or size < 0 or start + size > len(self._buffer):
                raise self._refuse(f"section {name!r} lies outside the buffer")
            cut = self._buffer[start : start + size]
            self._views.append(cut)
            try:
                out[name] = cut.cast(code)
            except TypeError as exc:  # not a whole number of its items
                raise self._refuse(f"section {name!r} is cut ({exc})") from exc
            self._views.append(out[name])
        return out

    def _check(self) -> None:
        """Every number that indexes the buffer, in bounds (once: reads then trust them)."""
        bounds, segments = self._bounds, len(self._bounds) - 1
        typed = [(self._segments, "B"), (bounds, "Q"), *((p, "I") for p in self._parts)]
        typed.extend((c, "q" if f in ENTRY_I64 else "I") for f, c in self.entries.items())
        for view in self.views.values():
            typed.extend((c, "I") for c in view.columns.values())
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
        ends = bounds.tolist()
        spans = zip(whole.tolist(), start.tolist(), stop.tolist(), strict=True)
        if not all(a <= b <= ends[w + 1] - ends[w] for w, a, b in spans):
            raise self._refuse("a server part's span lies outside its segment")
        self._within_list([segment for segment, _ in self.suffixes], segments, "a suffix's segment")
        entries = len(self.entries["name"])
        if any(len(column) != entries for column in self.entries.values()):
            raise self._refuse("its entries' columns differ in length")
        for field in ENTRY_TEXT:
            self._within(self.entries[field], segments, f"an entry's {field}")
        for field in ENTRY_I64:
            column = self.entries[field]
            if len(column) and (min(column) < _FIRST or max(column) > _LAST):
                raise self._refuse(f"an entry's {field} moment is out of range")
        for name, view in self.views.items():
            columns = view.columns
            rows = len(columns["entry"])
            if any(len(columns[f]) != rows for f in ROW_U32):
                raise self._refuse(f"view {name!r}: its columns differ in length")
            self._within(columns["end"], segments, f"view {name!r}: end")
            self._within(columns["entry"], entries, f"view {name!r}: entry")
            self._within(columns["server"], len(whole), f"view {name!r}: server")
            self._within(columns["suffix"], len(self.suffixes), f"view {name!r}: suffix")
            for field in ROW_LISTS:
                self._within(columns[field], rows, f"view {name!r}: {field}")

    def release(self) -> None:
        """Let go of the buffer (a mapped file can be closed then); reads fail after."""
        for view in reversed(self._views):
            view.release()

    def __enter__(self) -> Packed:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def _refuse(self, why: str) -> StateError:
        return _refusal(self._source, why)

    def _within(self, column: memoryview, limit: int, what: str) -> None:
        if len(column) and max(column) >= limit:
            raise self._refuse(f"{what} names an entry past the last")

    def _within_list(self, values: list[int], limit: int, what: str) -> None:
        if any(not 0 <= value < limit for value in values):
            raise self._refuse(f"{what} names an entry past the last")

    def blobs(self) -> list[bytes]:
        """Every segment as a byte string of its own (copied: the buffer can go after)."""
        segments = self._segments  # each copied out by itself: never the whole at once
        return [bytes(segments[start:stop])
                for start, stop in itertools.pairwise(self._bounds.tolist())]  # fmt: skip

    def parts(self) -> list[tuple[int, int, int, int]]:
        """Every server part: its whole's segment, the span replaced, the middle's segment."""
        return list(zip(*(part.tolist() for part in self._parts), strict=True))

    def segments_and_bounds(self) -> tuple[memoryview, memoryview]:
        """The segments, one after the other, and where each begins (and the last ends)."""
        return self._segments, self._bounds

    def part_count(self) -> int:
        return len(self._parts[0])

    def segment(self, index: int) -> memoryview:
        bounds = self._bounds
        return self._segments[bounds[index] : bounds[index + 1]]

    def text(self, field: str, entry: int) -> str:
        """An entry's text field (`name`, `identity`, ...), decoded."""
        return bytes(self.segment(self.entries[field][entry])).decode()

    def part(self, index: int) -> tuple[memoryview, int, int, int]:
        whole, start, stop, middle = self.part_segments(index)
        return self.segment(whole), start, stop, middle

    def part_segments(self, index: int) -> tuple[int, int, int, int]:
        """A server part: its whole's segment, the span replaced, the middle's segment."""
        whole, start, stop, middle = self._parts
        return whole[index], start[index], stop[index], middle[index]


def _refusal(source: str, why: str) -> StateError:
    return StateError(source, f"not a usable packed snapshot: {why}")


def head_length(header: bytes | memoryview, source: str, size: int) -> int:
    """The length of a packed snapshot's header and contents, from its first `HEADER.size`
    bytes, if a buffer of `size` bytes holds them (a `StateError` otherwise)."""
    if len(header) < HEADER.size:
        raise _refusal(source, "shorter than its header")
    magic, form, length, _ = HEADER.unpack_from(header)
    if magic != MAGIC or form != FORMAT:
        raise _refusal(source, f"not a packed snapshot of format {FORMAT}")
    if HEADER.size + length > size:
        raise _refusal(source, "its contents run past its end")
    return HEADER.size + int(length)


def outline(head: bytes | memoryview, source: str) -> tuple[str, int]:
    """What a packed snapshot's header and contents (`head_length` bytes) say before the rest
    is read: the fingerprint of the config that built it, and its whole length in bytes
    (where its last section ends, as `pack` writes it)."""
    contents, _, start = _contents(memoryview(head).cast("B"), source)
    sections = contents.sections.values()
    return contents.fingerprint, start + max(
        (offset + size + aligned(size) for offset, size, _ in sections), default=0
    )


def _contents(buffer: memoryview, source: str) -> tuple[_Contents, bytes, int]:
    """The contents' JSON, validated; the digest the header holds; where the sections start."""
    end = head_length(buffer[: HEADER.size], source, len(buffer))
    try:
        contents = _Contents.model_validate_json(bytes(buffer[HEADER.size : end]))
    except ValidationError as exc:
        raise _refusal(source, f"its contents are malformed ({exc.errors()[0]['msg']})") from exc
    return contents, HEADER.unpack_from(buffer)[3], end + aligned(end)
