"""The catalog page's list over a built catalog, without HTTP: filters, both orders, paging
forward and back with key cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.build import plain_view
from gateway.catalog import Origin, ViewCatalog
from gateway.entry import parse_item
from gateway.errors import BadRequest, OverAllowance
from gateway.listing import (
    PAGE_SIZE,
    Facts,
    Filters,
    checked_of,
    paced_sorted,
    package_facts,
    select,
    select_all,
    view_checks,
    view_facts,
)
from gateway.merge import Source, merge
from gateway.pacing import Allowance
from gateway.released import release
from gateway.snapshot import Snapshot
from tests.conftest import examples
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NAMESPACE = "com.example.gw"
EVERY_STEP = Allowance(None)


def view_of(items: list[dict[str, Any]]) -> ViewCatalog:
    entries = [parse_item(item, seen_at=NOW) for item in items]
    return plain_view("default", merge([Source("up", entries)]), {"up": Origin("up", NOW)},
                      NAMESPACE)  # fmt: skip


def stamp(minutes: int) -> str:
    return (NOW - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(index: int, kind: str, status: str, minutes: int) -> dict[str, Any]:
    name = f"io.github.s{index % 7}/server-{index:04d}"
    if kind == "remote":
        return server_entry(name, "1.0.0", status=status, updated=stamp(minutes),
                            remotes=[{"type": "streamable-http", "url": "https://x.example/m"}])  # fmt: skip
    package = {"registryType": kind, "identifier": f"pkg-{index}", "version": "1.0.0"}
    return server_entry(name, "1.0.0", status=status, updated=stamp(minutes),
                        packages=[package], description=f"Server {index} does {kind} things")  # fmt: skip


def walk_forward(
    facts: list[Facts], filters: Filters, query: dict[str, str], size: int = PAGE_SIZE
) -> list[list[str]]:
    pages, asked = [], dict(query)
    while True:
        found = select(facts, filters, None, asked, EVERY_STEP, size)
        pages.append([f.item.name for f in found.shown])
        assert len(pages) <= len(facts) + 1, "the walk goes round in circles"
        if found.next is None:
            return pages
        asked = {**query, "after": found.next}


def walk_back(
    facts: list[Facts], filters: Filters, query: dict[str, str], last: str, size: int
) -> list[list[str]]:
    """From the page after `last`, following `before` cursors to the first."""
    pages = []
    found = select(facts, filters, None, {**query, "after": last}, EVERY_STEP, size)
    while True:
        pages.append([f.item.name for f in found.shown])
        assert len(pages) <= len(facts) + 1, "the walk goes round in circles"
        if found.previous is None:
            return pages[::-1]
        asked = {**query, "before": found.previous}
        found = select(facts, filters, None, asked, EVERY_STEP, size)


CATALOG = view_of([entry(i, k, s, m) for i, (k, s, m) in enumerate(
    [("npm", "active", 5), ("pypi", "deprecated", 5), ("remote", "active", 1),
     ("oci", "active", 9), ("npm", "deprecated", 2)] * 30)])  # fmt: skip


def test_filters_narrow_by_transport_type_and_status() -> None:
    known = view_facts(CATALOG, EVERY_STEP)

    def names(**asked: str) -> set[str]:
        filters = Filters.of(asked, 256)
        return {f.item.name for f in select(known.by_name, filters, None, asked,
                                            EVERY_STEP).shown}  # fmt: skip

    assert len(names(transport="remote")) == 30
    assert all(int(n[-4:]) % 5 == 2 for n in names(transport="remote"))
    assert all(int(n[-4:]) % 5 in (0, 4) for n in names(type="npm"))
    assert all(int(n[-4:]) % 5 in (1, 4) for n in names(status="deprecated"))
    assert {int(n[-4:]) % 5 for n in names(status="active", transport="local")} == {0, 3}
    assert names(q="PYPI things", type="pypi")
    assert all(int(n[-4:]) % 5 == 1 for n in names(q="pypi things"))


def test_sorting_by_updated_puts_the_newest_first_ties_by_name() -> None:
    known = view_facts(CATALOG, EVERY_STEP)
    filters = Filters.of({"sort": "updated"}, 256)
    shown = select(known.ordered("updated"), filters, None, {}, EVERY_STEP).shown
    keys = [(-f.updated, f.item.name) for f in shown]
    assert keys == sorted(keys)
    assert [int(f.item.name[-4:]) % 5 for f in shown[:30]] == [2] * 30  # a minute ago


def test_the_page_before_a_server_near_the_top_is_a_whole_first_page() -> None:
    """Servers added since a page was shown: the page before it is still a whole page."""
    ordered = view_facts(CATALOG, EVERY_STEP).by_name
    third = ordered[2].item.name
    found = select(ordered, Filters(), None, {"before": third}, EVERY_STEP, 10)
    assert [f.item.name for f in found.shown] == [f.item.name for f in ordered[:10]]
    assert found.previous is None
    assert found.next == ordered[9].item.name


@pytest.mark.parametrize(
    ("query", "complaint"),
    [({"sort": "price"}, "sort must be one of"), ({"transport": "pigeon"}, "transport"),
     ({"type": "NPM!"}, "type must be"), ({"after": "a", "before": "b"}, "not both"),
     ({"sort": "updated", "after": "yesterday"}, "not a cursor")],
)  # fmt: skip
def test_a_bad_query_names_what_is_wrong(query: dict[str, str], complaint: str) -> None:
    known = view_facts(CATALOG, EVERY_STEP)

    def ask() -> None:
        filters = Filters.of(query, 256)
        select(known.ordered(filters.sort), filters, None, query, EVERY_STEP)

    with pytest.raises(BadRequest, match=complaint):
        ask()


def test_package_facts_take_the_worst_mirror_answer_and_signals_every_package_has() -> None:
    good = {"state": "verified"}
    checks = [
        {"verification": "available", "signals": {"signature": good, "provenance": good}},
        {"verification": "unknown", "signals": {"signature": good,
                                                "provenance": {"state": "absent"}}},
    ]  # fmt: skip
    assert package_facts(checks) == ("unknown", frozenset({"signature"}))
    assert package_facts([{"verification": "missing"}, {"verification": "unknown"}]) == (
        "missing", frozenset())  # fmt: skip
    assert package_facts([{"signals": {"scan": {"state": "clean"}}}]) == (None,
                                                                          frozenset({"scan"}))  # fmt: skip
    assert package_facts("not a list") == (None, frozenset())
    assert package_facts([{"verification": "made-up", "signals": "no"}]) == (None, frozenset())


ROWS = st.lists(
    st.tuples(st.sampled_from(["npm", "pypi", "oci", "remote"]),
              st.sampled_from(["active", "deprecated"]), st.integers(0, 5)),
    min_size=0, max_size=130,
)  # fmt: skip
ASKED = st.fixed_dictionaries(
    {},
    optional={"transport": st.sampled_from(["remote", "local"]),
              "type": st.sampled_from(["npm", "pypi", "oci"]),
              "status": st.sampled_from(["active", "deprecated"]),
              "sort": st.sampled_from(["name", "updated"]), "q": st.sampled_from(["server-00", "oci"])},
)  # fmt: skip


@settings(max_examples=examples(80), deadline=None)
@given(ROWS, ASKED, st.integers(1, 7))
def test_paging_forward_and_back_shows_each_match_once_in_order(
    rows: list[tuple[str, str, int]], asked: dict[str, str], size: int
) -> None:
    view = view_of([entry(i, k, s, m) for i, (k, s, m) in enumerate(rows)])
    filters = Filters.of(asked, 256)
    facts = view_facts(view, EVERY_STEP).ordered(filters.sort)
    expected = [
        f.item.name for f in facts
        if filters.admits(f) and (not filters.search or filters.search in f.item.name_folded
                                  or filters.search in f.item.registry_meta.entry.text)
    ]  # fmt: skip
    forward = walk_forward(facts, filters, asked, size)
    assert [name for page in forward for name in page] == expected
    assert all(len(page) == size for page in forward[:-1])
    assert select(facts, filters, None, asked, EVERY_STEP).matching == len(expected)
    if len(forward) > 1:  # from the last page back to the first: the same pages
        last_cursor = forward[-2][-1]
        if filters.sort == "updated":
            by_name = {f.item.name: f for f in facts}
            last_cursor = f"{by_name[last_cursor].updated} {last_cursor}"
        back = walk_back(facts, filters, asked, last_cursor, size)
        # the same names; the pages line up from the first, which is a whole one
        assert [n for page in back for n in page] == expected
        assert all(len(page) == size for page in back[:-1])
        assert back[0] == forward[0]


def test_update_times_before_1970_sort_as_times() -> None:
    view = view_of([
        server_entry("io.github.a/older", "1.0.0", updated="1969-12-31T23:59:59.900000Z"),
        server_entry("io.github.b/newer", "1.0.0", updated="1970-01-01T00:00:00.100000Z"),
    ])  # fmt: skip
    ordered = view_facts(view, EVERY_STEP).ordered("updated")
    assert [f.item.name for f in ordered] == ["io.github.b/newer", "io.github.a/older"]


def test_a_cursor_past_the_last_match_shows_the_last_page() -> None:
    """A stale Next link (servers gone since): the last page, not an empty dead end."""
    ordered = view_facts(CATALOG, EVERY_STEP).by_name
    past = {"after": "io.github.zzz/after-everything"}
    found = select(ordered, Filters(), None, past, EVERY_STEP, 10)
    assert [f.item.name for f in found.shown] == [f.item.name for f in ordered[-10:]]
    assert found.next is None
    assert found.previous == ordered[-10].item.name
    plain = select_all(CATALOG, past, 10)
    assert [f.item.name for f in plain.shown] == [f.item.name for f in ordered[-10:]]


def test_only_the_package_types_the_gateway_knows_are_asked_for() -> None:
    known = ("npm", "pypi", "oci")
    assert Filters.of({"type": "pypi"}, 256, known).type == "pypi"
    for hostile in ("NuGet", "None", "x" * 40, "made-up"):
        with pytest.raises(BadRequest, match="type must be a package type: npm, pypi, oci"):
            Filters.of({"type": hostile}, 256, known)


def test_a_catalog_too_large_for_the_loop_is_refused_there_before_any_work() -> None:
    """On the serving loop (a few steps), the facts of a view that needs more are not begun:
    `OverAllowance` at once, and nothing is kept half made."""
    view = view_of([entry(i, "npm", "active", i) for i in range(300)])
    with pytest.raises(OverAllowance):
        view_facts(view, Allowance(0))
    with pytest.raises(OverAllowance):
        view_checks(view, NAMESPACE, Allowance(0))
    assert view.memo == {}
    small = view_of([entry(0, "npm", "active", 1)])
    assert len(view_facts(small, Allowance(0)).by_name) == 1  # small enough: done where asked


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.text("ab", max_size=3)), max_size=9000))
def test_the_paced_sort_is_the_sort(values: list[tuple[int, str]]) -> None:
    assert paced_sorted(values, lambda v: v, EVERY_STEP) == sorted(values)


def test_what_the_mirrors_said_is_shared_not_copied_per_server() -> None:
    body = b'{"server":{},"_meta":{"gw":{"packages":[{"verification":"missing"}]}}}'
    assert checked_of(body, "gw") is checked_of(body, "gw")


def test_releasing_a_snapshot_lets_go_of_what_its_pages_worked_out() -> None:
    view = view_of([entry(i, "npm", "active", i) for i in range(20)])
    facts = view_facts(view, EVERY_STEP)
    view_checks(view, NAMESPACE, EVERY_STEP)
    release(Snapshot({"default": view}, built_at=NOW))
    assert view.memo == {}
    assert facts.by_name == []
    assert facts.by_updated == []
