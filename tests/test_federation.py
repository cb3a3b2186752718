"""Several fake upstream registries (real aiohttp servers) federated by one gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gateway.app import REFRESHER
from tests.fakes import Failure, server_entry

OFFICIAL = "io.modelcontextprotocol.registry/official"
NS = "com.example.mcp-gateway"


def upstream(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "refresh": "1h", **extra}


async def all_entries(client: Any, base: str = "", **params: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    query = {"limit": "100", **params}
    while True:
        response = await client.get(f"{base}/v0.1/servers", params=query)
        assert response.status == 200, await response.text()
        body = await response.json()
        entries.extend(body["servers"])
        cursor = body["metadata"].get("nextCursor")
        if not cursor:
            return entries
        query = {"limit": "100", "cursor": cursor}


def without_gateway_meta(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": entry["server"],
        "_meta": {k: v for k, v in entry["_meta"].items() if k != NS},
    }


def keys(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["server"]["name"], e["server"]["version"]) for e in entries]


async def test_precedence_and_owns_across_three_upstreams(
    registries: Any, make_config: Any, serve: Any
) -> None:
    internal = await registries([server_entry("com.example/search", "2.0.0")])
    github = await registries(
        [
            server_entry("com.example/search", "9.0.0"),  # shadowed by internal
            server_entry("io.github.octo/tools", "1.0.0"),
        ]
    )
    official = await registries(
        [
            server_entry("com.example/billing", "1.0.0"),  # reserved by internal's owns
            server_entry("io.github.octo/tools", "5.0.0"),  # shadowed by github
            server_entry("io.github.solo/only-official", "1.0.0"),
        ]
    )
    config = make_config(
        upstreams=[
            upstream("internal", internal.url, owns=["com.example/*"]),
            upstream("github", github.url),
            upstream("official", official.url),
        ]
    )
    client = await serve(config)
    entries = await all_entries(client)
    assert keys(entries) == [
        ("com.example/search", "2.0.0"),
        ("io.github.octo/tools", "1.0.0"),
        ("io.github.solo/only-official", "1.0.0"),
    ]
    assert [e["_meta"][NS]["upstream"] for e in entries] == ["internal", "github", "official"]
    assert all(e["_meta"][NS]["syncedAt"] for e in entries)


async def test_incremental_sync_status_flip_and_new_latest(
    registries: Any, make_config: Any, serve: Any
) -> None:
    registry = await registries(
        [
            server_entry("io.github.a/tool", "1.0.0", published="2026-01-01T00:00:00Z"),
            server_entry("io.github.b/other", "1.0.0", published="2026-01-02T00:00:00Z"),
        ]
    )
    config = make_config(upstreams=[upstream("official", registry.url)])
    client = await serve(config)
    latest = await client.get("/v0.1/servers/io.github.a%2Ftool/versions/latest")
    assert (await latest.json())["server"]["version"] == "1.0.0"

    # Upstream: a new latest version of a/tool (the old one's updatedAt does not move, as on
    # the official registry), and b/other is deleted.
    registry.put(server_entry("io.github.a/tool", "1.1.0", published="2026-02-01T00:00:00Z"))
    registry.put(
        server_entry(
            "io.github.b/other",
            "1.0.0",
            published="2026-01-02T00:00:00Z",
            updated="2026-02-02T00:00:00Z",
            status="deleted",
        )
    )
    refresher = client.app[REFRESHER]
    await refresher.sync_all()
    assert registry.requests[-1].get("updated_since"), "second sync should be incremental"

    versions = await (await client.get("/v0.1/servers/io.github.a%2Ftool/versions")).json()
    flags = {s["server"]["version"]: s["_meta"][OFFICIAL]["isLatest"] for s in versions["servers"]}
    assert flags == {"1.1.0": True, "1.0.0": False}
    listed = keys(await all_entries(client))
    assert ("io.github.b/other", "1.0.0") not in listed
    with_deleted = await all_entries(client, include_deleted="true")
    deleted = [e for e in with_deleted if e["server"]["name"] == "io.github.b/other"]
    assert deleted[0]["_meta"][OFFICIAL]["status"] == "deleted"


async def test_pages_with_plus_in_versions_are_walked_completely(
    registries: Any, make_config: Any, serve: Any
) -> None:
    items = [server_entry("io.github.p/plus", f"1.0.{i}+build.{i}") for i in range(7)]
    registry = await registries(items)
    config = make_config(upstreams=[upstream("official", registry.url, page_size=2)])
    client = await serve(config)
    assert len(await all_entries(client)) == 7
    cursors = [r["cursor"] for r in registry.requests if "cursor" in r]
    assert cursors
    assert all("+" in cursor for cursor in cursors)  # arrived decoded as sent: `+` survived


async def test_restart_with_every_upstream_down_serves_last_good_catalog(
    registries: Any, make_config: Any, serve: Any
) -> None:
    one = await registries([server_entry("io.github.one/a", "1.0.0")])
    two = await registries([server_entry("io.github.two/b", "2.0.0")])
    config = make_config(upstreams=[upstream("one", one.url), upstream("two", two.url)])
    first = await serve(config)
    before = await (await first.get("/v0.1/servers")).read()
    await first.close()

    for registry in (one, two):
        registry.fail_next(100)
    second = await serve(config, sync=False)  # ready at once from state_dir
    after = await (await second.get("/v0.1/servers")).read()
    assert after == before  # byte for byte
    await second.app[REFRESHER].sync_all()  # both upstreams fail
    response = await second.get("/v0.1/servers")
    still = orjson.loads(await response.read())["servers"]
    # The same entries, now marked stale in the gateway's _meta; the client is told by header.
    assert [without_gateway_meta(e) for e in still] == [
        without_gateway_meta(e) for e in orjson.loads(before)["servers"]
    ]
    assert all(e["_meta"][NS]["stale"] is True for e in still)
    assert all(e["_meta"][NS]["staleSince"] for e in still)
    assert response.headers["X-Gateway-Stale-Upstreams"] == "one, two"
    assert all(feed.last_error for feed in second.app[REFRESHER].feeds)


async def test_retries_5xx_and_429_with_retry_after_and_sends_headers(
    registries: Any, make_config: Any, serve: Any, monkeypatch: Any
) -> None:
    registry = await registries([server_entry("io.github.r/retry", "1.0.0")], api="v0")
    registry.fail_next(1, Failure(status=502))
    registry.fail_next(1, Failure(status=429, headers={"Retry-After": "0"}))
    monkeypatch.setenv("TEST_UPSTREAM_TOKEN", "s3cret-token")
    config = make_config(
        upstreams=[
            upstream(
                "official",
                registry.url,
                api="v0",
                headers={"Authorization": "Bearer ${TEST_UPSTREAM_TOKEN}"},
                retry={"attempts": 3, "initial_wait": "0s", "max_wait": "1s"},
            )
        ]
    )
    client = await serve(config)
    assert keys(await all_entries(client)) == [("io.github.r/retry", "1.0.0")]
    assert len(registry.requests) == 3
    assert all(h["Authorization"] == "Bearer s3cret-token" for h in registry.headers_seen)


async def test_a_bad_answer_keeps_the_last_good_data(
    registries: Any, make_config: Any, serve: Any
) -> None:
    registry = await registries([server_entry("io.github.k/keep", "1.0.0")])
    config = make_config(upstreams=[upstream("official", registry.url, full_sync="0s")])
    client = await serve(config)
    before = await (await client.get("/v0.1/servers")).read()
    registry.fail_next(1, Failure(status=200, body=b"<html>maintenance</html>"))
    await client.app[REFRESHER].sync_all()
    state = client.app[REFRESHER].feeds[0]
    assert state.last_error is not None
    assert "not JSON" in state.last_error
    after = orjson.loads(await (await client.get("/v0.1/servers")).read())["servers"]
    assert [without_gateway_meta(e) for e in after] == [
        without_gateway_meta(e) for e in orjson.loads(before)["servers"]
    ]
    assert after[0]["_meta"][NS]["stale"] is True
    # The next good sync clears the mark, and the bytes are what they were.
    await client.app[REFRESHER].sync_all()
    recovered = await (await client.get("/v0.1/servers")).read()
    assert orjson.loads(recovered)["servers"][0]["_meta"][NS]["stale"] is False


async def test_a_gateway_federating_a_gateway_serves_the_same_catalog(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry = await registries(
        [
            server_entry("io.github.a/one", "1.0.0", published="2026-01-01T00:00:00Z"),
            server_entry("io.github.a/one", "1.1.0", published="2026-02-01T00:00:00Z"),
            server_entry("io.github.b/two", "0.1.0", status="deprecated"),
            server_entry("io.github.c/three", "3.0.0", status="deleted"),
            server_entry("io.github.d/four", "v2.0.0", repository={}, extra_field={"kept": 1}),
        ]
    )
    front = await serve(make_config("front", upstreams=[upstream("official", registry.url)]))
    back_url = str(front.make_url("")).rstrip("/")
    back = await serve(
        make_config(
            "back",
            meta_namespace="com.example.second-gateway",
            upstreams=[upstream("front", back_url, page_size=2)],
        )
    )
    deleted = await all_entries(back, include_deleted="true")
    assert ("io.github.c/three", "3.0.0") in keys(deleted)
    for params in ({}, {"include_deleted": "true"}, {"version": "latest"}):
        first = await all_entries(front, **params)
        second = await all_entries(back, **params)
        assert [e["server"] for e in second] == [e["server"] for e in first]
        assert [e["_meta"][OFFICIAL] for e in second] == [e["_meta"][OFFICIAL] for e in first]
        assert all(e["_meta"]["com.example.second-gateway"]["upstream"] == "front" for e in second)
