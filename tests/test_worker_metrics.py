"""`serve --workers N`: `/metrics` answers for the whole gateway, whichever worker a scrape
reaches, and a request one worker hands to another is counted and logged once.

Real `serve --workers 2` processes over fake registries on loopback (see `test_sharing`).
Each request goes over a connection of its own, so the kernel spreads them over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from gateway import sharing
from gateway.config import UpstreamSettings
from gateway.feed import Feed
from gateway.metrics import Metrics, Tallies
from gateway.rundir import Run
from gateway.sharing import Shared
from tests.test_sharing import AUTH, Gateway, _config, _get, _registries, serving

pytestmark = pytest.mark.timeout(90)
ON_ONE_LOOP = pytest.mark.asyncio(loop_scope="module")

LIST = "/v0.1/servers?limit=7"
SAMPLE = re.compile(rb'^mcp_gateway_requests_total\{route="([a-z_]+)",status="(\d+)"\} (\S+)$')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    registries = await _registries()
    config = _config(tmp_path_factory.mktemp("worker-metrics"), registries)
    try:
        async with serving(config, 2) as gateway:
            yield gateway
    finally:
        for registry in registries:
            await registry.stop()


def _counts(body: bytes) -> dict[tuple[str, str], float]:
    found = {}
    for line in body.splitlines():
        matched = SAMPLE.match(line)
        if matched:
            found[(matched[1].decode(), matched[2].decode())] = float(matched[3])
    return found


async def _scrapes(gateway: Gateway, count: int) -> list[tuple[int, dict[tuple[str, str], float]]]:
    """`count` scrapes, each over a connection of its own, with the worker that answered
    each (its access line's, by request id, once the logs are flushed)."""
    answers = []
    for _ in range(count):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(gateway.base + "/metrics") as response,
        ):
            assert response.status == 200
            answers.append((response.headers["X-Request-Id"], await response.read()))
    await asyncio.sleep(1.5)  # access lines are flushed every second
    workers = {e["request_id"]: e["worker"] for e in gateway.lines()
               if e.get("event") == "request" and e.get("path") == "/metrics"}  # fmt: skip
    return [(workers[request_id], _counts(body)) for request_id, body in answers]


async def _listed_as_each_worker_counts(gateway: Gateway, requests: int) -> set[float]:
    """`requests` list requests (both workers take some), then what scrapes that reached
    each worker say was answered."""
    for _ in range(requests):
        status, _, _ = await _get(gateway.base + LIST)
        assert status == 200
    await asyncio.sleep(1.5)
    assert gateway.answered_by(LIST) == {0, 1}
    for _ in range(5):
        scrapes = await _scrapes(gateway, 12)
        if {worker for worker, _ in scrapes} == {0, 1}:
            return {counts[("list", "200")] for _, counts in scrapes}
    raise AssertionError("every scrape reached the same worker")


@ON_ONE_LOOP
async def test_every_worker_reports_the_requests_of_all(two: Gateway) -> None:
    """A scrape that reaches either worker counts every request the gateway answered, not
    the half this worker answered (a counter that jumps between workers is no counter)."""
    assert await _listed_as_each_worker_counts(two, 40) == {40}


@ON_ONE_LOOP
async def test_a_request_handed_to_the_building_worker_is_counted_and_logged_once(
    two: Gateway,
) -> None:
    """`/admin/status` is answered by the building worker: one the other worker takes is
    handed to it over the run's socket, and still counts as one request, with one access
    line (the worker the client reached, with the status and time the client saw)."""
    gateway = two
    before = [e for e in gateway.lines() if e.get("path") == "/admin/status"]
    for _ in range(20):
        status, _, _ = await _get(gateway.base + "/admin/status", **AUTH)
        assert status == 200
    await asyncio.sleep(1.5)
    lines = [e for e in gateway.lines() if e.get("path") == "/admin/status"][len(before) :]
    assert len(lines) == 20
    assert {line["worker"] for line in lines} == {0, 1}  # both took some: half were handed on
    assert len({line["request_id"] for line in lines}) == 20
    for _, counts in await _scrapes(gateway, 4):
        assert counts[("admin", "200")] == 20


# -- the tallies, in-process: two workers' metrics over a real run directory ------------------


def _observed(metrics: Metrics, lists: int, syncs: list[float]) -> None:
    for _ in range(lists):
        metrics.observe_request("list", 200, 0.002)
    feed = Feed(UpstreamSettings(name="official", url="https://registry.example.com"))
    for seconds in syncs:
        feed.last_duration = seconds
        metrics.observe_sync(feed, True)


def test_a_scrape_adds_the_other_workers_tallies(tmp_path: Path) -> None:
    run = Run.prepare(tmp_path, 2)
    first, second = Metrics(), Metrics()
    for index, metrics in enumerate((first, second)):
        metrics.answer_for(Shared(run, index))
    _observed(first, 3, [0.2, 40.0])  # the building worker syncs
    _observed(second, 5, [])
    for index, metrics in enumerate((first, second)):
        Shared(run, index).note_tallies(metrics.tallies().model_dump_json().encode())
    first.observe_request("list", 200, 0.002)  # not written yet: its own scrape writes it
    for metrics in (first, second, first):  # so that no scrape after it says less
        text = metrics.render().decode()
        assert 'mcp_gateway_requests_total{route="list",status="200"} 9.0' in text
        assert 'mcp_gateway_request_duration_seconds_bucket{le="0.0025",route="list"}' in text
        assert ('mcp_gateway_upstream_sync_duration_seconds_count{outcome="ok",'
                'upstream="official"} 2.0') in text  # fmt: skip
        assert ('mcp_gateway_upstream_sync_duration_seconds_bucket{le="0.5",outcome="ok",'
                'upstream="official"} 1.0') in text  # fmt: skip
        for bound in ("1.0", "10.0", "600.0", "+Inf"):  # as Prometheus spells bounds
            assert f'_sync_duration_seconds_bucket{{le="{bound}",outcome="ok"' in text
    run.close()


def _listed(metrics: Metrics) -> float:
    found = re.search(r'mcp_gateway_requests_total\{route="list",status="200"\} (\S+)',
                      metrics.render().decode())  # fmt: skip
    return float(found[1]) if found else 0.0


async def test_a_write_that_waited_in_a_busy_pool_never_takes_a_counter_back(
    tmp_path: Path,
) -> None:
    """The second-by-second write is taken on the loop and written in a worker thread; a
    scrape meanwhile writes fresher counts. The older write, landing last, must not replace
    them: the next scrape, at the other worker, would say less than this one did."""
    run = Run.prepare(tmp_path, 2)
    first, second = Metrics(), Metrics()
    second.answer_for(Shared(run, 1))
    _observed(first, 10, [])
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)
    loop.set_default_executor(pool)
    busy = threading.Event()
    held = loop.run_in_executor(None, busy.wait)  # the pool busy (a pack, a search update)
    sharing = asyncio.create_task(first.share(Shared(run, 0)))
    await asyncio.sleep(0.05)  # 10 taken, its write waiting
    _observed(first, 5, [])
    seen_first = _listed(first)  # a scrape at the first worker
    busy.set()
    await held
    await asyncio.sleep(0.2)  # the waiting write has had its turn
    assert seen_first == 15
    assert _listed(second) == 15
    sharing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sharing
    run.close()


def test_a_worker_that_cannot_write_its_tallies_answers_with_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (a full disk) is tried again, and until one succeeds the worker's
    scrapes answer with what the others can read, not with counts they would then lose."""
    run = Run.prepare(tmp_path, 2)
    first, second = Metrics(), Metrics()
    first.answer_for(Shared(run, 0))
    second.answer_for(Shared(run, 1))
    _observed(first, 4, [])
    assert _listed(first) == 4  # written
    _observed(first, 3, [])

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sharing, "write_small", full)
    assert _listed(first) == 4
    assert _listed(second) == 4
    monkeypatch.undo()
    assert _listed(first) == 7
    assert _listed(second) == 7
    run.close()


@pytest.mark.parametrize("written", [
    b"", b"not json", b"[]", b'{"requests": [["list", "200", 1]], "latency": [], "syncs": []}',
    b'{"requests": [], "latency": [], "syncs": [], "more": 1}',
    b'{"requests": [["list", 200, 1, 2]], "latency": [], "syncs": []}',
    b'{"requests": [["list", 200, -999]], "latency": [], "syncs": []}',
    b'{"requests": [["list", 200, ' + b"9" * 400 + b']], "latency": [], "syncs": []}',
    b'{"requests": [["list", 200, 1]], "latency": [["list", [NaN]]], "syncs": []}',
    b'{"requests": [["list\\n", 200, 1]], "latency": [], "syncs": []}',
    b'{"requests": [["list", 999, 1]], "latency": [], "syncs": []}',
    b'{"requests": [], "latency": [["list", [-1.0, 1.0]]], "syncs": []}',
])  # fmt: skip
def test_a_tallies_file_not_of_its_shape_is_left_out(tmp_path: Path, written: bytes) -> None:
    """Read as hostile: a file of the wrong shape, or with counts that are no counts
    (negative, not a number, too large to add) or labels the gateway never makes, adds
    nothing, and the scrape answers."""
    run = Run.prepare(tmp_path, 2)
    metrics = Metrics()
    metrics.answer_for(Shared(run, 0))
    _observed(metrics, 2, [])
    (run.directory / "metrics.1.json").write_bytes(written)
    text = metrics.render().decode()
    assert 'mcp_gateway_requests_total{route="list",status="200"} 2.0' in text
    assert "NaN" not in text
    assert 'mcp_gateway_request_duration_seconds_count{route="list"} 2.0' in text
    run.close()


def test_buckets_of_another_length_are_left_out(tmp_path: Path) -> None:
    """Counts whose buckets are not this version's add nothing, rather than shifting."""
    run = Run.prepare(tmp_path, 2)
    metrics = Metrics()
    metrics.answer_for(Shared(run, 0))
    _observed(metrics, 1, [])
    other = Tallies(requests=[("list", 200, 4)], latency=[("list", [1.0, 2.0])], syncs=[])
    (run.directory / "metrics.1.json").write_bytes(other.model_dump_json().encode())
    text = metrics.render().decode()
    assert 'mcp_gateway_requests_total{route="list",status="200"} 5.0' in text
    assert 'mcp_gateway_request_duration_seconds_count{route="list"} 1.0' in text
    run.close()


SLOW_START = """
import asyncio
from gateway.refresher import Refresher
async def slowly(self, background=True):
    await asyncio.sleep(120)
Refresher.start_own = slowly
"""


@pytest.mark.slow
@ON_ONE_LOOP
async def test_scrapes_answer_for_every_worker_while_the_first_still_starts(
    tmp_path: Path,
) -> None:
    """Restarted, every worker serves the catalog kept and counts requests at once, while
    the first still loads state and builds (here for two minutes): scrapes answer for every
    worker from then on, not once the first worker's start is done."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        async with serving(config, 2) as gateway:
            gateway.process.terminate()
            assert await gateway.process.wait() == 0  # the catalog kept as it stops
        async with serving(config, 2, seam=SLOW_START) as gateway:
            assert await _listed_as_each_worker_counts(gateway, 30) == {30}
    finally:
        for registry in registries:
            await registry.stop()
