"""The catalog kept for a restart (`gateway.kept`, `gateway.keeper`): written atomically to
`state_dir`, served at the next start before any state is loaded or built, with the bytes and
ETags served before; never served by another version or config; a file that is not whole is
set aside, and the start goes on as without it."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway import kept
from gateway.app import REFRESHER, create_app
from gateway.errors import KeptForOther, StateError, Stopped
from gateway.inplace import PlacedItems
from gateway.loader import load_config
from gateway.pack import seal
from gateway.serve import Serving
from tests.conftest import file_upstream, free_port, held_feed
from tests.fakes import server_entry
from tests.test_packed import _opened, assert_live, demo_snapshot
from tests.trusted import write_yaml

ENTRIES = [
    server_entry("io.github.a/b", "1.0.0", description="Weather for the IDE"),
    server_entry("io.github.a/b", "1.1.0", description="Weather for the IDE"),
    server_entry("io.github.c/d", "2.0.0", packages=[{
        "registryType": "npm", "identifier": "@c/d", "version": "2.0.0",
        "transport": {"type": "stdio"}}]),
]  # fmt: skip
PAGES = ["/v0.1/servers", "/v0.1/servers?version=latest&limit=1",
         "/v0.1/servers/io.github.a%2Fb/versions/latest", "/views/unit/v0.1/servers"]  # fmt: skip


# -- the file --------------------------------------------------------------------------------


def test_a_kept_catalog_reads_back_as_the_one_kept(tmp_path: Path) -> None:
    snapshot = demo_snapshot()
    size = kept.keep(tmp_path, snapshot)
    assert size == (tmp_path / kept.FILE).stat().st_size
    restored = kept.restore(tmp_path, snapshot.config)
    assert restored is not None
    assert restored.config == snapshot.config
    assert_live(snapshot, restored)
    assert [p.name for p in tmp_path.iterdir()] == [kept.FILE]  # no temporary file left


def test_a_kept_file_cut_short_while_served_does_not_touch_what_is_served(
    tmp_path: Path,
) -> None:
    """The catalog is served from the file's bytes item by item, long after the restart:
    the file cut short or rewritten in place meanwhile (a backup copied over it) changes
    nothing served (a mapping of the file would have died of SIGBUS)."""
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    restored = kept.restore(tmp_path, snapshot.config)
    assert restored is not None
    with (tmp_path / kept.FILE).open("r+b") as file:
        file.truncate(100)
    assert_live(snapshot, restored)


def test_no_file_is_no_catalog(tmp_path: Path) -> None:
    assert kept.restore(tmp_path, "any") is None


def test_another_config_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    with pytest.raises(KeptForOther, match="another version or config"):
        kept.restore(tmp_path, "0" * 64)
    assert (tmp_path / kept.FILE).is_file()


@pytest.mark.parametrize("damage", ["cut", "flipped", "empty", "text", "split"])
def test_a_file_not_whole_is_set_aside(tmp_path: Path, damage: str) -> None:
    """Cut short, a byte changed (the digest), empty, a text that is no UTF-8, or a character
    split between two segments (sealed anew, so that only reading it finds out: the catalog
    is served from the file as it is read, and every text is checked before): a
    `StateError`, and the file set aside."""
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    path = tmp_path / kept.FILE
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[-100] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    elif damage == "text":
        data = bytearray(_bad_text(bytes(data)))
    else:
        data = bytearray(_bad_text(bytes(data), b"\xc3\xa9", -1))
    path.write_bytes(bytes(data))
    with pytest.raises(StateError) as caught:
        kept.restore(tmp_path, snapshot.config)
    assert "set aside as snapshot.pack.corrupt-" in caught.value.reason
    assert not path.exists()
    assert [p.name.startswith("snapshot.pack.corrupt-") for p in tmp_path.iterdir()] == [True]


@pytest.mark.parametrize("config", ["this", "another"])
def test_a_file_longer_than_its_contents_say_is_refused_before_it_is_read(
    tmp_path: Path, config: str
) -> None:
    """A kept file grown to a terabyte (sparse: it takes no disk) is refused from its first
    bytes: set aside, or left as it is when another config kept it, and never read into
    memory (it was: a MemoryError that no restart got past)."""
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    path = tmp_path / kept.FILE
    with path.open("r+b") as file:
        file.truncate(1 << 40)
    if config == "another":
        with pytest.raises(KeptForOther):
            kept.restore(tmp_path, "0" * 64)
        assert path.stat().st_size == 1 << 40
        return
    with pytest.raises(StateError, match=f"it is {1 << 40} bytes long, its contents say"):
        kept.restore(tmp_path, snapshot.config)
    assert [p.name.startswith("snapshot.pack.corrupt-") for p in tmp_path.iterdir()] == [True]


@pytest.mark.parametrize(
    ("change", "count"),
    [("kept", n) for n in (1, 8, 47, 48, 49, 100, 4096)]
    + [("dropped", n) for n in (1, 8, 9)]
    + [("grown", n) for n in (1, 7, 8, 4096)],
)
def test_a_file_of_any_other_length_is_set_aside(tmp_path: Path, change: str, count: int) -> None:
    """Cut to its first bytes, some bytes dropped from its end, or grown by some: a
    `StateError`, the file set aside."""
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    path = tmp_path / kept.FILE
    data = path.read_bytes()
    changed = {"kept": data[:count], "dropped": data[:-count], "grown": data + b"\0" * count}
    path.write_bytes(changed[change])
    with pytest.raises(StateError, match=r"set aside as snapshot\.pack\.corrupt-"):
        kept.restore(tmp_path, snapshot.config)


def _bad_text(buffer: bytes, bad: bytes = b"\xff", shift: int = 0) -> bytes:
    """The buffer with `bad` written where the first entry's name begins (`shift` bytes
    before: across the end of the segment before), sealed again."""
    contents, sections = _opened(buffer)
    table = contents["sections"]
    segment = int.from_bytes(sections[table["entries.name"][0] :][:4], "little")
    start = int.from_bytes(sections[table["bounds"][0] + 8 * segment :][:8], "little")
    at = table["segments"][0] + start + shift
    return seal(orjson.dumps(contents), sections[:at] + bad + sections[at + len(bad) :])


def test_a_symlink_a_directory_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    kept.keep(target, demo_snapshot())
    (tmp_path / kept.FILE).symlink_to(target / kept.FILE)
    with pytest.raises(StateError, match="cannot be read"):
        kept.restore(tmp_path, demo_snapshot().config)
    other = tmp_path / "other"
    (other / kept.FILE).mkdir(parents=True)
    with pytest.raises(StateError, match="not a regular file"):
        kept.restore(other, "any")
    fifo = tmp_path / "fifo"
    (fifo).mkdir()
    os.mkfifo(fifo / kept.FILE)
    with pytest.raises(StateError, match="not a regular file"):
        kept.restore(fifo, "any")  # at once: no writer is waited for


def test_writing_stops_when_asked_and_the_last_file_stays(tmp_path: Path) -> None:
    snapshot = demo_snapshot()
    kept.keep(tmp_path, snapshot)
    before = (tmp_path / kept.FILE).read_bytes()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        kept.keep(tmp_path, snapshot, stop)
    assert (tmp_path / kept.FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [kept.FILE]


# -- a restart --------------------------------------------------------------------------------


def configure(tmp_path: Path, feed_url: str, **gateway: Any) -> Path:
    from tests.conftest import write_config

    upstream = file_upstream(tmp_path / "data", "u", ENTRIES)
    config = write_config(tmp_path / "config",
                          {"upstreams": [upstream], "admin_token": "adm1n", **gateway})  # fmt: skip
    write_yaml(config.directory / "trust.yaml", {"osv": [
        {"name": "osv", "url": feed_url, "ecosystems": ["npm"]}]})  # fmt: skip
    write_yaml(config.directory / "views" / "unit.yaml", {"rules": []})
    return config.directory


async def answers(session: aiohttp.ClientSession, base: str) -> dict[str, tuple[int, str, bytes]]:
    out = {}
    for page in PAGES:
        async with session.get(base + page) as answer:
            out[page] = (answer.status, answer.headers.get("ETag", ""), await answer.read())
    return out


async def first_answer(session: aiohttp.ClientSession, url: str) -> int:
    for _ in range(500):
        try:
            async with session.get(url) as answer:
                return answer.status
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.02)
    raise AssertionError("the port never answered")


def start(directory: Path) -> tuple[web.Application, asyncio.Task[Serving], str]:
    """A gateway starting on a config directory: its app, the start (done once it has
    built), and its base URL (answering within moments)."""
    port = free_port()
    app = create_app(load_config(directory))
    return (
        app,
        asyncio.create_task(Serving.start(app, "127.0.0.1", port)),
        f"http://127.0.0.1:{port}",
    )


async def run_once(directory: Path, release: asyncio.Event) -> dict[str, tuple[int, str, bytes]]:
    """Start, build, answer every page, stop (which keeps the catalog)."""
    release.set()
    port = free_port()
    app = create_app(load_config(directory))
    serving = await Serving.start(app, "127.0.0.1", port)
    try:
        await asyncio.wait_for(app[REFRESHER].wait_ready(), 30)
        async with aiohttp.ClientSession() as session:
            before = await answers(session, f"http://127.0.0.1:{port}")
        assert not (directory / "state" / kept.FILE).exists()  # kept when it stops
    finally:
        await serving.stop()
    release.clear()
    return before


async def test_a_restart_serves_the_kept_catalog_before_it_builds(tmp_path: Path) -> None:
    async with held_feed() as (feed_url, release):
        directory = configure(tmp_path, feed_url)
        before = await run_once(directory, release)
        assert all(status == 200 for status, _, _ in before.values())
        app, starting, base = start(directory)
        async with aiohttp.ClientSession() as session:
            assert await first_answer(session, base + "/healthz") == 200
            for _ in range(500):  # the kept catalog is read in a worker thread
                async with session.get(base + "/readyz") as ready:
                    if ready.status == 200:
                        break
                await asyncio.sleep(0.02)
            assert not starting.done()  # no build yet: the feed is still awaited
            assert not app[REFRESHER].build_durations
            assert await answers(session, base) == before  # the same bytes and ETags
            await every_other_route_answers(session, base)
            served = app[REFRESHER].snapshot
            assert served is not None
            assert served is app[REFRESHER].kept
            from_file = served.views["unit"].every.items
            assert isinstance(from_file, PlacedItems)  # served from the file as it is read
            release.set()
            serving = await asyncio.wait_for(starting, 30)
            try:
                for _ in range(500):
                    if app[REFRESHER].build_durations:
                        break
                    await asyncio.sleep(0.02)
                assert app[REFRESHER].build_durations  # built, and swapped in
                assert await answers(session, base) == before  # the same data: the same bytes
                # The catalog read from the file is let go of, its buffer with it.
                assert app[REFRESHER].kept is None
                for _ in range(500):
                    if not from_file.made()[0]:
                        break
                    await asyncio.sleep(0.02)
                assert from_file.made() == [[]] * 10
            finally:
                await serving.stop()


async def every_other_route_answers(session: aiohttp.ClientSession, base: str) -> None:
    """What else a client or an operator asks of a catalog served before its first build:
    a search (the index is not made yet: it scans), the pages, the status; a server's
    account (its page, `explain`) is 503 until the build, not a false 404."""
    async with session.get(base + "/v0.1/servers?search=weather") as answer:
        assert answer.status == 200
        found = [e["server"]["name"] for e in (await answer.json())["servers"]]
        assert found == ["io.github.a/b", "io.github.a/b"]
    for page in ("/", "/views/unit/"):
        async with session.get(base + page) as answer:
            assert answer.status == 200, page
    # A server's account is made from the upstreams' data, not loaded yet: "starting".
    for page in ("/server/io.github.a/b", "/admin/explain?name=io.github.a/b"):
        headers = {"Authorization": "Bearer adm1n"}
        async with session.get(base + page, headers=headers) as answer:
            assert answer.status == 503, page
            assert answer.headers["Retry-After"] == "1"
    auth = {"Authorization": "Bearer adm1n"}
    async with session.get(base + "/admin/status", headers=auth) as answer:
        assert answer.status == 200
        status = await answer.json()
        assert status["snapshotBuiltAt"]


@pytest.mark.parametrize("case", ["config", "corrupt", "off"])
async def test_a_restart_without_a_usable_kept_catalog_waits_for_its_build(
    tmp_path: Path, case: str
) -> None:
    """Another config (a setting changed), a file not whole, or keeping turned off: nothing
    is served until the first build, as without a kept catalog."""
    async with held_feed() as (feed_url, release):
        directory = configure(tmp_path, feed_url)
        before = await run_once(directory, release)
        path = directory / "state" / kept.FILE
        assert path.is_file()
        if case == "config":
            directory = configure(tmp_path, feed_url, access_log=False)
        elif case == "corrupt":
            path.write_bytes(path.read_bytes()[:-8])
        else:
            directory = configure(tmp_path, feed_url, keep_catalog=False)
        app, starting, base = start(directory)
        async with aiohttp.ClientSession() as session:
            assert await first_answer(session, base + "/healthz") == 200
            await asyncio.sleep(0.3)  # time enough to read a kept catalog of this size
            async with session.get(base + "/v0.1/servers") as answer:
                assert answer.status == 503
                assert answer.headers["Retry-After"] == "1"
            assert not starting.done()
            assert path.exists() == (case != "corrupt")  # a corrupt one is set aside
            release.set()
            serving = await asyncio.wait_for(starting, 30)
            try:
                await asyncio.wait_for(app[REFRESHER].wait_ready(), 30)
                now = await answers(session, base)
                assert {p: a[0] for p, a in now.items()} == dict.fromkeys(PAGES, 200)
                if case != "config":
                    assert now == before
            finally:
                await serving.stop()


async def test_with_keep_catalog_every_a_build_is_kept_while_serving(tmp_path: Path) -> None:
    """A restart after a crash (no stop, nothing kept then) serves what was kept after the
    last build; a writer killed midway leaves a temporary file that the next start removes."""
    async with held_feed() as (feed_url, release):
        directory = configure(tmp_path, feed_url, keep_catalog_every="1s")
        release.set()
        app = create_app(load_config(directory))
        serving = await Serving.start(app, "127.0.0.1", free_port())
        try:
            path = directory / "state" / kept.FILE
            for _ in range(500):
                if path.exists():
                    break
                await asyncio.sleep(0.02)
            assert path.is_file()
            assert app[REFRESHER].kept is app[REFRESHER].snapshot
        finally:
            await serving.stop()
        left = directory / "state" / f".{kept.FILE}.x1y2.tmp"
        left.write_bytes(b"half a catalog")
        assert kept.restore(directory / "state", load_config(directory).fingerprint())
        assert not left.exists()


async def test_a_stop_during_a_build_waits_for_it_then_keeps_the_catalog_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build is cancelled by the stop but runs on in its thread, using the builder: the
    builder's memory is let go, and the catalog kept, only once it has ended."""
    async with held_feed() as (feed_url, release):
        directory = configure(tmp_path, feed_url)
        release.set()
        app = create_app(load_config(directory))
        serving = await Serving.start(app, "127.0.0.1", free_port())
        refresher = app[REFRESHER]
        await asyncio.wait_for(refresher.wait_ready(), 30)
        served = refresher.snapshot
        assert served is not None
        builder = refresher.builder
        entered, leave = threading.Event(), threading.Event()
        to_thread = asyncio.to_thread

        async def holding_builds(work: Any, *args: Any) -> Any:
            # The build runs in a thread held until `leave` (a compiled Builder's method
            # cannot be replaced: the thread it runs in is).
            if work != builder.build:
                return await to_thread(work, *args)

            def held() -> Any:
                entered.set()
                leave.wait(10)
                return work(*args)

            return await to_thread(held)

        monkeypatch.setattr(asyncio, "to_thread", holding_builds)
        rebuilding = asyncio.create_task(refresher.rebuild_now())
        await to_thread(entered.wait, 10)
        rebuilding.cancel()
        stopping = asyncio.create_task(serving.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()  # waiting for the build's thread
        assert not (directory / "state" / kept.FILE).exists()
        leave.set()
        await asyncio.wait_for(stopping, 30)
        assert refresher.kept is served  # what it served, not what the cancelled build made
        assert kept.restore(directory / "state", builder.fingerprint) is not None
