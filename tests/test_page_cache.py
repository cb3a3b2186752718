"""List pages kept as their items (`gateway.rendered`): a walk through more pages than the
cache holds as whole bodies is answered from the cache, a body let go is made again byte for
byte (mirror rewrites included), the bodies kept stay within what the caches leave of the
budget, and a walk larger than the room still finds a good share of its pages."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

import orjson

import gateway.api as api_module
from gateway.api import URL_BYTES, Api, Route, list_body
from gateway.build import plain_view
from gateway.catalog import Origin
from gateway.entry import Splice, parse_item
from gateway.merge import Source, merge
from gateway.rendered import Rendered
from gateway.served import Deferred
from gateway.snapshot import Snapshot
from tests.fakes import server_entry
from tests.test_packed import demo_snapshot

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def walk(api: Api, snapshot: Snapshot, view: str, limit: int) -> list[tuple[str, Rendered]]:
    """Every page of a view, following nextCursor: (URL, answer)."""
    pages: list[tuple[str, Rendered]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
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
