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


def state_path(state_dir: Path, upstream: str) -> Path:
    return state_dir / f"{upstream}.json"


def save(state_dir: Path, saved: Saved) -> Path:
    """Write atomically; blocking, so call it off the event loop."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir, saved.upstream)
    head = {"format": FORMAT, "upstream": saved.upstream}
    head["syncedAt"] = format_timestamp(saved.synced_at)
    data = b"".join(
        (
            orjson.dumps(head)[:-1],
            b',"servers":[',
            b",".join(e.item_json() for e in saved.entries),
            b"]}",
        )
    )
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{saved.upstream}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a state file of this gateway")
        if document.get("upstream") != upstream:
            raise ValueError(f"holds upstream {document.get('upstream')!r}, not {upstream!r}")
        synced_at = parse_timestamp(document["syncedAt"])
        items = document["servers"]
        if not isinstance(items, list):
            raise ValueError("servers is not a list")
        entries = [parse_item(item, seen_at=synced_at) for item in items]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, EntryRejected) as exc:
        moved = _set_aside(path)
        raise StateError(str(path), f"{exc}; set aside as {moved.name}") from None
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
