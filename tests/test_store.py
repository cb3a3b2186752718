"""Replicas share one catalog through S3-compatible storage (`snapshot_store`): a real S3 API
server on loopback (moto in server mode, which supports conditional PUT), real gateway
processes with state directories of their own, fake registries on loopback counting requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from gateway.errors import ConfigError, StoreError
from gateway.store import Current, Store
from gateway.store_config import StoreSettings
from tests.conftest import free_port, write_config
from tests.fakes import FakeRegistry, server_entry
from tests.test_replicas import _catalog
from tests.test_sharing import SLOW_FIRST_SHARE

pytestmark = [pytest.mark.timeout(120)]

MOTO = shutil.which("moto_server", path=str(Path(sys.executable).parent))
needs_moto = pytest.mark.skipif(
    MOTO is None and os.environ.get("CI") != "true",
    reason="moto's S3 server is not installed: pip install -e '.[test]' (.ci/run does)",
)
BUCKET = "catalogs"
TOKEN = "store-admin-token"


@contextlib.contextmanager
def s3_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """moto's S3 API server on loopback, with the bucket made: its URL and process."""
    assert MOTO is not None, "moto_server is missing: pip install -e '.[test]'"
    port = port or free_port()
    process = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        store = _client(url)
        for _ in range(100):
            try:
                store.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait()


def _client(url: str) -> Any:
    return Store(_settings(url))._client


def _settings(url: str, **extra: Any) -> StoreSettings:
    return StoreSettings.model_validate({
        "url": f"s3://{BUCKET}/gw", "endpoint": url, "access_key_id": "test",
        "secret_access_key": "test", **extra,
    })  # fmt: skip


class Replica:
    """A `serve` process of its own state directory; its stderr (JSON lines) in a file."""

    def __init__(self, config: Path, name: str, seam: str = "", *extra: str) -> None:
        """`seam`: Python run in the process first (the test's way to slow a step down);
        `extra`: more arguments of `serve`."""
        self.log = config.parent / f"{name}.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        main = f"{seam}\nimport sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-c", main, "serve", "--config", str(config),
                 "--listen", f"127.0.0.1:{self.port}",
                 "--state-dir", str(config.parent / f"state-{name}"), *extra],
                stdout=subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_bytes().splitlines():
            if f'"event":"{event}"'.encode() in line:
                found.append(orjson.loads(line))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _get(url: str) -> tuple[int, bytes, str | None]:
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url, headers={"Accept-Encoding": "identity"}) as response,
        ):
            return response.status, await response.read(), response.headers.get("ETag")
    except aiohttp.ClientError:
        return 0, b"", None


async def _until(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not within the time")


def _config(directory: Path, registry: FakeRegistry, s3: str, **store: Any) -> Path:
    directory.mkdir(parents=True)
    gateway = {
        "log_format": "json", "watch_config": "0s", "log_level": "info", "admin_token": TOKEN,
        "upstreams": [{"name": "official", "url": registry.url, "refresh": "1s"}],
        "snapshot_store": {"url": f"s3://{BUCKET}/gw", "endpoint": s3, "access_key_id": "test",
                           "secret_access_key": "test", "lease": "3s", "poll": "0.2s",
                           "stale_after": "2s", "timeout": "2s", **store},
    }  # fmt: skip
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway), encoding="utf-8")
    return directory


@pytest.fixture
def store_url() -> Iterator[str]:
    with s3_server() as (url, _):  # (without moto: skipped by `needs_moto`, failed under CI)
        yield url


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, store_url: str, count: int, seam: str = "", **store: Any
) -> AsyncIterator[Any]:
    registry = await FakeRegistry(_catalog("io.github.acme", 30)).start()
    config = _config(tmp_path / "config", registry, store_url, **store)
    started = []
    try:
        for index in range(count):
            started.append(Replica(config, f"r{index}", seam))
            await asyncio.sleep(0.5)  # the first one takes the lease
        for replica in started:
            await _until(lambda r=replica: _ready(r))
        yield registry, started, config
    finally:
        for replica in started:
            replica.stop()
        await registry.stop()


async def _ready(replica: Replica) -> bool:
    return (await _get(replica.base + "/readyz"))[0] == 200


async def _same(replicas: list[Replica], route: str) -> bool:
    answers = {await _get(r.base + route) for r in replicas}
    return len(answers) == 1 and next(iter(answers))[0] == 200


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_replica_of_several_workers_serves_the_stores_first_catalog_at_once(
    tmp_path: Path, store_url: str
) -> None:
    """A replica run as `serve --workers 2` serves the catalog it reads from the store as
    soon as it has read it, with every worker (the other answers through the first until it
    has its own copy), not once its workers have shared it."""
    async with replicas(tmp_path, store_url, 1, lease="15s") as (_, (holder,), config):
        # (the first catalog shared among its workers a minute late)
        follower = Replica(config, "r1", SLOW_FIRST_SHARE, "--workers", "2")
        try:
            started = time.monotonic()
            await _until(lambda: _ready(follower), 40)
            assert time.monotonic() - started < 30  # sharing it among its workers takes a minute
            for route in (
                "/v0.1/servers?limit=7",
                "/v0.1/servers/io.github.acme%2Fserver-003/versions",
            ):
                answers = {await _get(follower.base + route) for _ in range(8)}
                assert answers == {await _get(holder.base + route)}, route
            await asyncio.sleep(1.2)  # lines are written at least every second
            assert follower.events("replica_catalog_served")
            assert follower.events("upstream_synced") == []  # it reads the store's catalog
        finally:
            follower.stop()


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_one_replica_syncs_and_builds_the_others_serve_its_catalog(
    tmp_path: Path, store_url: str
) -> None:
    # (a lease long enough that a store slowed by a loaded machine does not cost it: a lease
    # taken anew puts its next catalog whole)
    async with replicas(tmp_path, store_url, 2, lease="15s") as (
        registry, (first, second), config,
    ):  # fmt: skip
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        for route in ("/v0.1/servers?limit=7", "/v0.1/servers?version=latest",
                      "/v0.1/servers/io.github.acme%2Fserver-003/versions"):  # fmt: skip
            assert await _same([first, second], route), route
        await asyncio.sleep(1.2)  # lines are written at least every second
        assert [e["why"] for e in first.events("replica_syncs_itself")] == ["holds the lease"]
        assert second.events("replica_syncs_itself") == []
        assert second.events("replica_catalog_served")
        synced = {r.log.name for r in (first, second) if r.events("upstream_synced")}
        assert synced == {first.log.name}  # only the holder asks the upstream

        async def indexed() -> bool:  # its searches use the index, not a scan of the catalog
            async with (
                aiohttp.ClientSession() as session,
                session.get(second.base + "/admin/status",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as answer,
            ):  # fmt: skip
                status = await answer.json()
            assert status["syncs"] is False  # it serves the holder's catalogs
            return bool(status["search"]["indexed"]) and status["awaiting"] == []

        await _until(indexed)
        async with (
            aiohttp.ClientSession() as session,
            session.get(first.base + "/admin/status",
                        headers={"Authorization": f"Bearer {TOKEN}"}) as answer,
        ):  # fmt: skip
            assert (await answer.json())["syncs"] is True  # the holder

        # A change upstream reaches the replica that follows through the store.
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        registry.put(server_entry("io.github.acme/fresh", "1.0.0", published=now))

        async def fresh() -> bool:
            status, body, _ = await _get(second.base + "/v0.1/servers?search=fresh")
            return status == 200 and b"io.github.acme/fresh" in body

        await _until(fresh)
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        routes = ("/v0.1/servers?limit=7", "/v0.1/servers?version=latest",
                  "/v0.1/servers?search=server-01", "/v0.1/servers?updated_since=2020-01-01T00:00:00Z",
                  "/v0.1/servers/io.github.acme%2Ffresh/versions/latest")  # fmt: skip
        for route in routes:
            assert await _same([first, second], route), route
        await asyncio.sleep(1.2)
        # it took the change in part (the servers that changed), not the whole catalog again,
        # and the holder put only that part (the whole catalog again after `whole_every`: 1h)
        assert [e["part"] for e in second.events("replica_catalog_served")][-1] is True
        assert [e["part"] for e in first.events("replica_catalog_put")][-1] is True

        # Another change: its part goes onto the catalog the follower reached in part. A
        # replica started after it reads the last whole catalog and applies every part since.
        parts = len(first.events("replica_catalog_put"))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
        registry.put(server_entry("io.github.acme/fresher", "1.0.0", published=now))

        async def part_put() -> bool:
            return any(e["part"] for e in first.events("replica_catalog_put")[parts:])

        await _until(part_put)
        third = Replica(config, "r2")
        try:
            await _until(lambda: _ready(third))
            await _until(lambda: _same([first, second, third], "/v0.1/servers?limit=100"))
            for route in (*routes, "/v0.1/servers?search=fresher"):
                assert await _same([first, second, third], route), route
            await asyncio.sleep(1.2)
            assert [e["part"] for e in second.events("replica_catalog_served")][-2:] == [True, True]
            put = first.events("replica_catalog_put")
            # (both changes' parts, unless the holder put the whole catalog after them: a
            # build that changed most of the servers, or the lease taken anew, does)
            since = len(put) - 1 - max(n for n, e in enumerate(put) if not e["part"])
            served = third.events("replica_catalog_served")
            assert (served[0]["part"], served[0]["parts"]) == (False, since)
            assert served[0]["generation"] == put[-1]["generation"]
        finally:
            third.stop()


async def _change(registry: FakeRegistry, holder: Replica, name: str) -> str:
    """A new server upstream, and the part the holder put for it: its generation."""
    puts = len(holder.events("replica_catalog_put"))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    registry.put(server_entry(f"io.github.acme/{name}", "1.0.0", published=now))

    async def part_put() -> bool:
        return any(e["part"] for e in holder.events("replica_catalog_put")[puts:])

    await _until(part_put)
    return str([e for e in holder.events("replica_catalog_put") if e["part"]][-1]["generation"])


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_replica_that_missed_parts_applies_them_all_or_as_many_as_it_can(
    tmp_path: Path, store_url: str
) -> None:
    async with replicas(tmp_path, store_url, 2, lease="15s") as (registry, (first, second), _):
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        # Two parts put while the follower looks at nothing: it applies both in one look (the
        # servers of both brought into its search index too).
        await asyncio.sleep(1.2)  # lines are written at least every second
        puts = len(first.events("replica_catalog_put"))
        second.process.send_signal(signal.SIGSTOP)
        try:
            await _change(registry, first, "one")
            last = await _change(registry, first, "two")
        finally:
            second.process.send_signal(signal.SIGCONT)
        assert all(e["part"] for e in first.events("replica_catalog_put")[puts:])
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        for route in ("/v0.1/servers?search=one", "/v0.1/servers?search=two",
                      "/v0.1/servers?version=latest"):  # fmt: skip
            assert await _same([first, second], route), route
        await asyncio.sleep(1.2)
        served = second.events("replica_catalog_served")[-1]
        assert (served["generation"], served["part"], served["parts"]) == (last, True, 2)

        # A part gone from the store: the follower reads the whole catalog and applies the
        # parts it can, serving the catalog before the missing one (the holder's own, then).
        second.process.send_signal(signal.SIGSTOP)
        try:
            gone = await _change(registry, first, "three")
            _client(store_url).delete_object(Bucket=BUCKET, Key=f"gw/catalogs/{gone}.part.pack")
        finally:
            second.process.send_signal(signal.SIGCONT)

        async def gave_up() -> bool:
            return bool(second.events("replica_part_unreadable"))

        await _until(gave_up)
        await asyncio.sleep(1.2)
        assert second.events("replica_part_unreadable")[-1]["reached"] == last
        served = second.events("replica_catalog_served")[-1]
        assert (served["generation"], served["part"], served["parts"]) == (last, False, 2)
        status, body, _ = await _get(second.base + "/v0.1/servers?search=two")
        assert status == 200
        assert b"io.github.acme/two" in body
        assert second.events("replica_syncs_itself") == []  # it still follows
        # The next part after the missing one: the same part stops it, and it knows; it does not
        # read the whole catalog again for every part the holder puts.
        served_count = len(second.events("replica_catalog_served"))
        warned = len(second.events("replica_part_unreadable"))
        await _change(registry, first, "four")

        async def warned_again() -> bool:
            return len(second.events("replica_part_unreadable")) > warned

        await _until(warned_again)
        await asyncio.sleep(1.2)
        assert len(second.events("replica_catalog_served")) == served_count
        assert second.events("replica_syncs_itself") == []


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_the_whole_catalog_is_put_again_when_due(tmp_path: Path, store_url: str) -> None:
    """With `whole_every: 0s` each part is followed by the whole catalog."""
    async with replicas(tmp_path, store_url, 2, whole_every="0s") as (registry, (first, second), _):
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        registry.put(server_entry("io.github.acme/fresh", "1.0.0", published=now))

        async def put_whole_after() -> bool:
            return [e["part"] for e in first.events("replica_catalog_put")][-2:] == [True, False]

        await _until(put_whole_after)
        await _until(lambda: _same([first, second], "/v0.1/servers?search=fresh"))


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_crashed_holder_is_replaced_once_its_lease_expires(
    tmp_path: Path, store_url: str
) -> None:
    async with replicas(tmp_path, store_url, 2) as (registry, (first, second), _):
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        killed = time.monotonic()

        async def took_over() -> bool:
            return any(e["why"] == "holds the lease" for e in second.events("replica_syncs_itself"))

        await _until(took_over, 20)
        assert time.monotonic() - killed >= 1.0  # not before the lease expired (3 s after renewal)
        before = len(registry.requests)
        await asyncio.sleep(2.5)  # it syncs now (refresh: 1s)
        assert len(registry.requests) > before


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_holder_that_stops_gives_up_its_lease_at_once(
    tmp_path: Path, store_url: str
) -> None:
    async with replicas(tmp_path, store_url, 2, lease="30s") as (_, (first, second), _):
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        first.stop()  # SIGTERM: a rollout
        stopped = time.monotonic()

        async def took_over() -> bool:
            return any(e["why"] == "holds the lease" for e in second.events("replica_syncs_itself"))

        await _until(took_over, 20)
        assert time.monotonic() - stopped < 10  # not the 30 s the lease had left
        assert first.events("replica_lease_given_up")
        # Once the new holder has put a catalog, those the one before left are removed.
        client = _client(store_url)
        before = {e["generation"] for e in first.events("replica_catalog_put")}
        assert before

        async def swept() -> bool:
            put = {e["generation"] for e in second.events("replica_catalog_put")}
            keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="gw/catalogs/")
                    .get("Contents", [])}  # fmt: skip
            return bool(put) and {k.split("/")[-1].split(".pack")[0].removesuffix(".part")
                                  for k in keys} <= put  # fmt: skip

        await _until(swept, 20)


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_current_note_that_is_not_a_catalogs_leaves_the_follower_syncing(
    tmp_path: Path, store_url: str
) -> None:
    async with replicas(tmp_path, store_url, 2) as (_, (first, second), _):
        await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
        first.process.send_signal(signal.SIGSTOP)  # the holder puts nothing more meanwhile
        try:
            _client(store_url).put_object(Bucket=BUCKET, Key="gw/current.json",
                                          Body=b'{"generation": "../../x"}')  # fmt: skip

            async def fell_back() -> bool:
                return bool(second.events("replica_syncs_itself"))

            await _until(fell_back, 20)
            assert "not a catalog's" in second.events("replica_syncs_itself")[0]["why"]
            assert second.events("replica_store_garbled")
            assert await _ready(second)  # it serves what it had, and syncs itself now
        finally:
            first.process.send_signal(signal.SIGCONT)


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_new_replica_during_an_upstream_outage_starts_from_the_store(
    tmp_path: Path, store_url: str
) -> None:
    async with replicas(tmp_path, store_url, 1) as (registry, (first,), config):
        await _until(lambda: _put(first))
        _, expected, etag = await _get(first.base + "/v0.1/servers?limit=100")
        first.stop()
        await registry.stop()  # the upstream is down from now on
        late = Replica(config, "late")
        try:
            await _until(lambda: _ready(late))  # ready from the store's catalog
            status, body, late_etag = await _get(late.base + "/v0.1/servers?limit=100")
            assert status == 200
            assert body == expected
            assert late_etag == etag
        finally:
            late.stop()


async def _put(replica: Replica) -> bool:
    return bool(replica.events("replica_catalog_put"))


@needs_moto
@pytest.mark.slow  # gateway processes and an S3 server
async def test_a_store_that_goes_down_leaves_each_replica_syncing_itself(
    tmp_path: Path,
) -> None:
    with s3_server() as (url, server):
        async with replicas(tmp_path, url, 2) as (_, (first, second), _):
            await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))
            await asyncio.sleep(1.2)
            assert second.events("replica_syncs_itself") == []
            server.terminate()  # the store is down from now on
            server.wait()
            down = time.monotonic()

            async def fell_back() -> bool:
                return bool(second.events("replica_syncs_itself"))

            await _until(fell_back, 20)
            assert time.monotonic() - down >= 1.5  # after stale_after (2 s), not at once
            assert "has not answered" in second.events("replica_syncs_itself")[0]["why"]
            await asyncio.sleep(2.5)
            assert second.events("upstream_synced")  # it asks the upstream itself now
            assert await _ready(second)
            assert await _ready(first)
            # The store comes back (empty): whichever replica takes the lease first puts its
            # catalog; the other goes back to serving it, and stops syncing.
            port = int(url.rsplit(":", 1)[1])
            with s3_server(port):

                async def follows_again() -> bool:
                    return any(r.events("replica_follows_again") for r in (first, second))

                await _until(follows_again, 60)
                following = [r for r in (first, second) if r.events("replica_follows_again")]
                assert len(following) == 1
                await asyncio.sleep(1.5)
                synced = len(following[0].events("upstream_synced"))
                await asyncio.sleep(2.5)  # refresh: 1s
                assert len(following[0].events("upstream_synced")) == synced
                await _until(lambda: _same([first, second], "/v0.1/servers?limit=100"))


# -- the store's answers are read as hostile ---------------------------------------------------


@needs_moto
def test_current_naming_a_key_outside_the_catalogs_is_refused(store_url: str) -> None:
    store = Store(_settings(store_url))
    client = store._client
    good = {"generation": "0123456789abcdef.1", "builtAt": "2026-12-01T00:00:00Z",
            "fingerprint": "x", "size": 10}  # fmt: skip
    for key in ("../lease.json", "catalogs/../lease.json", "lease.json", "catalogs/x.pack"):
        body = orjson.dumps({**good, "key": key})
        client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=body)
        with pytest.raises(StoreError, match="outside catalogs"):
            store.current()
    client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=b"{" + b" " * (70 << 10) + b"}")
    with pytest.raises(StoreError, match="larger than"):
        store.current()
    huge = {**good, "key": "catalogs/0123456789abcdef.1.pack", "size": 5 << 30}
    client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=orjson.dumps(huge))
    with pytest.raises(StoreError, match="max_catalog"):
        store.current()
    # A catalog in part: its key a part's, its base and the whole one named, each in bounds.
    whole = {"generation": "0123456789abcdef.0", "key": "catalogs/0123456789abcdef.0.pack",
             "size": 10}  # fmt: skip
    part = {**good, "key": "catalogs/0123456789abcdef.1.part.pack",
            "base": "0123456789abcdef.0", "whole": whole}  # fmt: skip
    client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=orjson.dumps(part))
    current = store.current()
    assert current is not None
    assert current[0].whole_catalog().key == whole["key"]
    # A chain of parts: each on the one before it, the first on the whole one.
    second = {"generation": "0123456789abcdef.1", "key": "catalogs/0123456789abcdef.1.part.pack",
              "size": 10, "base": "0123456789abcdef.0"}  # fmt: skip
    chained = {**part, "generation": "0123456789abcdef.2", "base": "0123456789abcdef.1",
               "key": "catalogs/0123456789abcdef.2.part.pack", "parts": [second]}  # fmt: skip
    client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=orjson.dumps(chained))
    current = store.current()
    assert current is not None
    assert [p.generation for p in current[0].chain()] == [
        "0123456789abcdef.1",
        "0123456789abcdef.2",
    ]
    wrong = [
        ({**part, "key": "catalogs/0123456789abcdef.1.pack"}, "outside catalogs"),  # whole key
        ({**part, "whole": {**whole, "key": "catalogs/0123456789abcdef.0.part.pack"}},
         "outside catalogs"),
        ({**part, "whole": {**whole, "key": "catalogs/../lease.json"}}, "outside catalogs"),
        ({**part, "whole": {**whole, "size": 5 << 30}}, "max_catalog"),
        ({k: v for k, v in part.items() if k != "whole"}, "without its base or whole"),
        ({k: v for k, v in part.items() if k != "base"}, "without its base or whole"),
        ({**part, "base": "0123456789abcdef.9"}, "do not follow on"),  # not on the whole one
        ({**part, "base": "0123456789abcdef.0\n"}, "not a catalog's"),
        ({**part, "parts": [second]}, "do not follow on"),  # the part before is not on it
        ({**chained, "parts": [{**second, "base": "0123456789abcdef.9"}]}, "do not follow on"),
        ({**chained, "parts": [{**second, "generation": "0123456789abcdef.0"}]},
         "do not follow on"),  # the whole one's generation again
        ({**chained, "parts": [{**second, "key": "catalogs/0123456789abcdef.2.pack"}]},
         "outside catalogs"),
        ({**chained, "parts": [{**second, "size": 5 << 30}]}, "max_catalog"),
        ({**chained, "parts": [{**second, "size": 3 << 30}, {**second, "generation":
          "0123456789abcdef.3", "key": "catalogs/0123456789abcdef.3.part.pack",
          "base": "0123456789abcdef.1", "size": 3 << 30}],
          "base": "0123456789abcdef.3"}, "max_catalog"),  # parts adding up to more
        ({**chained, "parts": [{**second, "key": "catalogs/0123456789abcdef.3.part.pack"}]},
         "another generation's key"),
        ({**chained, "whole": {**whole, "key": "catalogs/0123456789abcdef.3.pack"}},
         "another generation's key"),
        ({**chained, "parts": [second] * 17}, "not a catalog's"),  # more than MAX_PARTS
        ({**good, "key": "catalogs/0123456789abcdef.1.pack", "parts": [second]},
         "without its base or whole"),  # parts of a whole catalog
    ]  # fmt: skip
    for note, reason in wrong:
        client.put_object(Bucket=BUCKET, Key="gw/current.json", Body=orjson.dumps(note))
        with pytest.raises(StoreError, match=reason):
            store.current()


@needs_moto
def test_a_sweep_removes_only_catalogs_not_kept(store_url: str) -> None:
    store = Store(_settings(store_url))
    client = store._client
    catalogs = ["catalogs/0123456789abcdef.1.pack", "catalogs/0123456789abcdef.2.part.pack",
                "catalogs/0123456789abcdef.2.pack", "catalogs/fedcba9876543210.7.pack"]  # fmt: skip
    others = ["catalogs/notes.txt", "catalogs/x/0123456789abcdef.1.pack", "lease.json"]
    for key in [*catalogs, *others]:
        client.put_object(Bucket=BUCKET, Key=f"gw/{key}", Body=b"x")
    client.put_object(Bucket=BUCKET, Key="elsewhere/catalogs/0123456789abcdef.1.pack", Body=b"x")
    assert sorted(store.catalogs()) == sorted(catalogs)
    assert store.sweep(keep=catalogs[1:3]) == 2
    left = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert left == {f"gw/{key}" for key in [*catalogs[1:3], *others]} | {
        "elsewhere/catalogs/0123456789abcdef.1.pack"
    }  # nothing but catalogs, under the prefix
    assert len(store.catalogs(most=1)) == 1  # bounded


@needs_moto
def test_a_catalog_not_of_its_announced_size_is_refused(store_url: str, tmp_path: Path) -> None:
    store = Store(_settings(store_url))
    store._client.put_object(
        Bucket=BUCKET, Key="gw/catalogs/0123456789abcdef.1.pack", Body=b"x" * 64
    )
    current = Current.model_validate_json(orjson.dumps({
        "generation": "0123456789abcdef.1", "key": "catalogs/0123456789abcdef.1.pack",
        "builtAt": "2026-12-01T00:00:00Z", "fingerprint": "x", "size": 32,
    }))  # fmt: skip
    with pytest.raises(StoreError, match="size"):
        store.fetch(current, tmp_path / "c.pack")


@needs_moto
def test_the_lease_is_taken_by_one_writer_only(store_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.errors import LeaseLost
    from gateway.store import Lease

    store = Store(_settings(store_url))
    lease = Lease(holder="a", expires=datetime.now(UTC) + timedelta(seconds=30))
    etag = store.take_lease(lease, None)
    with pytest.raises(LeaseLost):
        store.take_lease(lease.model_copy(update={"holder": "b"}), None)  # there is one
    later = lease.model_copy(update={"expires": lease.expires + timedelta(seconds=10)})
    renewed = store.take_lease(later, etag)  # a renewal says until when: another ETag
    with pytest.raises(LeaseLost):
        store.take_lease(lease.model_copy(update={"holder": "b"}), etag)  # not the latest
    found = store.lease()
    assert found is not None
    assert found[0] is not None
    assert found[0].holder == "a"
    assert found[1] == renewed
    # A lease that is not one (hostile, or half written) can be taken over, not held forever.
    store._client.put_object(Bucket=BUCKET, Key="gw/lease.json", Body=b"{not a lease")
    garbled = store.lease()
    assert garbled is not None
    assert garbled[0] is None
    store.take_lease(lease.model_copy(update={"holder": "b"}), garbled[1])
    taken = store.lease()
    assert taken is not None
    assert taken[0] is not None
    assert taken[0].holder == "b"


@needs_moto
async def test_a_lease_another_replica_held_meanwhile_starts_a_new_chain(store_url: str) -> None:
    """A holder that stalled past its lease, while another took it, put a whole catalog and
    stopped (its lease expired at once), takes the lease again: its next catalog goes whole.
    Before, a part on its old chain followed, naming a whole catalog the other had removed."""
    from datetime import UTC, datetime, timedelta

    from gateway.replicas import Replica as Replicating
    from gateway.store import Lease

    settings = _settings(store_url, lease="30s")
    store = Store(settings)
    replica = Replicating(Any, settings, store)  # type: ignore[arg-type]  # no refresher needed
    assert await replica.take_lease()
    replica.puts._put_base = "0123456789abcdef.1"  # a chain going on
    assert await replica.take_lease()  # renewed: its own lease, the chain goes on
    assert replica.puts._put_base == "0123456789abcdef.1"
    replica.holding = None  # a renewal it could not confirm (a request retried, a timeout)
    assert await replica.take_lease()  # the lease still names it: no other wrote since
    assert replica.puts._put_base == "0123456789abcdef.1"
    found = store.lease()
    assert found is not None
    ended = Lease(holder="another", expires=datetime.now(UTC) - timedelta(seconds=1))
    store.take_lease(ended, found[1])  # taken, and given up, by another replica meanwhile
    assert await replica.take_lease()
    assert replica.puts._put_base is None  # the next catalog it puts is whole


@needs_moto
def test_a_catalog_is_named_current_only_over_the_holders_own_last_note(
    store_url: str, tmp_path: Path
) -> None:
    """A holder names its catalog in current.json only if no one wrote it since its last
    write (a holder that stalled past its lease while uploading, and another took over),
    and its own write answered twice (a retried request) counts as its own."""
    from gateway.errors import LeaseLost

    store = Store(_settings(store_url))
    path = tmp_path / "catalog.pack"
    path.write_bytes(b"x" * 10)

    def note(n: int) -> Current:
        return Current.model_validate_json(orjson.dumps({
            "generation": f"0123456789abcdef.{n}", "key": f"catalogs/0123456789abcdef.{n}.pack",
            "builtAt": "2026-12-01T00:00:00Z", "fingerprint": "x", "size": 10}))  # fmt: skip

    first = store.put_catalog(path, note(1))
    second = store.put_catalog(path, note(2), first)  # over its own
    assert second != first
    store.put_catalog(path, note(3))  # another holder's, meanwhile
    with pytest.raises(LeaseLost):
        store.put_catalog(path, note(4), second)
    found = store.current()
    assert found is not None
    assert found[0].generation == "0123456789abcdef.3"  # not overwritten
    again = store.put_catalog(path, note(3), second)  # what is there is this very note
    assert again == found[1]


# -- config --------------------------------------------------------------------------------------


def test_a_store_location_that_is_not_an_s3_url_is_an_error_naming_it(tmp_path: Path) -> None:
    for url in ("http://bucket/x", "s3://UPPER/x", "s3://b", "s3://bucket/x y", "s3://bucket\n"):
        with pytest.raises(ConfigError, match="snapshot_store"):
            write_config(tmp_path / str(abs(hash(url))), {
                "upstreams": [{"name": "u", "url": "https://r.example.com"}],
                "snapshot_store": {"url": url},
            })  # fmt: skip
    with pytest.raises(ConfigError, match="access_key_id"):
        write_config(tmp_path / "keys", {
            "upstreams": [{"name": "u", "url": "https://r.example.com"}],
            "snapshot_store": {"url": "s3://bucket/x", "access_key_id": "only-one"},
        })  # fmt: skip


def test_a_store_without_the_s3_client_installed_is_an_error_saying_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import loader

    monkeypatch.setattr(loader, "_has_s3_client", lambda: False)
    with pytest.raises(ConfigError, match=r"mcp-discovery-gateway\[s3\]"):
        write_config(tmp_path / "c", {
            "upstreams": [{"name": "u", "url": "https://r.example.com"}],
            "snapshot_store": {"url": "s3://bucket/x"},
        })  # fmt: skip


@needs_moto
async def test_a_put_that_fails_leaves_the_holder_putting(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, serve: Any
) -> None:
    """A catalog the holder cannot put, for any reason, is logged and the next one is put
    (before, anything but a store or file error ended its putting for good: the others
    then served an ever older catalog while it kept the lease)."""
    from gateway import putting
    from gateway.app import REFRESHER

    registry = await FakeRegistry(_catalog("io.github.acme", 5)).start()
    put_one = putting.Puts.put_one
    puts: list[bool] = []

    async def failing(self: Any, snapshot: Any, previous: list[str]) -> None:
        puts.append(not puts)
        if puts == [True]:
            raise RuntimeError("a put that fails")
        await put_one(self, snapshot, previous)

    monkeypatch.setattr(putting.Puts, "put_one", failing)
    try:
        config = write_config(tmp_path / "config", yaml.safe_load(
            (_config(tmp_path / "yaml", registry, store_url) / "gateway.yaml").read_text()))  # fmt: skip
        client = await serve(config)

        async def put(count: int) -> bool:
            return len(puts) >= count

        await _until(lambda: put(1))
        await client.app[REFRESHER].rebuild_now()
        await _until(lambda: put(2))
        current = _client(store_url).get_object(Bucket=BUCKET, Key="gw/current.json")
        assert Current.model_validate_json(current["Body"].read()).generation
    finally:
        await registry.stop()
