"""List pages kept as their items (`gateway.rendered`): a walk through more pages than the
cache holds as whole bodies is answered from the cache, a body let go is made again byte for
byte (mirror rewrites included), the bodies kept stay within what the caches leave of the
budget, and a walk larger than the room still finds a good share of its pages."""

from __future__ import annotations

import gzip
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.api as api_module
from gateway.api import URL_BYTES, Api, Route
from gateway.build import plain_view
from gateway.catalog import Origin
from gateway.config import FederationConfig, GatewaySettings, UpstreamSettings
from gateway.entry import Entry, Splice, parse_item
from gateway.merge import Source, merge
from gateway.rendered import Rendered, list_body
from gateway.served import Deferred
from gateway.snapshot import Builder, Snapshot
from tests.conftest import examples
from tests.fakes import server_entry
from tests.test_packed import demo_snapshot

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def walk(
    api: Api, snapshot: Snapshot, view: str, limit: int, extra: dict[str, str] | None = None
) -> list[tuple[str, Rendered]]:
    """Every page of a view, following nextCursor: (URL, answer)."""
    pages: list[tuple[str, Rendered]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)} | (extra or {}) | ({"cursor": cursor} if cursor else {})
        raw = "/v0.1/servers?" + urllib.parse.urlencode(params)
        rendered = api.answer(snapshot, Route(view, "list"), params, raw=raw)
        assert isinstance(rendered, Rendered)
        pages.append((raw, rendered))
        cursor = orjson.loads(rendered.body)["metadata"].get("nextCursor")
        if not cursor:
            return pages


def big_catalog(servers: int) -> Snapshot:
    items = [
        server_entry(f"io.github.a/s{i:03}", "1.0.0", description="d" * 3000)
        for i in range(servers)
    ]
    entries = [parse_item(item, seen_at=NOW) for item in items]
    view = plain_view("default", merge([Source("u", entries)]), {"u": Origin("u", NOW)}, "x")
    return Snapshot(views={"default": view}, built_at=NOW)


def test_a_walk_larger_than_the_cache_in_whole_bodies_is_answered_from_it() -> None:
    """300 servers of 3 KB in pages of 10: 900 KB of bodies, three times the cache. Kept as
    their items, every page of the second walk is the answer of the first (whole bodies
    counted, the URLs were forgotten before any was asked again)."""
    snapshot = big_catalog(300)
    budget = 300_000
    api = Api(cache_bytes=budget)
    first = walk(api, snapshot, "default", 10)
    assert sum(rendered.length for _, rendered in first) > 3 * budget
    bodies = {raw: rendered.body for raw, rendered in first}
    for raw, rendered in first:
        recalled = api.recall(snapshot, raw)
        assert recalled is not None, raw
        assert recalled[1] is rendered, raw
        assert rendered.body == bodies[raw]  # made again where it was let go
    assert api.held() <= 2 * budget


def test_bodies_kept_stay_within_their_share_of_the_budget() -> None:
    snapshot = big_catalog(300)
    budget = 600_000  # room for about 12 of the 30 bodies
    api = Api(cache_bytes=budget)
    pages = walk(api, snapshot, "default", 10)
    kept: list[list[str]] = []
    for _ in range(3):
        for raw, _ in pages:
            recalled = api.recall(snapshot, raw)
            assert recalled is not None
            assert len(recalled[1].body) == recalled[1].length
        kept.append([raw for raw, rendered in pages if rendered._body is not None])
    # Walked again and again, the bodies kept stay kept (and are answered whole) from the
    # second round on: a body made again takes only the room of one not answered lately.
    assert kept[1] == kept[2]
    whole = [rendered for _, rendered in pages if rendered._body is not None]
    assert 0 < len(whole) < len(pages)  # some let go, the newest kept
    # in what the caches leave of the budget, an eighth of it at least
    room = max(budget // 8, budget - int(api._cache.currsize) - api._by_url_bytes)
    assert sum(rendered.length + rendered.held() for rendered in whole) <= room


def test_a_walk_that_fits_the_budget_keeps_its_bodies_whole() -> None:
    """What the pages leave of the budget holds their bodies: a walk whose bodies fit is
    answered from whole bodies, none made again."""
    snapshot = big_catalog(30)
    api = Api(cache_bytes=1_000_000)  # 90 KB of bodies: far more than a quarter of the room
    pages = walk(api, snapshot, "default", 10)
    assert all(rendered._body is not None for _, rendered in pages)


def test_every_page_of_the_demo_made_again_is_byte_for_byte_what_was_sent() -> None:
    """The demo's views rewrite packages (`Splice`s and `Deferred` rewrites): every page, let
    go and made again, is the page first sent and the page the same items write, with the
    same ETag."""
    snapshot = demo_snapshot()
    spliced = 0
    for name, view in snapshot.views.items():
        api = Api()
        for _, rendered in walk(api, snapshot, name, 2):
            sent, etag = rendered.body, rendered.etag
            rendered.drop_body()
            assert rendered._body is None
            again = rendered.body
            assert again == sent
            assert again is not sent
            assert rendered.etag == etag
            document = orjson.loads(again)
            items = [
                view.lookup(entry["server"]["name"], entry["server"]["version"], True)
                for entry in document["servers"]
            ]
            assert None not in items
            written = list_body(view, items, document["metadata"])  # type: ignore[arg-type]
            assert written == sent
        for item in view.every.items:
            server = item.server_json
            made = server.made()[0] if isinstance(server, Deferred) else server
            spliced += isinstance(made, Splice)
    assert spliced  # the demo has rewritten servers


def test_a_body_that_cannot_be_remade_is_never_let_go() -> None:
    rendered = Rendered(b'{"a":1}', '"x"')
    rendered.drop_body()
    assert rendered.body == b'{"a":1}'
    assert not rendered.remade


def test_a_walk_through_more_pages_than_fit_is_still_answered_from_the_cache_in_part() -> None:
    """When the room runs out, a URL chosen at random is forgotten, not all of them (nor the
    oldest): walked again and again, a walk half again the size of the cache finds a good
    share of its pages there."""
    api_module._CHANCE.seed(7)  # which are forgotten is random: this run is not
    snapshot = big_catalog(300)
    pages = walk(Api(), snapshot, "default", 2)
    one_page = pages[0][1].held() + len(pages[0][0]) + URL_BYTES
    api = Api(cache_bytes=int(2 * len(pages) * one_page / 1.5))  # URLs get half: 2/3 fit
    walk(api, snapshot, "default", 2)
    found = 0
    for _ in range(3):
        for raw, rendered in pages:
            recalled = api.recall(snapshot, raw)
            if recalled is not None:
                found += 1
                assert recalled[1].body == rendered.body
            else:  # asked again: made anew and remembered
                params = dict(urllib.parse.parse_qsl(raw.partition("?")[2]))
                api.answer(snapshot, Route("default", "list"), params, raw=raw)
    # Forgetting at random, a page survives a walk's length with chance e^-(misses / room):
    # about 0.39 here. (Emptied when full, or oldest first, a walk this size found none.)
    assert found > 0.3 * 3 * len(pages), found
    assert api.held() <= 2 * int(2 * len(pages) * one_page / 1.5)


def test_pages_asked_for_again_and_again_stay_whole_among_one_off_answers() -> None:
    """A stream of pages nobody asks for twice (new searches, new cursors) must not push out
    the bodies of the pages everyone asks for: those are let go last, and a body made again
    takes the room of unasked ones (letting none go, they stayed made anew forever)."""
    snapshot = big_catalog(300)
    api = Api(cache_bytes=2_400_000)  # every URL fits; the bodies: about 30 of 30 KB
    hot = walk(api, snapshot, "default", 10)[:3]
    for number in range(300):  # one-off pages: each asked once, 30 KB each
        params = {"limit": "10", "search": f"s{number % 300:03}"}
        raw = "/v0.1/servers?" + urllib.parse.urlencode(params) + f"&n={number}"
        api.answer(snapshot, Route("default", "list"), params, raw=raw)
        if number % 10 == 9:
            for raw, rendered in hot:  # asked for again and again
                recalled = api.recall(snapshot, raw)
                assert recalled is not None
                assert recalled[1].body == rendered.body
    assert all(rendered._body is not None for _, rendered in hot)


# -- carried over to a newer snapshot -------------------------------------------------------------

LATER = datetime(2026, 6, 2, tzinfo=UTC)
TWO = FederationConfig(
    directory=Path("."),
    gateway=GatewaySettings(
        upstreams=[UpstreamSettings(name=name, file=Path(f"{name}.json")) for name in "ab"]
    ),
)


def upstream_entries(
    upstream: str, servers: int, changed: frozenset[int] = frozenset()
) -> list[Entry]:
    """An upstream's servers (its own namespace, as upstreams mostly have), with new
    descriptions for those `changed`."""
    return [
        parse_item(
            server_entry(f"io.github.{upstream}/s{i:03}", "1.0.0",
                         description=f"server {i}" + (" changed" if i in changed else "")),
            seen_at=NOW,
        )
        for i in range(servers)
    ]  # fmt: skip


def two_upstreams(
    builder: Builder, b: list[Entry], b_synced: datetime = NOW, a: list[Entry] | None = None
) -> Snapshot:
    a = a if a is not None else upstream_entries("a", 60)
    origins = {"a": Origin("a", NOW), "b": Origin("b", b_synced)}
    return builder.build([Source("a", a), Source("b", b)], origins, NOW)


def test_pages_a_rebuild_did_not_change_are_carried_over_and_only_those() -> None:
    """Upstream b syncs a change (its `syncedAt` moves: each of its entries changes): a's pages
    are carried over to the new snapshot (the same answers: body, ETag and gzip form, not made
    again), b's are made anew; every page is what a cache never used would answer."""
    builder = Builder(TWO)
    a = upstream_entries("a", 60)
    first = two_upstreams(builder, upstream_entries("b", 60), a=a)
    api = Api()
    before = dict(walk(api, first, "default", 10))
    for rendered in before.values():
        rendered.gzipped()
    second = two_upstreams(builder, upstream_entries("b", 60, frozenset({7})), LATER, a=a)
    after = dict(walk(api, second, "default", 10))
    fresh = dict(walk(Api(), second, "default", 10))
    assert list(after) == list(fresh)
    carried = {raw for raw, rendered in after.items() if rendered is before.get(raw)}
    a_pages = {raw for raw, rendered in fresh.items() if b"io.github.b/" not in rendered.body}
    assert carried == a_pages
    assert 4 <= len(carried) < len(after)
    for raw, rendered in after.items():
        assert (rendered.body, rendered.etag) == (fresh[raw].body, fresh[raw].etag), raw
        assert gzip.decompress(rendered.gzipped()) == fresh[raw].body


def test_nothing_is_carried_over_once_the_snapshot_before_is_too_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api_module, "CARRY_SECONDS", -1.0)
    builder = Builder(TWO)
    a = upstream_entries("a", 30)
    first = two_upstreams(builder, upstream_entries("b", 30), a=a)
    api = Api()
    before = dict(walk(api, first, "default", 10))
    second = two_upstreams(builder, upstream_entries("b", 30), LATER, a=a)
    after = dict(walk(api, second, "default", 10))
    assert not any(rendered is before[raw] for raw, rendered in after.items())


def changed(base: list[Entry], upstream: str, changes: frozenset[int], count: int) -> list[Entry]:
    """An upstream's entries after a sync: the same objects for servers it did not change (as
    an incremental sync keeps them), new ones for those it did, `count` servers in all."""
    made = upstream_entries(upstream, count, changes)
    return [base[i] if i < len(base) and i not in changes else made[i] for i in range(count)]


changes = st.fixed_dictionaries({
    "a_changed": st.frozensets(st.integers(0, 39), max_size=5),
    "b_changed": st.frozensets(st.integers(0, 39), max_size=5),
    "a_count": st.integers(36, 42),
    "b_count": st.integers(36, 42),
    "b_synced": st.sampled_from([NOW, LATER]),
    "limit": st.sampled_from([3, 7, 10]),
    "latest": st.booleans(),
})  # fmt: skip


@settings(max_examples=examples(60), deadline=None)
@given(changes)
def test_whatever_a_rebuild_changed_every_page_after_it_is_the_fresh_answer(
    change: dict[str, Any],
) -> None:
    """The class: servers changed, added or gone in either upstream, a sync time moved or not,
    any page size, the whole list or the latest: after the swap each page a walk asks (some
    carried over, some made anew) is byte for byte, ETag and all, what a new cache answers."""
    builder = Builder(TWO)
    a, b = upstream_entries("a", 40), upstream_entries("b", 40)
    first = two_upstreams(builder, b, a=a)
    api = Api()
    extra = {"version": "latest"} if change["latest"] else {}
    before = dict(walk(api, first, "default", change["limit"], extra))
    bodies = {raw: rendered.body for raw, rendered in before.items()}
    second = two_upstreams(
        builder,
        changed(b, "b", change["b_changed"], change["b_count"]),
        change["b_synced"],
        a=changed(a, "a", change["a_changed"], change["a_count"]),
    )
    after = walk(api, second, "default", change["limit"], extra)
    fresh = walk(Api(), second, "default", change["limit"], extra)
    assert [raw for raw, _ in after] == [raw for raw, _ in fresh]
    for (raw, rendered), (_, made) in zip(after, fresh, strict=True):
        assert (rendered.body, rendered.etag) == (made.body, made.etag), raw
    # carried over: every page that did not change (the same bytes at the same URL), only those
    carried = {raw for raw, rendered in after if rendered is before.get(raw)}
    assert carried == {raw for raw, made in fresh if bodies.get(raw) == made.body}
