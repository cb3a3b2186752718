"""Each upstream's last good data on disk: a restarted gateway serves before upstreams answer.

One JSON file per upstream under `state_dir`, written atomically (temporary file, fsync, rename):
a crash mid-write leaves the previous file intact. A file that cannot be read back is set aside
under a `.corrupt-*` name and reported, never loaded in part.

Besides the entries, a file keeps where syncing stands, so a restart goes on where it stopped
(one incremental poll when no full walk is due) rather than walking the upstream again. Files
carry a format number: an older file is read (what it lacks is taken as unknown: the next sync
walks in full), and so is a newer one, for what this version knows of it (a rollback keeps its
state).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.entry import Entry, format_timestamp, parse_item, parse_timestamp
from gateway.errors import EntryRejected, StateError

# 1: the entries and `syncedAt`. 2: also `fullSyncAt` and `position` (where syncing stands).
FORMAT = 2


@dataclass(frozen=True, slots=True)
class Saved:
    """An upstream's persisted data, and where syncing it stands."""

    upstream: str
    synced_at: datetime  # when the data was fetched
    entries: list[Entry]
    full_synced_at: datetime | None = None  # when the last full walk began (None: unknown)
    position: datetime | None = None  # the next incremental poll asks for changes since then


_SERVERS = b',"servers":[\n'  # ends the head line
_END = b"]}\n"  # the last line


def state_path(state_dir: Path, upstream: str) -> Path:
    return state_dir / f"{upstream}.json"


def save(state_dir: Path, saved: Saved) -> Path:
    """Write atomically; blocking, so call it off the event loop."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir, saved.upstream)
    head = {"format": FORMAT, "upstream": saved.upstream}
    head["syncedAt"] = format_timestamp(saved.synced_at)
    if saved.full_synced_at is not None:
        head["fullSyncAt"] = format_timestamp(saved.full_synced_at)
    if saved.position is not None:
        head["position"] = format_timestamp(saved.position)

    def write(handle: BinaryIO) -> None:
        # One entry per line, written as it goes: the file is one JSON document, and neither
        # writing nor reading it needs all of it in memory at once (66k entries are 64 MB).
        handle.write(orjson.dumps(head)[:-1] + _SERVERS)
        last = len(saved.entries) - 1
        for index, entry in enumerate(saved.entries):
            handle.write(entry.item_json())
            handle.write(b",\n" if index < last else b"\n")
        handle.write(_END)

    written(path, write)
    return path


def written(path: Path, write: Callable[[BinaryIO], None], *, durable: bool = True) -> None:
    """Replace `path` atomically with what `write` writes: a temporary file beside it,
    flushed to disk, renamed over it, the directory flushed too (blocking: a worker thread).
    A crash at any point leaves the old file or the new one, whole. `durable=False`: not
    flushed to disk (a file that lives only as long as the process, still replaced whole)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def set_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, target)
    return target


def load(state_dir: Path, upstream: str) -> Saved | None:
    """The upstream's saved data; None when there is none; StateError when it is corrupt.

    A corrupt file has been moved aside by the time StateError is raised.
    """
    path = state_path(state_dir, upstream)
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            if first.endswith(_SERVERS):
                saved = _read_lines(first, handle, upstream)
            else:  # written whole, by an earlier version
                saved = _read_document(first + handle.read(), upstream)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(str(path), f"cannot read: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, EntryRejected) as exc:
        moved = set_aside(path)
        raise StateError(str(path), f"{exc}; set aside as {moved.name}") from None
    return saved


@dataclass(frozen=True, slots=True)
class _Head:
    synced_at: datetime
    full_synced_at: datetime | None
    position: datetime | None


def _moment(document: dict[str, Any], key: str) -> datetime | None:
    value = document.get(key)
    return None if value is None else parse_timestamp(value)


def _head(document: object, upstream: str) -> _Head:
    # Any format number this gateway has written, or a later one's: keys are only ever added.
    number = document.get("format") if isinstance(document, dict) else None
    if not isinstance(document, dict) or type(number) is not int or number < 1:
        raise ValueError("not a state file of this gateway")
    if document.get("upstream") != upstream:
        raise ValueError(f"holds upstream {document.get('upstream')!r}, not {upstream!r}")
    synced_at = parse_timestamp(document["syncedAt"])
    return _Head(synced_at, _moment(document, "fullSyncAt"), _moment(document, "position"))


def _saved(upstream: str, head: _Head, entries: list[Entry]) -> Saved:
    return Saved(upstream, head.synced_at, entries, head.full_synced_at, head.position)


def _read_lines(first: bytes, handle: BinaryIO, upstream: str) -> Saved:
    """A file `save` wrote: the head line, one entry per line, the closing line."""
    head = _head(orjson.loads(first[: -len(_SERVERS)] + b"}"), upstream)
    entries: list[Entry] = []
    shared: dict[str, str] = {}
    for line in handle:
        if line == _END:
            return _saved(upstream, head, entries)
        item = orjson.loads(line.removesuffix(b"\n").removesuffix(b","))
        entries.append(parse_item(item, seen_at=head.synced_at, shared=shared))
    raise ValueError("the file ends before its last entry (truncated)")


def _read_document(raw: bytes, upstream: str) -> Saved:
    document = orjson.loads(raw)
    head = _head(document, upstream)
    items = document["servers"]
    if not isinstance(items, list):
        raise ValueError("servers is not a list")
    shared: dict[str, str] = {}
    entries = [parse_item(item, seen_at=head.synced_at, shared=shared) for item in items]
    return _saved(upstream, head, entries)


def load_all(state_dir: Path, upstreams: list[str]) -> tuple[dict[str, Saved], list[StateError]]:
    """Every upstream's saved data that can be read, and the errors of those that cannot."""
    found: dict[str, Saved] = {}
    errors: list[StateError] = []
    for upstream in upstreams:
        try:
            saved = load(state_dir, upstream)
        except StateError as exc:
            errors.append(exc)
            continue
        if saved is not None:
            found[upstream] = saved
    return found, errors
