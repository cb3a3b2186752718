"""Search: a case-insensitive substring of name, title or description, answered from the
trigram index exactly as a scan of the catalog would answer it, page by page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import search
from gateway.catalog import Origin
from gateway.config import FederationConfig, GatewaySettings, UpstreamSettings
from gateway.entry import Entry, parse_item
from gateway.errors import Stopped
from gateway.merge import Source
from gateway.pacing import Allowance
from gateway.query import parse_list_query, select_page
from gateway.snapshot import Builder, Snapshot
from tests.conftest import examples
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONFIG = FederationConfig(
    directory=Path("."),
    gateway=GatewaySettings(upstreams=[UpstreamSettings(name="u", file=Path("u.json"))]),
)
EVERY_STEP = Allowance(None)  # no limit: as a worker thread runs a search


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny catalogs reach every path: bitsets, promotions, dense scans."""
    monkeypatch.setattr(search, "COMMON", 3)
    monkeypatch.setattr(search, "TAIL", 6)
    monkeypatch.setattr(search, "SERVER_GRAMS", 14)  # some servers stay out of the index
    monkeypatch.setattr(search, "GRAMS", 60)


def entries_of(servers: list[tuple[str, str, str | None, str]]) -> list[Entry]:
    extra: dict[str, Any]
    found = []
    for name, version, title, description in servers:
        extra = {"title": title} if title is not None else {}
        item = server_entry(name, version, description=description, **extra)
        found.append(parse_item(item, seen_at=NOW))
    return found


def walk(snapshot: Snapshot, text: str, limit: int = 3, **params: str) -> list[tuple[str, str]]:
    """Every page of a search, following nextCursor (dropping `search` from page 2 on, as VS
    Code does)."""
    view = snapshot.views["default"]
    keys: list[tuple[str, str]] = []
    query = parse_list_query({"search": text, "limit": str(limit), **params})
    while True:
        items, cursor = select_page(view, query, EVERY_STEP)
        keys.extend(item.key for item in items)
        if cursor is None:
            return keys
        query = parse_list_query({"cursor": cursor, "limit": str(limit)})


def expected(entries: list[Entry], text: str, latest: bool = False) -> list[tuple[str, str]]:
    needle = text.casefold()
    chosen = [
        e for e in entries
        if needle in e.name.casefold() or needle in e.text
        or needle in (e.server.get("title") or "").casefold()
        or needle in e.server.get("description", "").casefold()
    ]  # fmt: skip
    if latest:
        from gateway.semver import pick_latest

        by_name: dict[str, list[Entry]] = {}
        for entry in entries:
            by_name.setdefault(entry.name, []).append(entry)
        best = {name: pick_latest(versions) for name, versions in by_name.items()}
        chosen = [e for e in chosen if best[e.name] is e]
    return sorted({e.key for e in chosen})


def build(entries: list[Entry], builder: Builder | None = None) -> tuple[Builder, Snapshot]:
    builder = builder or Builder(CONFIG)
    snapshot = builder.build([Source("u", entries)], {"u": Origin("u", NOW)}, NOW)
    return builder, snapshot


letters = st.text(alphabet="abAB -", min_size=1, max_size=7)
servers = st.lists(
    st.tuples(
        st.builds(
            lambda a, b: f"io.{a}/{b}",
            st.sampled_from(["x", "y"]),
            st.text("abc", min_size=1, max_size=4),
        ),
        st.sampled_from(["1.0.0", "2.0.0"]),
        st.none() | letters,
        letters,
    ),
    max_size=14,
    unique_by=lambda s: (s[0], s[1]),
)


@settings(max_examples=examples(200), deadline=None)
@given(servers, st.text(alphabet="abAB -/.xy", min_size=1, max_size=5), st.booleans())
def test_the_index_answers_as_a_scan_would(
    rows: list[tuple[str, str, str | None, str]], text: str, latest: bool
) -> None:
    entries = entries_of(rows)
    builder, snapshot = build(entries)
    params = {"version": "latest"} if latest else {}
    scanned = walk(snapshot, text, **params)  # the index does not cover this build yet
    builder.index()
    assert walk(snapshot, text, **params) == scanned == expected(entries, text, latest)


@settings(max_examples=examples(100), deadline=None)
@given(servers, servers, st.text(alphabet="abAB -", min_size=3, max_size=4))
def test_an_updated_index_forgets_what_changed(
    first: list[tuple[str, str, str | None, str]],
    second: list[tuple[str, str, str | None, str]],
    text: str,
) -> None:
    """Servers come, go and change their texts between builds; ids are retired and compacted
    away, and every build's answers stay exact."""
    builder, snapshot = build(entries_of(first))
    builder.index()
    for rows in (second, first, second):
        entries = entries_of(rows)
        builder, snapshot = build(entries, builder)
        builder.index()
        assert walk(snapshot, text) == expected(entries, text)


def test_a_rare_text_is_answered_from_the_index_without_a_scan() -> None:
    rows = [(f"io.github.a/s{i:03}", "1.0.0", None, "tools for the weather") for i in range(300)]
    rows.append(("io.github.b/only", "1.0.0", "Zebra Crossing", "a rare one"))
    builder, snapshot = build(entries_of(rows))
    builder.index()
    index, token = snapshot.views["default"].search, snapshot.views["default"].token
    assert index is not None
    assert list(index.matching("zebra", token, EVERY_STEP) or ()) == ["io.github.b/only"]
    assert list(index.matching("quokka", token, EVERY_STEP) or ["?"]) == []
    common = index.matching(
        "eath", token, EVERY_STEP, after="io.github.a/s100"
    )  # a bitset, read in order
    assert common is not None
    assert [next(common), next(common)] == ["io.github.a/s100", "io.github.a/s101"]
    assert walk(snapshot, "ZEBRA cross") == [("io.github.b/only", "1.0.0")]
    assert len(walk(snapshot, "eath", limit=100)) == 300  # `eath` still finds `weather`


@pytest.mark.parametrize("indexed_before", [False, True])
def test_a_halted_index_stops_updating_and_searches_scan(indexed_before: bool) -> None:
    """As the gateway stops, an update under way ends (it would take the GIL from keeping
    the catalog) and none starts again; searches are still answered, by a scan."""
    rows = [(f"io.github.a/s{i:03}", "1.0.0", None, "tools for the weather") for i in range(40)]
    builder, snapshot = build(entries_of(rows))
    if indexed_before:  # then an update in part (a changed server)
        builder.index()
        rows[5] = ("io.github.a/s005", "1.0.0", None, "a zebra now")
        builder, snapshot = build(entries_of(rows), builder)
    builder.search.halt()
    with pytest.raises(Stopped):
        builder.index()
    view = snapshot.views["default"]
    assert view.search is not None
    assert not view.search.covers(view.token)
    assert len(walk(snapshot, "eath", limit=100)) == 40 - indexed_before


def test_the_title_and_description_are_searched_too() -> None:
    rows = [
        ("io.github.a/one", "1.0.0", "Weather Station", "Forecasts"),
        ("io.github.a/two", "1.0.0", None, "The WEATHER, daily"),
        ("io.github.a/weather", "1.0.0", None, "Named so"),
        ("io.github.a/other", "1.0.0", None, "Nothing here"),
    ]
    builder, snapshot = build(entries_of(rows))
    builder.index()
    assert [name for name, _ in walk(snapshot, "weather")] == [
        "io.github.a/one", "io.github.a/two", "io.github.a/weather",
    ]  # fmt: skip


async def test_searches_through_the_gateway_before_and_after_the_index_catches_up(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    import asyncio

    from tests.conftest import file_upstream

    items = [server_entry(f"io.github.a/s{i:02}", "1.0.0", description=f"tool {i}")
             for i in range(40)]  # fmt: skip
    items.append(server_entry("io.github.b/x", "1.0.0", description="Forecasts the WEATHER"))
    config = make_config(admin_token="t", upstreams=[file_upstream(tmp_path / "d", "u", items)])
    client = await serve(config)
    auth = {"Authorization": "Bearer t"}
    for _ in range(100):  # the index follows each build in a worker thread
        status = await (await client.get("/admin/status", headers=auth)).json()
        if status["search"]["indexed"]:
            break
        await asyncio.sleep(0.02)
    assert status["search"]["indexed"] is True
    assert status["search"]["servers"] == 41
    body = await (await client.get("/v0.1/servers?search=eather")).json()
    assert [e["server"]["name"] for e in body["servers"]] == ["io.github.b/x"]
    page = await (await client.get("/?q=Weather")).text()
    assert "io.github.b/x" in page
    assert "io.github.a/s01" not in page


@settings(max_examples=examples(100), deadline=None)
@given(servers, servers, servers, st.text(alphabet="abAB -", min_size=3, max_size=4))
def test_an_index_kept_up_incrementally_answers_exactly(
    first: list[tuple[str, str, str | None, str]],
    second: list[tuple[str, str, str | None, str]],
    third: list[tuple[str, str, str | None, str]],
    text: str,
) -> None:
    """Only incremental updates after the first build: new servers in the tail, changed ones
    with stale postings, gone ones and ones that come back; intersections of short lists."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "TAIL", 1000)
        patch.setattr(search, "_FEW", 0)
        builder, snapshot = build(entries_of(first))
        builder.index()
        for rows in (second, first + second, third, first):
            rows = list({(r[0], r[1]): r for r in rows}.values())
            entries = entries_of(rows)
            builder, snapshot = build(entries, builder)
            builder.index()
            assert walk(snapshot, text) == expected(entries, text)
            assert walk(snapshot, text, limit=1) == expected(entries, text)


def test_no_match_spans_the_title_and_the_description() -> None:
    rows = [("io.x/tool", "1.0.0", "Weather", "Forecasts")]
    builder, snapshot = build(entries_of(rows))
    for indexed in (False, True):
        if indexed:
            builder.index()
        assert walk(snapshot, "weather") == [("io.x/tool", "1.0.0")]
        assert walk(snapshot, "forecasts") == [("io.x/tool", "1.0.0")]
        for spanning in ("r\nf", "weather\nforecasts", "\n", "r forec", "rforec"):
            assert walk(snapshot, spanning) == [], spanning


def test_only_the_start_of_a_long_description_is_searched() -> None:
    """Descriptions are at most 100 characters in the schema; what an upstream sends beyond
    the first 256 is served, not searched (it would make the index as large as the text)."""
    rows = [("io.x/tool", "1.0.0", None, "x" * 300 + " needle")]
    builder, snapshot = build(entries_of(rows))
    builder.index()
    assert walk(snapshot, "xxx") == [("io.x/tool", "1.0.0")]
    assert walk(snapshot, "needle") == []


def test_hostile_texts_cannot_make_the_index_grow_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Texts in an alphabet of thousands of characters have a new trigram at every step:
    the index keeps at most GRAMS of them; servers past that are checked by every search."""
    monkeypatch.setattr(search, "GRAMS", 5_000)
    monkeypatch.setattr(search, "SERVER_GRAMS", 4096)
    rows = [  # 60 KB each, in characters no other server has
        (
            f"io.x/s{i:03}",
            "1.0.0",
            None,
            "".join(map(chr, range(0x4E00 + 300 * i, 0x4E00 + 300 * i + 300))) * 200,
        )
        for i in range(60)
    ]
    entries = entries_of(rows)
    assert all(len(e.text) <= 1 + search_text_limit() for e in entries)  # searched: the start
    builder, snapshot = build(entries)
    builder.index()
    index = snapshot.views["default"].search
    assert index is not None
    size = index.size()
    assert size["trigrams"] <= 5_000
    assert size["unindexed"] > 0
    needle = entries[-1].text[5:9]  # in a server the index could not take
    assert walk(snapshot, needle) == [("io.x/s059", "1.0.0")]


def search_text_limit() -> int:
    from gateway.entry import SEARCHED

    return 2 * SEARCHED
