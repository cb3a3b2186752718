from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gateway.entry import parse_item
from gateway.errors import StateError
from gateway.state import Saved, load, save, state_path
from tests.fakes import server_entry

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def saved() -> Saved:
    items = [server_entry("io.github.s/one", "1.0.0"), server_entry("io.github.s/two", "2.0.0")]
    return Saved("official", NOW, [parse_item(item, seen_at=NOW) for item in items])


def test_round_trip_keeps_entries_exactly(tmp_path: Path) -> None:
    original = saved()
    save(tmp_path, original)
    loaded = load(tmp_path, "official")
    assert loaded == original
    assert [p.name for p in tmp_path.iterdir()] == ["official.json"]  # no temporary left over


def test_the_file_is_one_json_document_with_an_entry_per_line(tmp_path: Path) -> None:
    """Written and read an entry at a time (no 64 MB copies), and still one JSON document."""
    original = saved()
    path = save(tmp_path, original)
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 1 + len(original.entries) + 2  # head, entries, closing, final newline
    document = orjson.loads(path.read_bytes())
    assert [item["server"]["name"] for item in document["servers"]] == [
        "io.github.s/one",
        "io.github.s/two",
    ]
    empty = Saved("empty", NOW, [])
    save(tmp_path, empty)
    assert load(tmp_path, "empty") == empty


def test_a_file_written_whole_still_loads(tmp_path: Path) -> None:
    original = saved()
    path = save(tmp_path, original)
    path.write_bytes(orjson.dumps(orjson.loads(path.read_bytes())))  # one line, no newlines
    assert load(tmp_path, "official") == original


def test_no_state_is_none(tmp_path: Path) -> None:
    assert load(tmp_path, "official") is None


@pytest.mark.parametrize(
    "content",
    [
        b'{"format":1,"upstream":"official","syncedAt":"2026-05-01T12:00:00Z","servers":[{"ser',
        b"",
        b'{"format":99}',
        b'{"format":1,"upstream":"other","syncedAt":"2026-05-01T12:00:00Z","servers":[]}',
        b'{"format":1,"upstream":"official","syncedAt":"2026-05-01T12:00:00Z",'
        b'"servers":[{"server":{"name":"bad name"}}]}',
        # the line format: truncated before its closing line; a broken line
        b'{"format":1,"upstream":"official","syncedAt":"2026-05-01T12:00:00Z","servers":[\n'
        b'{"server":{"name":"io.github.s/one","version":"1.0.0"}},\n',
        b'{"format":1,"upstream":"official","syncedAt":"2026-05-01T12:00:00Z","servers":[\n'
        b'{"server":{"name":"io.github.s/one","vers\n]}\n',
    ],
)
def test_corrupt_state_is_set_aside(tmp_path: Path, content: bytes) -> None:
    state_path(tmp_path, "official").write_bytes(content)
    with pytest.raises(StateError, match="set aside"):
        load(tmp_path, "official")
    assert not state_path(tmp_path, "official").exists()
    aside = list(tmp_path.glob("official.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content
    assert load(tmp_path, "official") is None  # the next start begins clean


def test_where_syncing_stands_is_kept(tmp_path: Path) -> None:
    """A restart goes on where it stopped: when the last full walk began, and the position of
    the next incremental poll."""
    original = Saved(
        "official",
        NOW,
        saved().entries,
        full_synced_at=NOW,
        position=datetime(2026, 4, 30, tzinfo=UTC),
    )
    save(tmp_path, original)
    assert load(tmp_path, "official") == original


@pytest.mark.parametrize("written_whole", [False, True])
def test_a_file_of_the_first_format_is_read(tmp_path: Path, written_whole: bool) -> None:
    """Written before syncing's position was kept: read, with the position unknown (the next
    sync walks in full), never set aside."""
    items = b",\n".join(e.item_json() for e in saved().entries)
    head = b'{"format":1,"upstream":"official","syncedAt":"2026-05-01T12:00:00Z","servers":['
    content = head + b"\n" + items + b"\n]}\n"
    if written_whole:
        content = orjson.dumps(orjson.loads(content))
    state_path(tmp_path, "official").write_bytes(content)
    loaded = load(tmp_path, "official")
    assert loaded is not None
    assert loaded.entries == saved().entries
    assert (loaded.synced_at, loaded.full_synced_at, loaded.position) == (NOW, None, None)


def test_a_file_of_a_later_format_is_read_for_what_is_known(tmp_path: Path) -> None:
    """After a rollback, a newer gateway's file still serves: its keys are only added ones."""
    path = save(tmp_path, Saved("official", NOW, saved().entries, full_synced_at=NOW))
    head, _, rest = path.read_bytes().partition(b"\n")
    document = orjson.loads(head.removesuffix(b',"servers":[') + b"}")
    document.update(format=7, somethingNew={"a": 1})
    path.write_bytes(orjson.dumps(document)[:-1] + b',"servers":[\n' + rest)
    loaded = load(tmp_path, "official")
    assert loaded is not None
    assert (loaded.entries, loaded.full_synced_at) == (saved().entries, NOW)


@pytest.mark.parametrize("number", [0, -1, "2", 2.0, True, None])
def test_a_format_that_is_not_a_positive_whole_number_is_refused(
    tmp_path: Path, number: object
) -> None:
    document = {"format": number, "upstream": "official", "syncedAt": "2026-05-01T12:00:00Z",
                "servers": []}  # fmt: skip
    state_path(tmp_path, "official").write_bytes(orjson.dumps(document))
    with pytest.raises(StateError, match="not a state file"):
        load(tmp_path, "official")
