"""The registry client at its boundary: retries, Retry-After, timeouts, bad answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from gateway.config import RetrySettings, UpstreamSettings
from gateway.errors import UpstreamInvalid, UpstreamUnavailable
from gateway.upstream import RegistryClient, _Backoff, _retry_after
from tests.fakes import Failure, server_entry


def settings(url: str, **extra: Any) -> UpstreamSettings:
    retry = extra.pop("retry", {"attempts": 3, "initial_wait": "0s", "max_wait": "0s"})
    return UpstreamSettings.model_validate({"name": "up", "url": url, "retry": retry, **extra})


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


def test_retry_after_seconds_and_http_date() -> None:
    assert _retry_after("7", cap=30) == 7.0
    assert _retry_after("120", cap=30) == 30.0  # capped by max_wait
    assert _retry_after("soon", cap=30) is None
    in_five = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    waited = _retry_after(in_five, cap=30)
    assert waited is not None
    assert 3 <= waited <= 5


class _State:
    def __init__(self, attempt: int, exc: BaseException) -> None:
        self.attempt_number = attempt

        class Outcome:
            def exception(self) -> BaseException:
                return exc

        self.outcome = Outcome()


def test_backoff_prefers_retry_after_then_doubles_to_the_cap() -> None:
    backoff = _Backoff(RetrySettings(attempts=5, initial_wait="1s", max_wait="5s"))
    told = UpstreamUnavailable("up", "HTTP 429", retry_after=3.0)
    assert backoff(_State(1, told)) == 3.0
    plain = UpstreamUnavailable("up", "HTTP 503")
    assert [backoff(_State(n, plain)) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


async def test_gives_up_after_the_configured_attempts(registries: Any, session: Any) -> None:
    registry = await registries([server_entry("io.github.a/b", "1.0.0")])
    registry.fail_next(5, Failure(status=503))
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        await RegistryClient(settings(registry.url), session).walk()
    assert len(registry.requests) == 3


async def test_timeout_is_per_request_and_retried(registries: Any, session: Any) -> None:
    registry = await registries([server_entry("io.github.a/b", "1.0.0")])
    registry.delay = 0.5
    client = RegistryClient(settings(registry.url, timeout="50ms"), session)
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        await client.walk()
    assert len(registry.requests) == 3


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (Failure(status=200, body=b"not json"), "not JSON"),
        (Failure(status=200, body=b'{"items":[]}'), "not a server list"),
        (Failure(status=404, body=b"{}"), "HTTP 404"),
        (Failure(status=200, body=b'{"servers":[],"metadata":{"nextCursor":5}}'), "nextCursor"),
    ],
)
async def test_unusable_answers_are_not_retried(
    registries: Any, session: Any, failure: Failure, message: str
) -> None:
    registry = await registries([server_entry("io.github.a/b", "1.0.0")])
    registry.fail_next(1, failure)
    with pytest.raises(UpstreamInvalid, match=message):
        await RegistryClient(settings(registry.url), session).walk()
    assert len(registry.requests) == 1


async def test_cursor_loop_ends_the_walk_as_a_failure(registries: Any, session: Any) -> None:
    registry = await registries()
    looping = b'{"servers":[{"server":{"name":"io.github.a/b","version":"1.0.0"}}],' + (
        b'"metadata":{"nextCursor":"same"}}'
    )
    registry.fail_next(3, Failure(status=200, body=looping))
    with pytest.raises(UpstreamInvalid, match="cursor loop"):
        await RegistryClient(settings(registry.url), session).walk()


async def test_walk_stops_on_an_empty_page(registries: Any, session: Any) -> None:
    registry = await registries([server_entry(f"io.github.a/s{i}", "1.0.0") for i in range(4)])
    batch = await RegistryClient(settings(registry.url, page_size=2), session).walk()
    assert len(batch.entries) == 4
    # Two full pages each came with a cursor; the third page is empty and ends the walk.
    assert batch.pages == 3
    assert registry.requests[0] == {"limit": "2", "include_deleted": "true"}


# -- redirects stay where the operator pointed, credentials too --------------------------------


async def _recording_server(aiohttp_server: Any, seen: list[dict[str, str]], answer: Any) -> str:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        result: web.StreamResponse = await answer(request)
        return result

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_elsewhere_is_refused_and_the_credentials_stay(
    aiohttp_server: Any, session: Any, status: int
) -> None:
    from aiohttp import web

    elsewhere: list[dict[str, str]] = []

    async def page(_: web.Request) -> web.Response:
        return web.json_response({"servers": [], "metadata": {"count": 0}})

    other = await _recording_server(aiohttp_server, elsewhere, page)
    asked: list[dict[str, str]] = []

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": f"{other}/v0.1/servers"})

    registry = await _recording_server(aiohttp_server, asked, redirect)
    client = RegistryClient(settings(registry, headers={"X-Api-Key": "s3cret"}), session)
    with pytest.raises(UpstreamInvalid, match="outside its configured location"):
        await client.get_page({"limit": "100"})
    assert asked[0]["X-Api-Key"] == "s3cret"
    assert elsewhere == []  # not asked at all, let alone with the key


async def test_a_redirect_under_the_upstreams_url_is_followed(
    aiohttp_server: Any, session: Any
) -> None:
    from aiohttp import web

    asked: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/base/v0.1/servers":
            return web.Response(status=307, headers={"Location": "/base/v0.1/servers/page"})
        if request.path == "/base/v0.1/servers/page":
            return web.json_response({"servers": [], "metadata": {"count": 0}})
        return web.Response(status=404)

    registry = await _recording_server(aiohttp_server, asked, answer)
    client = RegistryClient(settings(f"{registry}/base", headers={"X-Api-Key": "k"}), session)
    assert b'"servers"' in await client.get_page({"limit": "100"})
    assert [headers["X-Api-Key"] for headers in asked] == ["k", "k"]


@pytest.mark.parametrize(
    "location",
    ["/elsewhere/v0.1/servers", "/base/../elsewhere", "/base/%2e%2e/elsewhere",
     "/base/%252e%252e/elsewhere", "//{host}/elsewhere", "http://u:p@{host}/base/v0.1/servers",
     "https://{host}/base/v0.1/servers", "/base\\..\\elsewhere", "http://[::1"],
)  # fmt: skip
async def test_every_way_out_of_the_upstreams_url_is_refused(
    aiohttp_server: Any, session: Any, location: str
) -> None:
    from aiohttp import web

    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        host = f"127.0.0.1:{request.url.port}"
        return web.Response(status=302, headers={"Location": location.format(host=host)})

    registry = await _recording_server(aiohttp_server, [], answer)
    client = RegistryClient(settings(f"{registry}/base"), session)
    with pytest.raises(UpstreamInvalid, match="a redirect to"):
        await client.get_page({"limit": "100"})
    assert len(asked) == 1  # the first request only
