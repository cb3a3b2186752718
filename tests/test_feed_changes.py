"""An incremental poll's entries are taken in proportion to them (`Feed._prepare_changes`):
whatever the entries before and the ones it brings (deleted ones, updates that go back in
time, the newest replaced), it gives what a pass over every entry gives (`Feed._prepare`)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import UpstreamSettings
from gateway.entry import Entry, parse_item
from gateway.feed import Feed, Key
from tests.conftest import file_upstream
from tests.fakes import server_entry

SEEN = datetime(2026, 6, 1, tzinfo=UTC)


def _entry(name: int, version: int, updated: int, deleted: bool) -> Entry:
    at = (SEEN - timedelta(days=400) + timedelta(hours=updated)).strftime("%Y-%m-%dT%H:%M:%SZ")
    item = server_entry(f"com.example/s{name}", f"1.0.{version}", updated=at,
                        status="deleted" if deleted else "active")  # fmt: skip
    return parse_item(item, seen_at=SEEN)


_entries = st.lists(
    st.builds(_entry, st.integers(0, 6), st.integers(0, 2), st.integers(0, 50), st.booleans()),
    max_size=25,
)


def _feed(entries: list[Entry]) -> Feed:
    feed = Feed(UpstreamSettings.model_validate({"name": "u", "url": "https://r.example.com"}))
    feed.entries = {entry.key: entry for entry in entries}
    return feed


@settings(max_examples=300, deadline=None)
@given(before=_entries, polled=_entries, summed_first=st.booleans())
def test_an_incremental_poll_counts_what_a_whole_pass_counts(
    before: list[Entry], polled: list[Entry], summed_first: bool
) -> None:
    old = {entry.key: entry for entry in before}
    updated: dict[Key, Entry] = {e.key: e for e in polled if old.get(e.key) != e}  # as `_walk`
    whole, part = _feed(before), _feed(before)
    if summed_first:  # the entries before were counted already (by the sync that took them)
        part._summary(part.entries)
    expected = whole._prepare(whole.entries, {**old, **updated})
    if not updated:  # the very entries it has: nothing to take (`_walk` gives None then)
        assert expected[0] is None
        return
    assert expected[0] is not None
    assert expected[0] != old
    got = part._prepare_changes(part.entries, updated)
    assert got == expected
    part.entries = got[0]  # as the sync takes them
    assert part._summary(got[0]) == (expected[1][1], expected[2])  # counted already, for the next
    assert part._summed is not None
    assert part._summed[0] is got[0]


@settings(max_examples=200, deadline=None)
@given(before=_entries, fetched=_entries)
def test_a_whole_read_is_taken_only_when_it_differs(
    before: list[Entry], fetched: list[Entry]
) -> None:
    """A full walk or a file read whole: None when it holds the very entries the feed has
    (compared in the thread, not on the serving loop), else them, old objects kept."""
    feed = _feed(before)
    new = {entry.key: entry for entry in fetched}
    kept, _, _ = feed._prepare(feed.entries, dict(new))
    if new == feed.entries:
        assert kept is None
    else:
        assert kept == new
        assert all(kept[key] is feed.entries[key] for key in kept.keys() & feed.entries.keys()
                   if kept[key] == feed.entries[key])  # fmt: skip


async def test_entries_changed_while_a_read_is_compared_are_compared_again(
    tmp_path: Path,
) -> None:
    """A read compared in a worker thread against the entries held, which change meanwhile
    (an operator confirms a held drop): it is compared again, against the new ones."""
    items = [server_entry("com.example/a", "1.0.0"), server_entry("com.example/b", "1.0.0")]
    upstream = file_upstream(tmp_path / "data", "u", items)
    dropping: list[dict[Key, Entry]] = []

    class Racing(Feed):
        def _prepare(
            self, old: dict[Key, Entry], entries: dict[Key, Entry]
        ) -> tuple[dict[Key, Entry] | None, tuple[int, int], datetime | None]:
            if dropping:
                self.entries = dropping.pop()  # as `confirm_drop` does, on the loop
            return Feed._prepare(self, old, entries)

    feed = Racing(UpstreamSettings.model_validate(upstream))
    async with aiohttp.ClientSession() as session:
        assert await feed.sync(session, tmp_path / "state")
        first = feed.entries
        dropping.append({key: entry for key, entry in first.items() if key[0].endswith("/a")})
        os.utime(upstream["file"], ns=(1, 2_000_000_000_000_000_000))  # read again: the same
        assert await feed.sync(session, tmp_path / "state")  # differs from what it holds now
    assert feed.entries == first
