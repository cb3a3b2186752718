"""`serve --workers N` shares one catalog: the first worker syncs and builds, the others read
back what it built, and every worker serves the same bytes behind the one port.

The gateways are real `serve --workers` processes over fake registries on loopback; which
worker answered a request is read from its access line (`worker`). Each request goes over a
connection of its own, so the kernel spreads them over the workers (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import structlog
import yaml

from gateway import deltas, sharing
from gateway.rundir import Run
from gateway.sharing import Shared, pack_file
from gateway.workers import run_workers
from tests.conftest import free_port
from tests.fakes import FakeRegistry, server_entry
from tests.test_deltas import _catalogs
from tests.test_increment import same
from tests.test_packed import demo_snapshot
from tests.test_replicas import _catalog

pytestmark = [pytest.mark.timeout(90), pytest.mark.asyncio(loop_scope="module")]

TOKEN = "sharing-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = [
    "/v0.1/servers?limit=100",
    "/v0.1/servers?version=latest&limit=30",
    "/v0.1/servers?search=server-01&limit=5",
    "/v0.1/servers/io.github.acme%2Fserver-003/versions",
    "/views/payments/v0.1/servers?limit=100",
]


class Gateway:
    """A `serve --workers N` process, its stderr (JSON lines) in a file."""

    def __init__(self, process: asyncio.subprocess.Process, base: str, log: Path) -> None:
        self.process, self.base, self.log = process, base, log

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                found.append(orjson.loads(line))
        return found

    def answered_by(self, path: str) -> set[int]:
        """The workers whose access lines show `path` answered."""
        return {e["worker"] for e in self.lines() if e.get("event") == "request"
                and e.get("path") == path and "worker" in e}  # fmt: skip


def _config(directory: Path, registries: list[FakeRegistry], refresh: str = "1h") -> Path:
    (directory / "views").mkdir(parents=True)
    gateway = {
        "listen": f"127.0.0.1:{free_port()}",
        "log_format": "json",
        "admin_token": TOKEN,
        "watch_config": "0s",
        "state_dir": str(directory / "state"),
        "upstreams": [
            {"name": "internal", "url": registries[0].url, "refresh": refresh,
             "owns": ["com.example/*"]},
            {"name": "official", "url": registries[1].url, "refresh": refresh},
        ],
    }  # fmt: skip
    files = {
        "gateway.yaml": gateway,
        "mirrors.yaml": {"npm": "https://artifactory.example.com/api/npm/npm-remote/"},
        "views/payments.yaml": {"rules": [{"deny": {"registry_type": "oci"}}]},
    }
    for path, document in files.items():
        (directory / path).write_text(yaml.safe_dump(document), encoding="utf-8")
    return directory


@contextlib.asynccontextmanager
async def serving(config: Path, workers: int, seam: str = "") -> AsyncIterator[Gateway]:
    """`serve --workers N` on `config`, once its `/readyz` answers 200 (`seam`: Python run
    in the process first, the test's way to slow a step down)."""
    listen = yaml.safe_load((config / "gateway.yaml").read_text())["listen"]
    log = config / f"stderr.{workers}"
    code = f"{seam}\nimport sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "serve", "--config", str(config),
            "--workers", str(workers), stdout=asyncio.subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    gateway = Gateway(process, f"http://{listen}", log)
    try:
        # A connection per probe, as a load balancer's: any worker may answer each.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(1500):
                assert process.returncode is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"{gateway.base}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("never ready")
        yield gateway
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def _get(url: str, **headers: str) -> tuple[int, bytes, str | None]:
    """A request over a connection of its own (so any worker may answer it)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers={"Accept-Encoding": "identity", **headers}) as response,
    ):
        return response.status, await response.read(), response.headers.get("ETag")


async def _registries() -> list[FakeRegistry]:
    internal = await FakeRegistry(_catalog("com.example", 12)).start()
    official = await FakeRegistry(_catalog("io.github.acme", 40)).start()
    return [internal, official]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Gateway, Any]]:
    """`serve --workers 2` over two registries (read by several tests: started once)."""
    registries = await _registries()
    config = _config(tmp_path_factory.mktemp("sharing"), registries)
    try:
        async with serving(config, 2) as gateway:
            yield gateway, registries
    finally:
        for registry in registries:
            await registry.stop()


async def test_workers_serve_the_same_bytes_and_etags(two: tuple[Gateway, Any]) -> None:
    gateway, _ = two
    for route in ROUTES:
        answers = {await _get(gateway.base + route) for _ in range(16)}
        assert len(answers) == 1, route  # one status, one body, one ETag from every worker
        status, body, etag = answers.pop()
        assert status == 200, route
        assert etag, route
        assert body, route
    await asyncio.sleep(1.2)  # access lines are written at least every second
    for route in ROUTES:
        assert gateway.answered_by(route) == {0, 1}, route  # both workers were compared


async def test_a_cursor_from_one_worker_continues_on_any(two: tuple[Gateway, Any]) -> None:
    gateway, _ = two
    route = "/v0.1/servers?limit=3"  # 18 pages: all from one worker about once in 130,000
    crossed: list[bytes] = []  # each page over a new connection: any worker answers it
    url = route
    while True:
        status, body, _ = await _get(gateway.base + url)
        assert status == 200, url
        crossed.append(body)
        cursor = orjson.loads(body)["metadata"].get("nextCursor")
        if not cursor:
            break
        url = f"{route}&cursor={cursor}"
    status, whole, _ = await _get(gateway.base + "/v0.1/servers?limit=100")
    expected = [item for page in crossed for item in orjson.loads(page)["servers"]]
    assert expected == orjson.loads(whole)["servers"]  # the walk lost and repeated nothing
    await asyncio.sleep(1.2)
    cursors = {e["worker"] for e in gateway.lines()
               if e.get("event") == "request" and "cursor=" in e.get("path", "")}  # fmt: skip
    assert len(crossed) > 15
    assert cursors == {0, 1}


async def test_operator_endpoints_answer_from_the_worker_that_builds(
    two: tuple[Gateway, Any],
) -> None:
    gateway, _ = two
    statuses = [await _get(gateway.base + "/admin/status", **AUTH) for _ in range(12)]
    documents = [orjson.loads(body) for status, body, _ in statuses if status == 200]
    assert len(documents) == 12
    assert len({d["snapshotBuiltAt"] for d in documents}) == 1  # one catalog, one builder
    for document in documents:  # what the upstreams' syncs were, on every worker
        assert [u["hasData"] for u in document["upstreams"]] == [True, True]
        assert document["awaiting"] == []
    name = "/admin/explain?name=io.github.acme/server-003"
    explained = {await _get(gateway.base + name, **AUTH) for _ in range(12)}
    assert {status for status, _, _ in explained} == {200}  # a follower does not say 503
    page = {(await _get(gateway.base + "/server/io.github.acme/server-003"))[0] for _ in range(8)}
    assert page == {200}
    await asyncio.sleep(1.2)
    assert gateway.answered_by("/admin/status") == {0, 1}  # asked of both, answered by one
    unauthorized = await _get(gateway.base + "/admin/status", Authorization="Bearer wrong")
    assert unauthorized[0] == 401


async def test_a_change_reaches_every_worker_together(two: tuple[Gateway, Any]) -> None:
    gateway, registries = two
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # after the last sync's
    registries[1].put(server_entry("io.github.acme/fresh", "1.0.0", published=now))
    _, before, old = await _get(gateway.base + "/v0.1/servers?limit=100")
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.base + "/admin/upstreams/official/sync", headers=AUTH) as response,
    ):
        assert response.status == 200  # answered once the new catalog is served (see below)
    after = {await _get(gateway.base + "/v0.1/servers?search=fresh") for _ in range(16)}
    assert len(after) == 1
    status, body, _etag = after.pop()
    assert status == 200
    assert b"io.github.acme/fresh" in body
    full = {(await _get(gateway.base + "/v0.1/servers?limit=100"))[2] for _ in range(16)}
    assert len(full) == 1
    assert full != {old}
    for route in ROUTES:  # the other worker put the part into its catalog: the same bytes
        assert len({await _get(gateway.base + route) for _ in range(16)}) == 1, route
    await asyncio.sleep(1.2)  # lines are written at least every second
    offered = [e["servers"] for e in gateway.lines() if e.get("event") == "shared_catalog_offered"]
    assert offered[0] is None  # the first catalog whole
    assert offered[-1] == 1  # then only the server the sync brought
    swaps = [e for e in gateway.lines() if e.get("event") == "catalog_swapped"]
    last = {e["worker"]: datetime.fromisoformat(e["timestamp"]) for e in swaps}
    assert set(last) == {0, 1}
    assert abs((last[0] - last[1]).total_seconds()) < 0.5  # swapped together
    assert before


async def test_a_reload_asked_of_any_worker_reaches_every_worker(
    two: tuple[Gateway, Any], tmp_path: Path
) -> None:
    gateway, _ = two
    config = gateway.log.parent
    (config / "views" / "extra.yaml").write_text(
        yaml.safe_dump({"rules": [{"deny": {"registry_type": "pypi"}}]}), encoding="utf-8"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.base + "/admin/reload", headers=AUTH) as response,
    ):
        assert response.status == 200  # reloaded by the building worker, rebuilt and served
    answers = {(await _get(gateway.base + "/views/extra/v0.1/servers?limit=5"))[:2]
               for _ in range(16)}  # fmt: skip
    assert len(answers) == 1
    status, body = answers.pop()
    assert status == 200, body
    listed = {(await _get(gateway.base + "/views"))[1] for _ in range(16)}
    assert len(listed) == 1  # each worker lists the views of the config the catalog was built with
    assert b"extra" in listed.pop()
    await asyncio.sleep(1.2)
    assert gateway.answered_by("/views/extra/v0.1/servers?limit=5") == {0, 1}
    assert gateway.answered_by("/views") == {0, 1}
    reread = [e for e in gateway.lines() if e.get("event") == "config_reread"]
    assert [e["worker"] for e in reread] == [1]  # the other worker took the new config too


# The building worker, slowed down after it shares a catalog. Once, the others swapped the
# first catalog in while it still answered 503 (starting) to every request; now it serves the
# first at once and shares it after, and this holds it in that state a while longer. (How
# soon the first `/readyz` is 200 depends on the machine: not asserted.)
SLOW_OWN_SWAP = """
import asyncio
from gateway.sharing import Shared
publish = Shared.publish
async def slowly(self, snapshot, *before):
    await publish(self, snapshot, *before)
    await asyncio.sleep(2)
Shared.publish = slowly
"""


@pytest.mark.slow
async def test_once_any_worker_says_ready_every_worker_answers(tmp_path: Path) -> None:
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        async with serving(config, 2, seam=SLOW_OWN_SWAP) as gateway:
            answers = [await _get(f"{gateway.base}{ROUTES[0]}") for _ in range(30)]
            assert [status for status, _, _ in answers] == [200] * 30
            await asyncio.sleep(1.2)  # the access lines written (at least every second)
            assert gateway.answered_by(ROUTES[0]) == {0, 1}
    finally:
        for registry in registries:
            await registry.stop()


# The first catalog shared a minute late: the other worker has none of its own meanwhile.
SLOW_FIRST_SHARE = """
import asyncio
from gateway.sharing import Shared
publish = Shared.publish
async def late(self, snapshot, *before):
    await asyncio.sleep(60)
    await publish(self, snapshot, *before)
Shared.publish = late
"""


@pytest.mark.slow
async def test_until_a_worker_serves_the_first_catalog_it_answers_through_the_builder(
    tmp_path: Path,
) -> None:
    """The first catalog is served as soon as it is built: a worker that has not read it
    back yet answers through the building worker (the same bytes and ETags), so the workers
    are ready together as soon as one would be, not once the catalog is shared."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        started = time.monotonic()
        async with serving(config, 2, seam=SLOW_FIRST_SHARE) as gateway:
            assert time.monotonic() - started < 30  # sharing it takes a minute here
            for route in [*ROUTES, "/views", "/", "/views/payments/"]:  # pages name the URL
                answers = {await _get(gateway.base + route) for _ in range(12)}
                assert len(answers) == 1, (route, [(s, e) for s, _, e in answers])
                assert answers.pop()[0] == 200, route
            await asyncio.sleep(1.2)  # the access lines written (at least every second)
            lines = [e for e in gateway.lines() if e.get("event") == "request"
                     and e.get("path") == ROUTES[0]]  # fmt: skip
            by_worker = [sum(1 for e in lines if e.get("worker") == w) for w in (0, 1)]
            assert by_worker[1] > 0  # the other worker answered some of them...
            assert sum(by_worker) == 12  # (each logged once, by the worker the client reached)
            swapped = [
                e.get("worker") for e in gateway.lines() if e.get("event") == "catalog_swapped"
            ]
            assert swapped == [0]  # ...with no catalog of its own: through the one that builds
    finally:
        for registry in registries:
            await registry.stop()


SLOW_BUILDS = """
import asyncio
from gateway.sharing import Shared
async def slowly(self, snapshot, *before):
    await asyncio.sleep(120)
Shared.publish = slowly
"""


@pytest.mark.slow
async def test_workers_restarted_are_ready_on_the_catalog_kept(tmp_path: Path) -> None:
    """A restart of `serve --workers 2` is ready on the catalog the last run kept, before
    its first build is shared (here never: publishing takes two minutes)."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        async with serving(config, 2) as gateway:
            _, first, etag = await _get(f"{gateway.base}{ROUTES[0]}")
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.process.wait() == 0
        started = time.monotonic()
        async with serving(config, 2, seam=SLOW_BUILDS) as gateway:
            assert time.monotonic() - started < 20
            answers = [await _get(f"{gateway.base}{ROUTES[0]}") for _ in range(20)]
            assert {(status, body, tag) for status, body, tag in answers} == {(200, first, etag)}
            await asyncio.sleep(1.2)  # the access lines written (at least every second)
            assert gateway.answered_by(ROUTES[0]) == {0, 1}
    finally:
        for registry in registries:
            await registry.stop()


async def test_a_worker_waits_for_every_living_worker_to_serve(tmp_path: Path) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 4, tmp_path / "leader.sock")
    first, second, third = Shared(run, 0), Shared(run, 1), Shared(run, 2)
    (tmp_path / "alive.3").symlink_to(tmp_path / "alive.2")  # not its lock: not taken as ended
    try:
        assert first.not_serving() == [0, 1, 2, 3]
        first.note_serving()
        third.note_serving()
        assert second.not_serving() == [1, 3]
        second.close()  # worker 1 ended before it served: not waited for
        assert first.not_serving() == [3]
        (tmp_path / "alive.3").unlink()  # worker 3 not started yet
        assert first.not_serving() == [3]
        fourth = Shared(run, 3)
        assert first.not_serving() == [3]
        fourth.note_serving()
        assert first.not_serving() == []
        (tmp_path / "serving.0").unlink()
        assert first.not_serving() == []  # once every worker served, ready stays
        assert third.not_serving() == [0]
        fourth.close()
    finally:
        for shared in (first, second, third):
            shared.close()


@pytest.mark.slow  # three gateways, one after the other
async def test_workers_make_the_upstream_requests_of_one(tmp_path: Path) -> None:
    made: dict[int, int] = {}
    for workers in (1, 2, 3):
        registries = await _registries()
        try:
            config = _config(tmp_path / str(workers), registries)
            async with serving(config, workers) as gateway:
                await asyncio.sleep(1.0)  # any worker that would sync has done so by now
                assert (await _get(gateway.base + "/v0.1/servers?limit=3"))[0] == 200
            made[workers] = sum(len(registry.requests) for registry in registries)
        finally:
            for registry in registries:
                await registry.stop()
    assert made[1] > 0
    assert made[2] == made[1], made
    assert made[3] == made[1], made


def _stuck(pids: list[int], log: str) -> str:
    """Where each worker that is still there waits, and the gateway's log."""
    states = []
    for pid in pids:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()[:3]
            states.append(f"{pid}: {status} wchan={Path(f'/proc/{pid}/wchan').read_text()}")
    return "the gateway did not end:\n" + "\n".join(states) + "\n" + log[-8000:]


async def _the_others_stop_when_the_building_worker_dies(gateway: Gateway) -> None:
    status, body, _ = await _get(gateway.base + "/admin/status", **AUTH)
    assert status == 200
    assert body
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)  # worker 0, forked first (not the lowest: pids wrap)
    started = time.monotonic()
    try:
        code = await asyncio.wait_for(gateway.process.wait(), 20)
    except TimeoutError:  # what each process was doing, for the next one to read
        raise AssertionError(_stuck(pids, gateway.log.read_text())) from None
    assert code != 0  # a supervisor sees the gateway end, and restarts it whole
    assert time.monotonic() - started < 15
    assert code == 128 + signal.SIGKILL
    assert "worker 0 was killed (signal 9)" in gateway.log.read_text()


@pytest.mark.slow
async def test_when_the_building_worker_dies_the_others_stop(tmp_path: Path) -> None:
    registries = await _registries()
    try:
        async with serving(_config(tmp_path, registries), 2) as gateway:
            await _the_others_stop_when_the_building_worker_dies(gateway)
    finally:
        for registry in registries:
            await registry.stop()


@pytest.mark.slow
async def test_a_building_worker_that_dies_sharing_its_first_catalog_stops_the_others(
    tmp_path: Path,
) -> None:
    """A restart with no catalog kept builds its first from the state files as it starts,
    serves it at once and shares it after (the others answer through it meanwhile): dying
    then stops the others too, as it does once started."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        async with serving(config, 2) as gateway:  # the state files the restart reads
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.process.wait() == 0
        settings = yaml.safe_load((config / "gateway.yaml").read_text())
        settings["keep_catalog"] = False
        (config / "gateway.yaml").write_text(yaml.safe_dump(settings))
        async with serving(config, 2, seam=SLOW_FIRST_SHARE) as gateway:
            await _the_others_stop_when_the_building_worker_dies(gateway)
    finally:
        for registry in registries:
            await registry.stop()


# -- the run's directory is read as hostile ------------------------------------------------


async def _follows_nothing(shared: Shared, seconds: float = 0.4) -> None:
    def prepare(snapshot: Any, since: Any) -> Any:
        raise AssertionError("a catalog was read back")

    async def take(followed: Any) -> None:
        raise AssertionError("a catalog was served")

    task = asyncio.create_task(shared.follow(prepare, take))
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    shared.close()


@pytest.mark.parametrize(
    "offered",
    [
        b'{"generation": "%s.1", "file": "../snapshot.pack"}',
        b'{"generation": "%s.1", "file": "/etc/passwd"}',
        b'{"generation": "%s.1\\n", "file": "catalog.%s.1.pack"}',
        b'{"generation": "%s.1", "file": "catalog.%s.1.pack", "extra": 1}',
        b'{"generation": "%s.1", "file": "catalog.%s.1.pack"' + b" " * (5 << 20) + b"}",
        b"not json",
        b'{"generation": "0000000000000000.1", "file": "catalog.0000000000000000.1.pack"}',
    ],
)
async def test_an_offer_not_of_this_run_or_not_exact_is_not_read(
    tmp_path: Path, offered: bytes
) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    text = offered.replace(b"%s", run.token.encode())
    (tmp_path / "offered.json").write_bytes(text)
    (tmp_path / "catalog.0000000000000000.1.pack").write_bytes(b"x")
    (tmp_path / f"catalog.{run.token}.1.pack").write_bytes(b"x")
    await _follows_nothing(Shared(run, 1))
    assert not (tmp_path / "loaded.1.json").exists()


async def test_an_offer_through_a_symlink_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    real = tmp_path / "elsewhere.json"
    real.write_bytes(b'{"generation": "%s.1", "file": "catalog.%s.1.pack"}'
                     .replace(b"%s", run.token.encode()))  # fmt: skip
    (tmp_path / "offered.json").symlink_to(real)
    await _follows_nothing(Shared(run, 1))
    (tmp_path / "offered.json").unlink()
    os.mkfifo(tmp_path / "offered.json")  # never waited on
    await _follows_nothing(Shared(run, 1))
    assert not (tmp_path / "loaded.1.json").exists()


async def test_a_catalog_that_is_not_whole_is_reported_and_not_served(tmp_path: Path) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    (tmp_path / f"catalog.{run.token}.1.pack").write_bytes(b"\x00" * 4096)
    (tmp_path / "offered.json").write_bytes(
        b'{"generation": "%s.1", "file": "catalog.%s.1.pack"}'.replace(b"%s", run.token.encode())
    )
    await _follows_nothing(Shared(run, 1))
    loaded = orjson.loads((tmp_path / "loaded.1.json").read_bytes())
    assert loaded == {"generation": f"{run.token}.1", "loaded": False}  # not waited for


@pytest.mark.parametrize("offered_as", ["whole", "in part"])
async def test_a_catalog_not_as_offered_is_refused(tmp_path: Path, offered_as: str) -> None:
    """A catalog in part offered as whole (it would serve a few servers as the catalog), or a
    whole one offered in part, is not read: the worker asks for the whole catalog."""
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    _, before, after = _catalogs()
    found = deltas.changes(before, after)
    pack_file(tmp_path / f"catalog.{run.token}.1.pack", after,
              changes=found if offered_as == "whole" else None)  # fmt: skip
    base = b', "base": "%s.0"' if offered_as == "in part" else b""
    (tmp_path / "offered.json").write_bytes(
        (b'{"generation": "%s.1", "file": "catalog.%s.1.pack"' + base + b"}").replace(
            b"%s", run.token.encode())
    )  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        await _follows_nothing(Shared(run, 1))
    loaded = orjson.loads((tmp_path / "loaded.1.json").read_bytes())
    assert loaded == {"generation": f"{run.token}.1", "loaded": False}
    refused = [e["error"] for e in logs if e["event"] == "shared_catalog_unreadable"]
    assert len(refused) == 1
    assert "not as offered" in refused[0]


async def test_a_run_directory_is_private_removed_and_left_runs_are_cleared(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    crashed = state / ".workers-crashed"  # a run that ended without removing its directory
    crashed.mkdir(parents=True)
    (crashed / "run.lock").touch()
    (crashed / "catalog.0000000000000000.1.pack").write_bytes(b"x" * 1024)
    live = Run.prepare(state, 2)  # a run still going: its lock is held
    run = Run.prepare(state, 2)
    try:
        assert not crashed.exists()
        assert live.directory.is_dir()
        assert run.directory.parent == state.absolute()
        assert run.directory.stat().st_mode & 0o777 == 0o700
        assert run.socket.parent == run.directory
    finally:
        run.close()
        live.close()
    assert not run.directory.exists()
    assert not live.directory.exists()


async def test_a_socket_path_too_long_to_bind_is_made_short(tmp_path: Path) -> None:
    state = tmp_path / ("d" * 90) / "state"
    run = Run.prepare(state, 2)
    try:
        assert len(os.fsencode(run.socket)) <= 100
        assert run.socket.parent.stat().st_mode & 0o777 == 0o700
    finally:
        run.close()
    assert not run.socket.parent.exists()
    assert not run.directory.exists()


# -- the building worker's side --------------------------------------------------------------


async def _answer_offers(run: Run, worker: int, *, read: bool) -> None:
    """Another worker, as far as the files go: says it read (or could not read) each offer."""
    said = None
    while True:
        offered = run.directory / "offered.json"
        if offered.exists():
            generation = orjson.loads(offered.read_bytes())["generation"]
            if generation != said:
                said = generation
                note = {"generation": generation, "loaded": read}
                (run.directory / f"loaded.{worker}.json").write_bytes(orjson.dumps(note))
        await asyncio.sleep(0.005)


async def test_an_offer_no_other_worker_reads_is_named_current_after_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sharing, "LOAD_WAIT", 0.3)
    run = Run(tmp_path, "abcdefabcdefabcd", 3, tmp_path / "leader.sock")
    shared = Shared(run, 0)
    answering = asyncio.create_task(_answer_offers(run, 2, read=False))  # worker 1 says nothing
    try:
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            await shared.publish(demo_snapshot())
            waited = time.monotonic() - started
            await shared.publish(demo_snapshot())  # worker 1 is not waited for again
            again = time.monotonic() - started - waited
    finally:
        answering.cancel()
        shared.close()
    assert 0.3 <= waited < 5
    assert again < 0.3
    events = [(e["event"], e.get("workers")) for e in logs if e["event"].startswith("shared_")]
    assert events == [
        ("shared_catalog_not_read", [1]),
        ("shared_catalog_unreadable", [2]),
        ("shared_catalog_offered", None),
        ("shared_catalog_unreadable", [2]),
        ("shared_catalog_offered", None),
    ]
    current = orjson.loads((tmp_path / "current.json").read_bytes())["generation"]
    assert current == f"{run.token}.2"
    assert shared.published == tmp_path / f"catalog.{run.token}.2.pack"
    assert sorted(p.name for p in tmp_path.glob("catalog.*")) == [shared.published.name]


async def _offered_and_followed(
    run: Run, snapshots: list[Any], prepare: Any, take: Any, taken: list[Any],
    current: Any = lambda: None, *, in_part: bool = False, count: int = 1,
) -> None:  # fmt: skip
    """Worker 0 offers each snapshot in turn (`in_part`: with the one before it, as a build
    does) while worker 1 follows (`prepare`, `take`, `current`), until `take` has added
    `count` to `taken` (at most 2 s after the last offer)."""
    follower, builder = Shared(run, 1), Shared(run, 0)
    following = asyncio.create_task(follower.follow(prepare, take, None, current))
    try:
        before = None
        for snapshot in snapshots:
            await asyncio.wait_for(builder.publish(snapshot, before if in_part else None), 30)
            before = snapshot
        for _ in range(200):
            if len(taken) >= count:
                break
            await asyncio.sleep(0.01)
    finally:
        following.cancel()
        follower.close()
        builder.close()


async def test_a_catalog_offered_is_read_back_byte_for_byte(tmp_path: Path) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    snapshot = demo_snapshot()
    taken: list[Any] = []

    async def take(followed: Any) -> None:
        taken.append(followed)

    await _offered_and_followed(run, [snapshot], lambda s, since: (s, 0, [], None), take, taken)
    assert len(taken) == 1
    read = taken[0][0]
    for name, view in snapshot.views.items():
        assert [view.body(item) for item in view.every.items] == [
            read.views[name].body(item) for item in read.views[name].every.items
        ]


async def test_a_worker_that_ended_before_it_said_anything_is_not_waited_for(
    tmp_path: Path,
) -> None:
    """The parent says which workers ended (`run_workers` tells it), so one that died before
    it made its lock (or anything) does not keep the others from reporting ready."""
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    first = Shared(run, 0)
    try:
        first.note_serving()
        assert first.not_serving() == [1]  # not started yet, as far as the files go
        run.ended(1)
        assert first.not_serving() == []
    finally:
        first.close()


async def test_the_parent_hears_of_every_worker_that_ends() -> None:
    ended: list[int] = []
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    handlers = {signum: signal.getsignal(signum) for signum in signals}  # the parent's own
    try:
        # worker 0 never served: the others are not stopped when it ends, each ends as it does
        # (before, worker 1 could be stopped before it returned: 143, not 3, now and then)
        code = run_workers(3, lambda index: 3 if index == 1 else 0, lambda: False, ended.append)
        assert code == 3
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert sorted(ended) == [0, 1, 2]


@pytest.mark.parametrize("fails", ["prepare", "take"])
async def test_a_catalog_a_worker_cannot_serve_leaves_it_following(
    tmp_path: Path, fails: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog that fails to be read back or swapped in, for any reason, is logged and the
    one before stays served; the next one offered is read and served (before, anything but
    a file error ended the worker's following for good)."""
    monkeypatch.setattr(sharing, "SWAP_WAIT", 0.5)  # the builder waits on a swap not made
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    taken: list[Any] = []
    failures = [RuntimeError("not this one")]

    def prepare(snapshot: Any, since: Any) -> Any:
        if fails == "prepare" and failures:
            raise failures.pop()
        return (snapshot, 0, [], None)

    async def take(followed: Any) -> None:
        if fails == "take" and failures:
            raise failures.pop()
        taken.append(followed)

    with structlog.testing.capture_logs() as logs:
        await _offered_and_followed(run, [demo_snapshot(), demo_snapshot()], prepare, take, taken)
    assert not failures
    assert len(taken) == 1  # the second
    event = {"prepare": "shared_catalog_unreadable", "take": "shared_catalog_not_served"}[fails]
    assert event in [line["event"] for line in logs]


async def _handed_over(run: Run, current: bool) -> tuple[list[Any], list[dict[str, Any]], Any]:
    """Worker 0 offers a catalog, then the one a sync made of it (with the catalog before);
    worker 1 follows, telling what it serves (`current`) or not. What worker 1 served, the
    builder's log lines, and the catalog after."""
    _, before, after = _catalogs()
    served: list[Any] = []

    async def take(followed: Any) -> None:
        served.append(followed[0])

    serving_now = (lambda: served[-1] if served else None) if current else (lambda: None)
    with structlog.testing.capture_logs() as logs:
        await _offered_and_followed(run, [before, after], lambda s, since: (s, 0, [], None),
                                    take, served, serving_now, in_part=True, count=2)  # fmt: skip
    return served, logs, after


async def test_a_catalog_in_part_reaches_the_worker_serving_the_one_before(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    served, logs, after = await _handed_over(run, current=True)
    offered = [e["servers"] for e in logs if e["event"] == "shared_catalog_offered"]
    assert offered == [None, 1]  # whole, then the one server the sync changed
    assert len(served) == 2
    same(served[-1], after)
    assert not list(tmp_path.glob("catalog.*"))  # the part once served, the whole before it too


async def test_a_worker_not_serving_the_catalog_before_is_offered_the_whole(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path, "abcdefabcdefabcd", 2, tmp_path / "leader.sock")
    served, logs, after = await _handed_over(run, current=False)
    events = [(e["event"], e.get("servers")) for e in logs if e["event"].startswith("shared_")]
    assert events == [
        ("shared_catalog_offered", None),
        ("shared_catalog_unreadable", None),  # worker 1's: not on the catalog it serves
        ("shared_catalog_in_part_refused", None),
        ("shared_catalog_offered", None),  # the whole catalog, at once
    ]
    assert len(served) == 2
    same(served[-1], after)
