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
