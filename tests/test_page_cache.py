"""List pages kept in parts (`gateway.rendered`): a walk through more pages than the cache
holds as whole bodies is answered from the cache, a body let go is joined again byte for byte
(mirror rewrites included), and the joined bodies stay within their share of the budget."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

import orjson

from gateway.api import Api, Route, list_body
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
    """300 servers of 3 KB in pages of 10: 900 KB of bodies, three times the cache. Kept in
    parts, every page of the second walk is the answer of the first (whole bodies counted,
    the URLs were forgotten before any was asked again)."""
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
        assert rendered.body == bodies[raw]  # joined again where it was let go
    assert api.held() <= 2 * budget


def test_joined_bodies_stay_within_their_share_of_the_budget() -> None:
    snapshot = big_catalog(300)
    budget = 300_000
    api = Api(cache_bytes=budget)
    pages = walk(api, snapshot, "default", 10)
    kept: list[list[str]] = []
    for _ in range(3):
        for raw, _ in pages:
            recalled = api.recall(snapshot, raw)
            assert recalled is not None
            assert len(recalled[1].body) == recalled[1].length
        kept.append([raw for raw, rendered in pages if rendered._body is not None])
    # Walked again and again, the bodies kept stay kept (and are answered whole): a body
    # joined again is kept only where there is room, letting none go.
    assert kept[0] == kept[1] == kept[2]
    joined = [rendered for _, rendered in pages if rendered._body is not None]
    assert 0 < len(joined) < len(pages)  # some let go, the newest kept
    # in what the answers by URL leave of the budget, a quarter of it at least
    room = max(budget // 4, budget - api._by_url_bytes)
    assert sum(rendered.length + rendered.held() for rendered in joined) <= room


def test_a_walk_that_fits_the_budget_keeps_its_bodies_joined() -> None:
    """What the pages in parts leave of the budget holds joined bodies: a walk whose bodies
    fit is answered from whole bodies, none joined again."""
    snapshot = big_catalog(30)
    api = Api(cache_bytes=1_000_000)  # 90 KB of bodies: far more than a quarter of the room
    pages = walk(api, snapshot, "default", 10)
    assert all(rendered._body is not None for _, rendered in pages)


def test_every_page_of_the_demo_joined_again_is_byte_for_byte_what_was_sent() -> None:
    """The demo's views rewrite packages (`Splice`s: their parts are views of the entries'
    bytes): every page, let go and joined again, is the page first sent and the page a
    fresh build of the same items writes, with the same ETag."""
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
    assert spliced  # the demo has rewritten servers: their parts were views, not copies


def test_a_body_with_no_parts_is_never_let_go() -> None:
    rendered = Rendered(b'{"a":1}', '"x"')
    rendered.drop_body()
    assert rendered.body == b'{"a":1}'
    assert not rendered.in_parts
