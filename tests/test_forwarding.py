"""A following worker hands requests to the building worker byte for byte: the path and query
it received are the ones the building worker reads, however they are spelled (percent-escapes
of dots, of unreserved characters, of `/`), so a request never reaches another route there.

The building worker here is a real aiohttp server on a Unix socket that echoes what it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import LeaderUnavailable
from gateway.forwarding import REQUEST_ID, Forwarder

# What a path's segments and a query are made of: letters, dots, the characters a URL
# normalizer may decode or fold, and percent-escapes of dots, `/`, `%` and unreserved ones.
_PIECES = st.sampled_from([
    "a", "Z", "0", ".", "..", "-", "_", "~", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%41", "%61",
    "%7e", "%25", "%2525", "%20", "+", "admin", "views", "v0.1", "servers",
])  # fmt: skip
_SEGMENT = st.lists(_PIECES, min_size=0, max_size=4).map("".join)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
_QUERY = st.lists(_PIECES | st.just("=") | st.just("&"), max_size=6).map("".join)


@contextlib.asynccontextmanager
async def _answering(
    answer: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> AsyncIterator[Forwarder]:
    """A Forwarder to a server on a Unix socket answering each request with `answer`."""
    with tempfile.TemporaryDirectory() as directory:
        socket = Path(directory) / "leader.sock"
        runner = web.ServerRunner(web.Server(answer))
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        forwarder = Forwarder(socket)
        try:
            yield forwarder
        finally:
            await forwarder.close()
            await runner.cleanup()


@pytest_asyncio.fixture
async def leader() -> AsyncIterator[Forwarder]:
    """A Forwarder to a server answering each request with its raw path."""

    async def echo(request: web.BaseRequest) -> web.Response:
        seen = {"X-Seen-Request-Id": request.headers.get("X-Request-Id", ""),
                "X-Seen-Host": request.headers.get("Host", "")}  # fmt: skip
        return web.Response(text=request.raw_path, headers=seen)

    async with _answering(echo) as forwarder:
        yield forwarder


async def _echoed(forwarder: Forwarder, raw: str) -> str:
    answer = await forwarder.forward(make_mocked_request("GET", raw))
    assert answer.status == 200
    assert isinstance(answer.body, bytes)
    return answer.body.decode()


async def test_dot_segments_spelled_with_escapes_reach_the_same_route(leader: Forwarder) -> None:
    for raw in (
        "/views/%2e%2e/admin/status",
        "/v0.1/servers/%2E%2E/%2e%2e/admin/reload",
        "/v0.1/servers/io.github.%61cme%2Fx/versions",
        "/v0.1/servers?search=%41%2e&cursor=%2525",
    ):
        assert await _echoed(leader, raw) == raw


@pytest.mark.slow
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_PATH, query=_QUERY)
async def test_every_path_and_query_reaches_the_building_worker_as_sent(
    leader: Forwarder, path: str, query: str
) -> None:
    raw = f"{path}?{query}" if query else path
    assert await asyncio.wait_for(_echoed(leader, raw), 10) == raw


async def test_the_building_worker_logs_a_request_under_the_id_the_other_gave_it(
    leader: Forwarder,
) -> None:
    request = make_mocked_request("GET", "/v0.1/servers", headers={"X-Request-Id": "bad id"})
    request[REQUEST_ID] = "0123abcd00000007"  # what the forwarding worker made of it
    answer = await leader.forward(request)
    assert answer.headers["X-Seen-Request-Id"] == "0123abcd00000007"


async def test_the_building_worker_reads_the_clients_host(leader: Forwarder) -> None:
    """Pages name the gateway's URL by the Host the client asked (as the worker it reached
    would have), never the socket's."""
    request = make_mocked_request("GET", "/views", headers={"Host": "registry.example.com:8443"})
    answer = await leader.forward(request)
    assert answer.headers["X-Seen-Host"] == "registry.example.com:8443"


async def test_a_head_request_answered_through_it_keeps_its_length(leader: Forwarder) -> None:
    """HEAD says how long GET's body is, whichever worker the client reached."""

    async def front(request: web.BaseRequest) -> web.StreamResponse:
        return await leader.forward(request)

    runner = web.ServerRunner(web.Server(front))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            lengths = []
            for method in ("GET", "HEAD"):
                async with session.request(method, f"http://127.0.0.1:{port}/v0.1/servers") as got:
                    assert got.status == 200
                    lengths.append(got.headers.get("Content-Length"))
    finally:
        await runner.cleanup()
    assert lengths == [str(len("/v0.1/servers"))] * 2


@pytest.mark.parametrize("size", [40_000, 600_000])
async def test_an_answer_that_arrives_in_parts_is_handed_on_whole(size: int) -> None:
    """The building worker's answer reaches the other in parts (a loaded machine, an answer
    larger than the socket's buffer): it is handed on whole, never cut at the first part
    with the whole answer's ETag."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"ETag": '"whole"'})
        response.content_length = size
        await response.prepare(request)
        await response.write(b"a" * (size // 2))
        await asyncio.sleep(0.2)  # the rest a moment later
        await response.write(b"b" * (size - size // 2))
        return response

    async with _answering(answer) as forwarder:
        got = await forwarder.forward(make_mocked_request("GET", "/v0.1/servers?limit=100"))
    assert got.status == 200
    assert got.headers["ETag"] == '"whole"'
    assert got.body == b"a" * (size // 2) + b"b" * (size - size // 2)


async def test_an_answer_cut_short_is_no_answer() -> None:
    """The building worker ends halfway through an answer: a 503 to retry, not half a body."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 40_000
        await response.prepare(request)
        await response.write(b"a" * 20_000)
        assert request.transport is not None
        request.transport.close()
        return response

    async with _answering(answer) as forwarder:
        with pytest.raises(LeaderUnavailable):
            await forwarder.forward(make_mocked_request("GET", "/v0.1/servers"))
