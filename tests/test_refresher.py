from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import REFRESHER
from tests.conftest import file_upstream
from tests.fakes import server_entry


async def names(client: Any) -> list[str]:
    body = await (await client.get("/v0.1/servers?limit=100")).json()
    return [f"{s['server']['name']}@{s['server']['version']}" for s in body["servers"]]


async def test_file_upstream_is_reread_when_it_changes(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    assert await names(client) == ["com.e/a@1.0.0"]

    path = Path(upstream["file"])
    plain = [server_entry("com.e/a", "1.0.0")["server"], server_entry("com.e/b", "2.0.0")["server"]]
    path.write_bytes(orjson.dumps(plain))  # a plain server.json array works too
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    await client.app[REFRESHER].sync_all()
    assert await names(client) == ["com.e/a@1.0.0", "com.e/b@2.0.0"]

    path.write_bytes(b"[{broken")
    os.utime(path, ns=(1, 2_100_000_000_000_000_000))
    await client.app[REFRESHER].sync_all()
    assert await names(client) == ["com.e/a@1.0.0", "com.e/b@2.0.0"]  # last good kept
    assert "not JSON" in (client.app[REFRESHER].feeds[0].last_error or "")


async def test_include_exclude_applied_on_ingest(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    items = [
        server_entry("io.github.good/a", "1.0.0"),
        server_entry("io.github.spam/b", "1.0.0"),
        server_entry("com.other/c", "1.0.0"),
    ]
    upstream = file_upstream(tmp_path / "data", "official", items)
    upstream |= {"include": ["io.github.*"], "exclude": ["io.github.spam/*"]}
    client = await serve(make_config(upstreams=[upstream]))
    assert await names(client) == ["io.github.good/a@1.0.0"]


async def test_malformed_entries_are_skipped_one_by_one(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    items: list[Any] = [
        server_entry("io.github.ok/a", "1.0.0"),
        {"server": {"name": "no slash", "version": "1.0.0"}},
        {"server": {"name": "io.github.x/noversion"}},
        "not an object",
        server_entry("io.github.ok/b", "1.0.0"),
    ]
    upstream = file_upstream(tmp_path / "data", "official", items)
    client = await serve(make_config(upstreams=[upstream]))
    assert await names(client) == ["io.github.ok/a@1.0.0", "io.github.ok/b@1.0.0"]
    assert client.app[REFRESHER].feeds[0].skipped == 3


async def test_a_catalog_a_request_still_reads_is_not_released_under_it(
    tmp_path: Any, make_config: Any, serve: Any, monkeypatch: Any
) -> None:
    """A server page waits for its account and a long search for its worker thread, holding
    the snapshot they began with: a rebuild meanwhile waits to empty that snapshot's lists
    (it used to empty them at once: the page then said the view serves no version)."""
    import asyncio

    import gateway.refresher
    from gateway.app import REFRESHER
    from tests.conftest import file_upstream
    from tests.fakes import server_entry

    upstream = file_upstream(tmp_path / "data", "u", [server_entry("io.github.a/n", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream], access_log=False))
    refresher = client.server.app[REFRESHER]
    old = refresher.snapshot
    with refresher.readers.reading(old):
        rebuilding = asyncio.create_task(refresher.rebuild_now())
        await asyncio.sleep(0.1)
        assert refresher.snapshot is not old  # the new one is served at once
        assert not rebuilding.done()  # but the old one is not released yet
        assert len(old.views["default"].every.items) == 1
    await rebuilding
    assert old.views["default"].every.items == []  # released once its reader was done
    monkeypatch.setattr(gateway.refresher, "READERS_WAIT", 0.05)
    older = refresher.snapshot
    with refresher.readers.reading(older):  # a reader that never finishes: not waited for
        await refresher.rebuild_now()
        assert len(older.views["default"].every.items) == 1  # dropped, not emptied under it


async def test_a_sync_asked_for_builds_once(tmp_path: Path, make_config: Any, serve: Any) -> None:
    """An operator's sync (and `sync_all`) builds what it synced and answers once it is
    served; the background builder, woken by the same change, does not build it again."""
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    refresher = client.app[REFRESHER]
    path = Path(upstream["file"])
    for at, (sync, version) in enumerate(
        [(lambda: refresher.sync_now("approved"), "2.0.0"), (refresher.sync_all, "3.0.0")]
    ):
        builds = len(refresher.build_durations)
        path.write_bytes(orjson.dumps([server_entry("com.e/a", version)["server"]]))
        os.utime(path, ns=(1, (2 + at) * 1_000_000_000_000_000_000))
        await sync()
        assert await names(client) == [f"com.e/a@{version}"]
        await asyncio.sleep(0.3)  # the background builder had its chance
        assert len(refresher.build_durations) == builds + 1


def _fail_one_swap(refresher: Any) -> list[Exception]:
    """The next build of `refresher` fails before it is served (the failure still to come)."""
    swap = refresher._swap
    failures: list[Exception] = [RuntimeError("a build that is not served")]

    async def failing(*args: Any) -> None:
        if failures:
            raise failures.pop()
        await swap(*args)

    refresher._swap = failing
    return failures


async def test_a_build_that_is_not_served_does_not_answer_a_request_for_one(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """A build that began after a request but was never served (it failed, or was stopped)
    leaves the request standing: the next build asked with it is made."""
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]), sync=False)
    refresher = client.app[REFRESHER]
    _fail_one_swap(refresher)
    refresher._ask_build()
    asked = refresher._asked
    with pytest.raises(RuntimeError):
        await refresher._rebuild_unless_built(asked)
    builds = len(refresher.build_durations)
    await refresher._rebuild_unless_built(asked)
    assert len(refresher.build_durations) == builds + 1
    await refresher._rebuild_unless_built(asked)  # served now: not built again
    assert len(refresher.build_durations) == builds + 1


async def test_a_build_that_fails_leaves_the_background_builder_building(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """A build that fails keeps the last good catalog served, and the next build asked for
    is made (before, the background builder ended with the first failure)."""
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    refresher = client.app[REFRESHER]
    failures = _fail_one_swap(refresher)
    path = Path(upstream["file"])
    path.write_bytes(orjson.dumps([server_entry("com.e/a", "2.0.0")["server"]]))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    await refresher.sync(refresher.feed("approved"))  # asks the background builder
    await _eventually(lambda: not failures)
    assert await names(client) == ["com.e/a@1.0.0"]  # the last good one
    refresher._ask_build()  # the cooldown, the mirrors, the advisories ask alike
    await _eventually(lambda: refresher.snapshot.views["default"].every.items[0].version == "2.0.0")
    assert await names(client) == ["com.e/a@2.0.0"]


async def test_an_index_update_that_fails_leaves_the_indexer_following(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """The search index's update failing once is logged; the next build is indexed (before,
    the indexer ended with the first failure and searches scanned from then on)."""
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    refresher = client.app[REFRESHER]
    index = refresher._index
    calls: list[bool] = []

    async def failing() -> None:
        calls.append(not calls)
        if calls == [True]:
            raise RuntimeError("an index update that fails")
        await index()

    refresher._index = failing
    await refresher.rebuild_now()
    await _eventually(lambda: bool(calls))
    await refresher.rebuild_now()
    await _eventually(lambda: len(calls) >= 2)  # later builds were indexed,
    assert calls[0]  # after the first failed


async def _eventually(check: Any, seconds: float = 10.0) -> None:
    """Wait until `check()` holds (a background task's work, on a machine that may be busy)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)
