"""Each upstream's last good data on disk: a restarted gateway serves before upstreams answer.

One JSON file per upstream under `state_dir`, written atomically (temporary file, fsync, rename):
a crash mid-write leaves the previous file intact. A file that cannot be read back is set aside
under a `.corrupt-*` name and reported, never loaded in part.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.entry import Entry, EntryRejected, format_timestamp, parse_item, parse_timestamp
from gateway.errors import StateError

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Saved:
    """An upstream's persisted data."""

    upstream: str
    synced_at: datetime
    entries: list[Entry]


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
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{saved.upstream}.", suffix=".tmp")
    try:
        # One entry per line, written as it goes: the file is one JSON document, and neither
        # writing nor reading it needs all of it in memory at once (66k entries are 64 MB).
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            handle.write(orjson.dumps(head)[:-1] + _SERVERS)
            last = len(saved.entries) - 1
            for index, entry in enumerate(saved.entries):
                handle.write(entry.item_json())
                handle.write(b",\n" if index < last else b"\n")
            handle.write(_END)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def _set_aside(path: Path) -> Path:
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
        moved = _set_aside(path)
        raise StateError(str(path), f"{exc}; set aside as {moved.name}") from None
    return saved


def _head(document: object, upstream: str) -> datetime:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not a state file of this gateway")
    if document.get("upstream") != upstream:
        raise ValueError(f"holds upstream {document.get('upstream')!r}, not {upstream!r}")
    return parse_timestamp(document["syncedAt"])


def _read_lines(first: bytes, handle: BinaryIO, upstream: str) -> Saved:
    """A file `save` wrote: the head line, one entry per line, the closing line."""
    synced_at = _head(orjson.loads(first[: -len(_SERVERS)] + b"}"), upstream)
    entries: list[Entry] = []
    shared: dict[str, str] = {}
    for line in handle:
        if line == _END:
            return Saved(upstream, synced_at, entries)
        item = orjson.loads(line.removesuffix(b"\n").removesuffix(b","))
        entries.append(parse_item(item, seen_at=synced_at, shared=shared))
    raise ValueError("the file ends before its last entry (truncated)")


def _read_document(raw: bytes, upstream: str) -> Saved:
    document = orjson.loads(raw)
    synced_at = _head(document, upstream)
    items = document["servers"]
    if not isinstance(items, list):
        raise ValueError("servers is not a list")
    shared: dict[str, str] = {}
    entries = [parse_item(item, seen_at=synced_at, shared=shared) for item in items]
    return Saved(upstream, synced_at, entries)


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
