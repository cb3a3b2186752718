"""An incremental poll's entries are taken in proportion to them (`Feed._prepare_changes`):
whatever the entries before and the ones it brings (deleted ones, updates that go back in
time, the newest replaced), it gives what a pass over every entry gives (`Feed._prepare`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import UpstreamSettings
from gateway.entry import Entry, parse_item
from gateway.feed import Feed, Key
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
        part._summary()
    expected = whole._prepare({**old, **updated})
    if not updated:  # the very entries it has: nothing to take (`_walk` gives None then)
        assert expected[0] is None
        return
    assert expected[0] is not None
    assert expected[0] != old
    got = part._prepare_changes(updated)
    assert got == expected
    part.entries = got[0]  # as the sync takes them
    assert part._summary() == (expected[1][1], expected[2])  # counted already, for the next
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
    kept, _, _ = feed._prepare(dict(new))
    if new == feed.entries:
        assert kept is None
    else:
        assert kept == new
        assert all(kept[key] is feed.entries[key] for key in kept.keys() & feed.entries.keys()
                   if kept[key] == feed.entries[key])  # fmt: skip
