"""A search gets a few steps of work on the serving loop; one that needs more (a text whose
trigrams most servers have, a short text that scans) is finished in a worker thread, with the
same answer, and remembered like any other."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.api import Api, Later
from gateway.app import REFRESHER
from gateway.catalog import Origin
from gateway.config import FederationConfig, GatewaySettings, UpstreamSettings
from gateway.entry import parse_item
from gateway.errors import OverAllowance
from gateway.hits import scan
from gateway.inplace import in_place
from gateway.merge import Source
from gateway.pacing import ON_LOOP, STEP_SECONDS, Allowance
from gateway.pack import pack
from gateway.packed import Packed
from gateway.rendered import Rendered
from gateway.routes import Route
from gateway.snapshot import Builder, Snapshot
from tests.conftest import file_upstream
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONFIG = FederationConfig(
    directory=Path("."),
    gateway=GatewaySettings(upstreams=[UpstreamSettings(name="u", file=Path("u.json"))]),
)
WORDS = ["weather", "calendar", "tickets", "storage", "metrics", "wiki"]


def snapshot(servers: int = 3000, indexed: bool = True) -> Snapshot:
    entries = [
        parse_item(
            server_entry(f"io.github.org{i % 7}/s{i:05d}", "1.0.0",
                         description=" ".join(WORDS[(i + k) % 6] for k in range(4))),
            seen_at=NOW,
        )
        for i in range(servers)
    ]  # fmt: skip
    builder = Builder(CONFIG)
    built = builder.build([Source("u", entries)], {"u": Origin("u", NOW)}, NOW)
    if indexed:
        builder.index()
    return built


def test_an_allowance_gives_so_many_steps_and_none_gives_any() -> None:
    loop = Allowance(3)
    for _ in range(3):
        loop.step()
    with pytest.raises(OverAllowance):
        loop.step()
    thread = Allowance(None)
    for _ in range(100_000):
        thread.step()


@pytest.mark.parametrize(
    ("text", "indexed"),
    [("tickets wiki", True),  # no server has it; a sixth have its trigrams: each is checked
     ("zq", False)],  # a scan (the index does not cover the catalog yet)
)  # fmt: skip
async def test_a_long_search_is_finished_off_the_loop_with_the_same_answer(
    text: str, indexed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = snapshot(indexed=indexed)
    route, params, raw = Route("default", "list"), {"search": text}, f"/v0.1/servers?search={text}"
    monkeypatch.setattr("gateway.api.ON_LOOP", 0)  # the loop gives it no step at all
    api = Api()
    later = api.answer(catalog, route, params, raw=raw)
    assert isinstance(later, Later)  # over what the loop gives one request
    rendered = await later.finished()
    assert api.answer(catalog, route, params) is rendered  # remembered like any answer
    assert api.recall(catalog, raw) == ("list", rendered)
    monkeypatch.setattr("gateway.api.ON_LOOP", 10**9)  # as if the loop gave it all it needs
    whole = Api().answer(catalog, route, params, raw=raw)
    assert isinstance(whole, Rendered)
    assert (rendered.body, rendered.etag) == (whole.body, whole.etag)


async def test_searches_within_the_allowance_stay_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.api.ON_LOOP", 0)  # a search that checks few needs no step
    catalog = snapshot()
    answer = Api().answer(catalog, Route("default", "list"), {"search": "s00042"})
    assert isinstance(answer, Rendered)
    assert b'"io.github.org0/s00042"' in answer.body


async def test_a_later_answer_from_a_replaced_snapshot_is_given_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.api.ON_LOOP", 0)
    old, new = snapshot(), snapshot(600)
    api = Api()
    route, params = Route("default", "list"), {"search": "tickets wiki"}
    later = api.answer(old, route, params, raw="/a")
    assert isinstance(later, Later)
    api.answer(new, route, {"search": "s00001"}, raw="/b")  # a new snapshot is served
    rendered = await later.finished()
    assert b'"servers":[]' in rendered.body
    assert api.recall(new, "/a") is None


async def test_the_api_and_the_catalog_page_answer_a_long_search_from_a_thread(
    tmp_path: Path, make_config: Any, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = [
        server_entry(f"io.github.org{i % 7}/s{i:05d}", "1.0.0",
                     description=" ".join(WORDS[(i + k) % 6] for k in range(4)))
        for i in range(2400)
    ]  # fmt: skip
    servers.append(server_entry("io.github.odd/one", "1.0.0", description="tickets wiki"))
    client = await serve(make_config(upstreams=[file_upstream(tmp_path / "d", "u", servers)]))
    await asyncio.to_thread(client.app[REFRESHER].builder.index)
    monkeypatch.setattr("gateway.api.ON_LOOP", 0)
    monkeypatch.setattr("gateway.pages.ON_LOOP", 0)
    answer = await client.get("/v0.1/servers", params={"search": "tickets wiki"})
    assert answer.status == 200
    body = await answer.json()
    assert [e["server"]["name"] for e in body["servers"]] == ["io.github.odd/one"]
    page = await client.get("/", params={"q": "tickets wiki"})
    assert page.status == 200
    assert "io.github.odd/one" in await page.text()


def test_a_scan_of_a_catalog_served_in_place_holds_the_loop_no_longer() -> None:
    """After a restart the catalog is served in place: each item is made as it is first
    read, some 30 times what reading a made one costs. A search that scans it on the loop
    stops as soon as its steps' time is spent, not after so many items (which took 47-70 ms
    of the loop at 60k items, against a budget of 2 ms)."""
    packed = pack(snapshot(6000, indexed=False))
    spent = []
    for _ in range(3):  # the fastest of three: a loaded machine slows any one of them
        items = in_place(Packed(packed)).views["default"].latest.items
        started = time.perf_counter()
        with pytest.raises(OverAllowance):
            list(scan(items, 0, "zzzq", Allowance(ON_LOOP)))
        spent.append(time.perf_counter() - started)
    assert min(spent) < ON_LOOP * STEP_SECONDS + 0.008, spent
