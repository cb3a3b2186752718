from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

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
