"""List paging and filters over a built catalog, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateway.build import plain_view
from gateway.catalog import Origin, ViewCatalog
from gateway.entry import parse_item
from gateway.errors import BadRequest, ValidationFailed
from gateway.merge import Source, merge
from gateway.pacing import Allowance
from gateway.query import ListQuery, parse_list_query, select_page
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EVERY_STEP = Allowance(None)  # no limit: as a worker thread runs a search


def view_of(*items: dict[str, object]) -> ViewCatalog:
    entries = [parse_item(item, seen_at=NOW) for item in items]
    merged = merge([Source("up", entries)])
    return plain_view("default", merged, {"up": Origin("up", NOW)}, "com.example.gw")


CATALOG = view_of(
    server_entry("io.github.b/weather", "1.0.0", published="2026-01-01T00:00:00Z"),
    server_entry("io.github.b/weather", "1.1.0", published="2026-02-01T00:00:00Z"),
    server_entry("io.github.a/Zeta", "0.1.0"),
    server_entry("io.github.A/upper", "1.0.0"),
    server_entry("io.github.c/gone", "1.0.0", status="deleted", updated="2026-03-01T00:00:00Z"),
    server_entry("io.github.c/old", "2.0.0", status="deprecated"),
    server_entry("io.github.d/weather-radar", "3.0.0", updated="2026-04-01T00:00:00Z"),
)


def walk(view: ViewCatalog, params: dict[str, str]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    query = parse_list_query(params)
    while True:
        items, cursor = select_page(view, query, EVERY_STEP)
        seen.extend(item.key for item in items)
        if cursor is None:
            return seen
        query = parse_list_query({"cursor": cursor, "limit": params.get("limit", "30")})


def test_byte_order_and_deleted_left_out() -> None:
    assert walk(CATALOG, {"limit": "2"}) == [
        ("io.github.A/upper", "1.0.0"),  # uppercase sorts before lowercase
        ("io.github.a/Zeta", "0.1.0"),
        ("io.github.b/weather", "1.0.0"),
        ("io.github.b/weather", "1.1.0"),
        ("io.github.c/old", "2.0.0"),  # deprecated is listed
        ("io.github.d/weather-radar", "3.0.0"),
    ]


def test_include_deleted_and_updated_since() -> None:
    assert ("io.github.c/gone", "1.0.0") in walk(CATALOG, {"include_deleted": "true"})
    since = walk(CATALOG, {"updated_since": "2026-02-15T00:00:00Z"})
    assert since == [("io.github.c/gone", "1.0.0"), ("io.github.d/weather-radar", "3.0.0")]


def test_search_is_case_insensitive_and_carried_by_the_cursor() -> None:
    # Page 2 is requested with the cursor only (VS Code drops `search`), and stays filtered.
    assert walk(CATALOG, {"search": "WEATHER", "limit": "1"}) == [
        ("io.github.b/weather", "1.0.0"),
        ("io.github.b/weather", "1.1.0"),
        ("io.github.d/weather-radar", "3.0.0"),
    ]


def test_version_latest_and_exact() -> None:
    latest = walk(CATALOG, {"version": "latest", "limit": "2"})
    assert ("io.github.b/weather", "1.1.0") in latest
    assert ("io.github.b/weather", "1.0.0") not in latest
    assert len(latest) == 5
    assert walk(CATALOG, {"version": "1.0.0"}) == [
        ("io.github.A/upper", "1.0.0"),
        ("io.github.b/weather", "1.0.0"),
    ]


def test_is_latest_recomputed_in_bodies() -> None:
    bodies = {item.key: orjson.loads(CATALOG.body(item)) for item in CATALOG.every.items}
    official = "io.modelcontextprotocol.registry/official"
    assert bodies[("io.github.b/weather", "1.1.0")]["_meta"][official]["isLatest"] is True
    assert bodies[("io.github.b/weather", "1.0.0")]["_meta"][official]["isLatest"] is False
    assert bodies[("io.github.c/gone", "1.0.0")]["_meta"][official]["isLatest"] is False
    assert bodies[("io.github.b/weather", "1.0.0")]["_meta"]["com.example.gw"]["upstream"] == "up"


def test_no_cursor_after_the_last_match() -> None:
    items, cursor = select_page(
        CATALOG, parse_list_query({"search": "radar", "limit": "1"}), EVERY_STEP
    )
    assert [item.key for item in items] == [("io.github.d/weather-radar", "3.0.0")]
    assert cursor is None


def test_walk_survives_a_catalog_swap_between_pages() -> None:
    query = parse_list_query({"limit": "2"})
    first, cursor = select_page(CATALOG, query, EVERY_STEP)
    assert cursor is not None
    # An entry sorting before the cursor appears, one after it disappears: keyset paging
    # neither repeats nor skips entries that exist for the whole walk.
    swapped = view_of(
        server_entry("io.github.0/new", "1.0.0"),
        server_entry("io.github.b/weather", "1.0.0"),
        server_entry("io.github.b/weather", "1.1.0"),
        server_entry("io.github.c/old", "2.0.0", status="deprecated"),
        server_entry("io.github.A/upper", "1.0.0"),
        server_entry("io.github.a/Zeta", "0.1.0"),
    )
    rest, _ = select_page(swapped, parse_list_query({"cursor": cursor, "limit": "10"}), EVERY_STEP)
    keys = [item.key for item in first] + [item.key for item in rest]
    assert keys == [
        ("io.github.A/upper", "1.0.0"),
        ("io.github.a/Zeta", "0.1.0"),
        ("io.github.b/weather", "1.0.0"),
        ("io.github.b/weather", "1.1.0"),
        ("io.github.c/old", "2.0.0"),
    ]


@pytest.mark.parametrize(
    ("params", "location", "message"),
    [
        ({"limit": "101"}, "query.limit", "expected number <= 100"),
        ({"limit": "0"}, "query.limit", "expected number >= 1"),
        ({"limit": "ten"}, "query.limit", "expected integer"),
        ({"limit": "1_0"}, "query.limit", "expected integer"),
        ({"limit": " 5"}, "query.limit", "expected integer"),
        ({"limit": "\uff15"}, "query.limit", "expected integer"),  # a full-width 5
        ({"include_deleted": "maybe"}, "query.include_deleted", "expected boolean"),
    ],
)
def test_validation_errors(params: dict[str, str], location: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query(params)
    assert [(e.location, e.message) for e in caught.value.errors] == [(location, message)]


@pytest.mark.parametrize(
    "params",
    [
        {"updated_since": "yesterday"},
        {"updated_since": "2026-01-01"},
        {"updated_since": "2026-01-01T00:00:00"},  # no zone
        {"updated_since": "2026-01-01T00:00:00Z", "include_deleted": "false"},
        {"cursor": "not-a-cursor"},
    ],
)
def test_bad_requests(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        parse_list_query(params)


def test_unencoded_plus_offset_is_understood() -> None:
    query = parse_list_query({"updated_since": "2026-01-01T01:00:00 01:00"})
    assert isinstance(query, ListQuery)
    assert query.since == datetime(2026, 1, 1, tzinfo=UTC)


def test_cursor_conflicting_with_explicit_filter_is_a_400() -> None:
    _, cursor = select_page(
        CATALOG, parse_list_query({"search": "weather", "limit": "1"}), EVERY_STEP
    )
    assert cursor is not None
    with pytest.raises(BadRequest, match="different search"):
        parse_list_query({"cursor": cursor, "search": "radar"})
    same = parse_list_query({"cursor": cursor, "search": "weather"})
    assert same.walk.search == "weather"


@pytest.mark.parametrize("search", ["o\x00b", "\x00", "weather\x00"])
def test_a_search_holding_nul_is_refused_from_a_cursor_too(search: str) -> None:
    """NUL separates the texts a search looks in (a title from its description): a needle
    with one would match across them. The path refuses `%00`; a cursor carries it too."""
    from gateway.cursor import Cursor, Walk, encode_cursor

    with pytest.raises(ValidationFailed, match="validation failed"):
        parse_list_query({"search": search})
    cursor = encode_cursor(Cursor("io.github.a/b", "1.0.0", Walk(search=search)))
    with pytest.raises(ValidationFailed) as raised:
        parse_list_query({"cursor": cursor})
    assert raised.value.errors[0].message == "NUL is not allowed"
