"""The read API over HTTP, as IDEs use it: routes, errors, CORS, caching headers."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import BadRequest, Busy, LeaderUnavailable, NotReady, RequestError
from tests.conftest import file_upstream
from tests.fakes import server_entry

OFFICIAL = "io.modelcontextprotocol.registry/official"
ITEMS = [
    server_entry("io.github.acme/weather", "1.0.0", published="2026-01-01T00:00:00Z"),
    server_entry("io.github.acme/weather", "1.1.0", published="2026-02-01T00:00:00Z"),
    server_entry("io.github.acme/weather", "2.0.0+build.7", published="2026-03-01T00:00:00Z"),
    server_entry("io.github.acme/gone", "1.0.0", status="deleted"),
    server_entry("io.github.acme/big", "1.0.0", description="x" * 100, title="t" * 100),
]


@pytest.fixture
async def client(tmp_path: Path, make_config: Any, serve: Any) -> Any:
    upstream = file_upstream(tmp_path / "data", "local", ITEMS)
    config = make_config(upstreams=[upstream], access_log=False)
    return await serve(config)


@pytest.mark.parametrize("prefix", ["/v0.1", "/v0", ""])
async def test_list_under_every_prefix(client: Any, prefix: str) -> None:
    response = await client.get(f"{prefix}/servers")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert body["metadata"] == {"count": 4}
    assert [s["server"]["version"] for s in body["servers"]][:2] == ["1.0.0", "1.0.0"]
    assert all("_meta" in entry and OFFICIAL in entry["_meta"] for entry in body["servers"])


async def test_encoded_slash_and_latest(client: Any) -> None:
    response = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/latest")
    assert response.status == 200
    body = await response.json()
    assert body["server"]["name"] == "io.github.acme/weather"
    assert body["server"]["version"] == "2.0.0+build.7"
    assert body["_meta"][OFFICIAL]["isLatest"] is True
    double = await client.get("/v0.1/servers/io.github.acme%252Fweather/versions/1.0.0")
    assert double.status == 200
    plus = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions/2.0.0%2Bbuild.7")
    assert (await plus.json())["server"]["version"] == "2.0.0+build.7"


async def test_versions_newest_published_first(client: Any) -> None:
    response = await client.get("/v0.1/servers/io.github.acme%2Fweather/versions")
    body = await response.json()
    assert [s["server"]["version"] for s in body["servers"]] == ["2.0.0+build.7", "1.1.0", "1.0.0"]
    assert body["metadata"] == {"count": 3}


@pytest.mark.parametrize(
    "path",
    [
        "/v0.1/servers/io.github.acme/weather/versions",  # unencoded slash
        "/v0.1/servers/io.github.acme%2Fnope/versions",
        "/v0.1/servers/io.github.acme%2Fweather/versions/9.9.9",
        "/v0.1/servers/io.github.acme%2Fgone/versions",
        "/v0.1/servers/io.github.acme%2Fgone/versions/1.0.0",
    ],
)
async def test_not_found(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"


async def test_deleted_found_with_include_deleted(client: Any) -> None:
    path = "/v0.1/servers/io.github.acme%2Fgone/versions/1.0.0?include_deleted=true"
    response = await client.get(path)
    assert response.status == 200
    assert (await response.json())["_meta"][OFFICIAL]["status"] == "deleted"


async def test_unknown_route_and_view(client: Any) -> None:
    response = await client.get("/v0.1/nothing")
    assert response.status == 404
    assert (await response.json())["detail"] == "Endpoint not found"
    view = await client.get("/views/nobody/v0.1/servers")
    assert view.status == 404
    assert "View not found" in (await view.json())["detail"]


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("limit=101", 422, "validation failed"),
        ("limit=abc", 422, "validation failed"),
        ("include_deleted=yes", 422, "validation failed"),
        ("updated_since=last-week", 400, "Invalid updated_since format"),
        ("updated_since=2026-01-01T00:00:00Z&include_deleted=false", 400, "incremental sync"),
        ("cursor=forged", 400, "invalid cursor"),
        ("search=%00", 400, "NUL"),
    ],
)
async def test_parameter_errors(client: Any, query: str, status: int, detail: str) -> None:
    response = await client.get(f"/v0.1/servers?{query}")
    assert response.status == status
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.json()
    assert body["status"] == status
    assert detail in body["detail"]
    if status == 422:
        assert body["errors"][0]["location"].startswith("query.")


@pytest.mark.parametrize(
    "target",
    ["/v0.1/servers#x", "/v0.1/servers?limit=2#x", "/admin/status#x", "/views#", "/#top"],
)
async def test_a_request_target_with_a_fragment_is_a_bad_request(client: Any, target: str) -> None:
    """No client sends a fragment (RFC 9112); one that does gets a 400 on every route, so no
    worker reads a target that a worker handing it on would read without its fragment."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status = (await reader.readline()).split()
        body = await reader.read()
    finally:
        writer.close()
    assert status[1] == b"400", (target, status)
    assert b"fragment" in body


async def test_unknown_parameters_are_ignored(client: Any) -> None:
    response = await client.get("/v0.1/servers?color=blue&limit=2")
    assert response.status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_writes_are_refused(client: Any, method: str) -> None:
    for path in ("/v0.1/publish", "/v0.1/servers/io.github.acme%2Fweather/versions/1.0.0"):
        response = await client.request(method, path)
        assert response.status in (404, 405)
        assert response.headers["Content-Type"] == "application/problem+json"
    response = await client.request(method, "/v0.1/servers")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


async def test_cors_preflight_and_simple_request(client: Any) -> None:
    preflight = await client.options(
        "/v0.1/servers",
        headers={
            "Origin": "vscode-file://vscode-app",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization"
    assert preflight.headers["Access-Control-Max-Age"] == "86400"
    plain = await client.get("/v0.1/servers?limit=1", headers={"Origin": "https://x.example"})
    assert plain.headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in plain.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ",".join(plain.headers.getall("Vary"))
    no_origin = await client.get("/v0.1/servers?limit=1")
    assert "Access-Control-Allow-Origin" not in no_origin.headers
    assert "Origin" in ",".join(no_origin.headers.getall("Vary"))


async def test_etag_and_304(client: Any) -> None:
    first = await client.get("/v0.1/servers", headers={"Accept-Encoding": "identity"})
    etag = first.headers["ETag"]
    again = await client.get(
        "/v0.1/servers", headers={"If-None-Match": etag, "Accept-Encoding": "identity"}
    )
    assert again.status == 304
    assert again.headers["ETag"] == etag
    other = await client.get("/v0.1/servers?limit=1", headers={"If-None-Match": etag})
    assert other.status == 200


async def test_gzip_when_accepted(client: Any) -> None:
    plain = await client.get("/v0.1/servers", headers={"Accept-Encoding": "identity"})
    raw = await plain.read()
    zipped = await client.get(
        "/v0.1/servers", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == raw
    assert zipped.headers["ETag"] != plain.headers["ETag"]


async def test_probes_and_info(client: Any) -> None:
    assert (await (await client.get("/v0.1/health")).json()) == {"status": "ok"}
    assert (await (await client.get("/v0/ping")).json()) == {"pong": True}
    assert "version" in await (await client.get("/v0.1/version")).json()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_security_headers_and_request_id(client: Any) -> None:
    response = await client.get("/v0.1/servers", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"] == "abc-123"
    generated = await client.get("/v0.1/servers", headers={"X-Request-Id": "<script>"})
    assert generated.headers["X-Request-Id"] != "<script>"


@pytest.mark.parametrize("error", [Busy(), LeaderUnavailable(), NotReady([])])
async def test_every_error_to_ask_again_says_when(
    client: Any, monkeypatch: pytest.MonkeyPatch, error: RequestError
) -> None:
    """A request error that names a wait (a 503) is answered with it as Retry-After and its
    own detail; the others have no Retry-After."""

    raised = [error]

    async def failing(*_: object) -> None:
        raise raised[0]

    monkeypatch.setattr("gateway.app.dispatch", failing)
    answer = await client.get("/v0.1/servers?limit=3")  # not cached yet: dispatched
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert (await answer.json())["detail"] == error.detail
    assert error.detail  # each says why
    raised[0] = BadRequest("no")
    other = await client.get("/v0.1/servers?limit=4")
    assert other.status == 400
    assert "Retry-After" not in other.headers


async def test_not_ready_until_a_catalog_is_loaded(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    upstream = file_upstream(tmp_path / "data", "local", ITEMS)
    config = make_config(upstreams=[upstream])
    client = await serve(config, sync=False)  # no state, no sync yet
    ready = await client.get("/readyz")
    assert ready.status == 503
    listing = await client.get("/v0.1/servers")
    assert listing.status == 503
    assert listing.headers["Retry-After"] == "1"
    assert (await client.get("/healthz")).status == 200


async def test_head_answers_like_get_without_a_body(client: Any) -> None:
    get = await client.get("/v0.1/servers", headers={"Accept-Encoding": "identity"})
    head = await client.head("/v0.1/servers", headers={"Accept-Encoding": "identity"})
    assert head.status == 200
    assert head.headers["ETag"] == get.headers["ETag"]
    assert await head.read() == b""


def test_answers_recalled_by_url_stay_within_the_cache_budget() -> None:
    """A client walking every page must not make the gateway keep every answer: answers
    recalled by exact URL are bounded like the cache (in bytes, not only in URLs)."""
    import tracemalloc
    from datetime import UTC, datetime

    from gateway.api import Api, Route
    from gateway.build import plain_view
    from gateway.catalog import Origin
    from gateway.entry import parse_item
    from gateway.merge import Source, merge
    from gateway.snapshot import Snapshot

    now = datetime(2026, 6, 1, tzinfo=UTC)
    items = [
        server_entry(f"io.github.a/s{i:03}", "1.0.0", description="d" * 3000) for i in range(300)
    ]
    entries = [parse_item(item, seen_at=now) for item in items]
    view = plain_view("default", merge([Source("u", entries)]), {"u": Origin("u", now)}, "x")
    snapshot = Snapshot(views={"default": view}, built_at=now)
    api = Api(cache_bytes=50_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for item in items:
            name = item["server"]["name"]
            raw = f"/v0.1/servers/{name.replace('/', '%2F')}/versions"
            assert api.answer(snapshot, Route("default", "versions", name), {}, raw=raw)
            assert api.recall(snapshot, raw) is not None  # the fast path still works
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 400_000  # 300 answers of 3 KB kept would be over 900 KB


@pytest.mark.parametrize("gzipped", [False, True])
def test_distinct_long_queries_stay_within_the_cache_budget(gzipped: bool) -> None:
    """Anyone who can reach the port can send distinct long searches: the caches count what
    each answer really holds (its key and URL, its body, its gzip form, the objects around
    them), so memory stays within their budget however many arrive."""
    import tracemalloc
    from datetime import UTC, datetime

    from gateway.api import Api, Route
    from gateway.build import plain_view
    from gateway.catalog import Origin
    from gateway.entry import parse_item
    from gateway.merge import Source, merge
    from gateway.snapshot import Snapshot

    now = datetime(2026, 6, 1, tzinfo=UTC)
    items = [server_entry(f"io.github.a/s{i:03}", "1.0.0") for i in range(50)]
    entries = [parse_item(item, seen_at=now) for item in items]
    view = plain_view("default", merge([Source("u", entries)]), {"u": Origin("u", now)}, "x")
    snapshot = Snapshot(views={"default": view}, built_at=now)
    budget = 1_000_000
    api = Api(cache_bytes=budget)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            search = f"{i:06d}" + "q" * 250  # the longest search there is, and junk in the URL
            raw = f"/v0.1/servers?search={search}&x={'j' * 7000}"  # 3000 x 7 KB of URLs alone
            rendered = api.answer(snapshot, Route("default", "list"), {"search": search}, raw=raw)
            if gzipped:
                rendered.gzipped()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert api.held() <= 2 * budget  # each cache within its budget
    assert grown < 2.5 * budget, grown


async def test_a_search_longer_than_256_characters_is_a_422(client: Any) -> None:
    ok = await client.get("/v0.1/servers", params={"search": "w" * 256})
    assert ok.status == 200
    refused = await client.get("/v0.1/servers", params={"search": "w" * 257})
    assert refused.status == 422
    body = await refused.json()
    assert body["errors"][0]["location"] == "query.search"
    assert body["errors"][0]["message"] == "expected length <= 256"


def test_a_forged_cursor_cannot_carry_a_longer_search() -> None:
    from gateway.cursor import Cursor, Walk, encode_cursor
    from gateway.errors import ValidationFailed
    from gateway.query import parse_list_query

    forged = encode_cursor(Cursor("a/a", "1", Walk(search="x" * 3000)))
    with pytest.raises(ValidationFailed):
        parse_list_query({"cursor": forged})
