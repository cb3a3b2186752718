"""Readiness and restarts: a replica is ready only with every required upstream's data; a
restart goes on syncing where it stopped; the sync position never runs ahead of the fetch;
file upstreams never block; an operator's sync is a probe; reloads apply breaker settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import REFRESHER
from gateway.detached import detached
from gateway.errors import StillBlocked
from gateway.loader import load_config
from gateway.state import load
from tests.conftest import file_upstream, free_port, serving_process, write_config
from tests.fakes import FakeRegistry, server_entry

AUTH = {"Authorization": "Bearer adm1n"}
OK = [server_entry("com.example/ok", "1.0.0")]
REMOTE = [
    server_entry("io.github.acme/tool", "1.0.0"),
    server_entry("io.github.acme/other", "1.0.0"),
]


async def served(client: Any) -> list[str]:
    body = await (await client.get("/v0.1/servers?limit=100")).json()
    return sorted(f"{e['server']['name']}@{e['server']['version']}" for e in body["servers"])


def remote(registry: FakeRegistry, **settings: Any) -> dict[str, Any]:
    return {"name": "remote", "url": registry.url, "refresh": "1h", **settings}


# -- readiness -----------------------------------------------------------------------------------


async def test_no_catalog_until_every_upstream_has_data(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    """A new replica whose upstream is down serves nothing and says why, rather than an
    empty (or partial) catalog that a rollout would put in service."""
    down: FakeRegistry = await registries(REMOTE)
    down.fail_next(1000)
    config = make_config(
        admin_token="adm1n",
        upstreams=[file_upstream(tmp_path / "d", "local", OK), remote(down)],
    )
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert ready.headers["Retry-After"]
    problem = await ready.json()
    assert problem["awaiting"] == ["remote"]
    assert "remote (" in problem["detail"]
    assert "503" in problem["detail"]
    listing = await client.get("/v0.1/servers")
    assert listing.status == 503
    assert "remote" in (await listing.json())["detail"]
    status = await (await client.get("/admin/status", headers=AUTH)).json()
    assert (status["ready"], status["awaiting"]) == (False, ["remote"])

    down.failures.clear()  # the upstream is back
    await client.app[REFRESHER].sync_all()
    assert (await client.get("/readyz")).status == 200
    assert await served(client) == [
        "com.example/ok@1.0.0", "io.github.acme/other@1.0.0", "io.github.acme/tool@1.0.0"
    ]  # fmt: skip


async def test_an_optional_upstream_is_not_waited_for(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    down: FakeRegistry = await registries(REMOTE)
    down.fail_next(1000)
    config = make_config(
        upstreams=[file_upstream(tmp_path / "d", "local", OK), remote(down, optional=True)]
    )
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["awaiting"] == []
    assert await served(client) == ["com.example/ok@1.0.0"]
    down.failures.clear()
    await client.app[REFRESHER].sync_all()
    assert len(await served(client)) == 3  # it joins once it answers


async def test_state_counts_as_data(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    """A restart during an upstream outage serves the last good data at once."""
    registry: FakeRegistry = await registries(REMOTE)
    config = make_config(upstreams=[remote(registry)])
    first = await serve(config, sync=False)
    await first.app[REFRESHER].sync_all()
    await first.close()
    registry.fail_next(1000)
    again = await serve(config, sync=False)
    assert (await again.get("/readyz")).status == 200
    assert len(await served(again)) == 2


async def test_a_serving_replica_stays_ready_when_a_reload_adds_an_upstream(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    """Every replica reloads at once: leaving rotation then would leave none in service."""
    down: FakeRegistry = await registries(REMOTE)
    down.fail_next(1000)
    local = file_upstream(tmp_path / "d", "local", OK)
    client = await serve(make_config(upstreams=[local]))
    refresher = client.app[REFRESHER]
    await refresher.apply(make_config(upstreams=[local, remote(down)]))
    await refresher.sync_all()
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["awaiting"] == ["remote"]
    assert await served(client) == ["com.example/ok@1.0.0"]


# -- restarts and the sync position --------------------------------------------------------------


async def synced_and_restarted(
    serve: Any, config: Any, registry: FakeRegistry, *added: Any, pause: float = 0.0
) -> Any:
    """A gateway that made its first (full) sync and stopped; then, after `pause` and with
    `added` entries new upstream, a new one on its state that has made one sync."""
    first = await serve(config, sync=False)
    await first.app[REFRESHER].sync_all()
    assert [r.get("updated_since") for r in registry.requests] == [None]
    await first.close()
    await asyncio.sleep(pause)
    registry.requests.clear()
    for entry in added:
        registry.put(entry)
    again = await serve(config, sync=False)
    await again.app[REFRESHER].sync_all()
    return again


async def test_a_restart_goes_on_incrementally(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    """One `updated_since` poll after a restart when no full walk is due, not a full walk."""
    registry: FakeRegistry = await registries(REMOTE)
    config = make_config(upstreams=[remote(registry, full_sync="6h")])
    new = server_entry("io.github.acme/new", "1.0.0", published="2026-02-01T00:00:00Z")
    again = await synced_and_restarted(serve, config, registry, new)
    assert len(registry.requests) == 1
    assert registry.requests[0]["updated_since"] == "2025-12-31T23:59:59.000000Z"  # 1 s overlap
    assert "io.github.acme/new@1.0.0" in await served(again)


async def test_a_restart_walks_in_full_when_a_full_walk_is_due(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry: FakeRegistry = await registries(REMOTE)
    config = make_config(upstreams=[remote(registry, full_sync="50ms")])
    await synced_and_restarted(serve, config, registry, pause=0.06)
    assert [r.get("updated_since") for r in registry.requests] == [None]


async def test_a_future_dated_entry_does_not_move_the_position_past_the_fetch(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    """An entry dated 2099 must not make later polls ask for changes since 2099 (and miss
    a deprecation), nor make `syncedAt` say 2099."""
    future = server_entry("io.github.acme/future", "1.0.0", updated="2099-01-01T00:00:00Z")
    registry: FakeRegistry = await registries([*REMOTE, future])
    config = make_config(admin_token="adm1n", upstreams=[remote(registry)])
    client = await serve(config, sync=False)
    before = datetime.now(UTC)
    await client.app[REFRESHER].sync_all()
    after = datetime.now(UTC)
    feed = client.app[REFRESHER].feed("remote")
    assert feed.synced_up_to is not None
    assert before <= feed.synced_up_to <= after
    body = await (await client.get("/v0.1/servers?limit=100")).json()
    stamps = {e["_meta"]["com.example.mcp-gateway"]["syncedAt"] for e in body["servers"]}
    assert len(stamps) == 1
    assert stamps.pop() < "2027"

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    registry.put(server_entry("io.github.acme/tool", "1.0.0", updated=now, status="deprecated"))
    registry.requests.clear()
    await client.app[REFRESHER].sync_all()
    assert registry.requests[0]["updated_since"] < "2027"
    body = await (await client.get("/v0.1/servers?limit=100")).json()
    status = {
        e["server"]["name"]: e["_meta"]["io.modelcontextprotocol.registry/official"]["status"]
        for e in body["servers"]
    }
    assert status["io.github.acme/tool"] == "deprecated"
    saved = load(config.gateway.state_dir, "remote")
    assert saved is not None
    assert saved.position is not None
    assert saved.position <= datetime.now(UTC)
    assert saved.position == feed.synced_up_to


# -- file upstreams ------------------------------------------------------------------------------


async def test_a_fifo_file_upstream_fails_at_once_and_is_awaited(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """Only regular files are read: a FIFO (or a device) fails the sync at once, with the
    reason, and readiness names the upstream."""
    fifo = tmp_path / "catalog.json"
    os.mkfifo(fifo)
    config = make_config(upstreams=[{"name": "pipe", "file": str(fifo), "timeout": "1s"}])
    client = await serve(config, sync=False)
    started = time.monotonic()
    await asyncio.wait_for(client.app[REFRESHER].sync_all(), 5)
    assert time.monotonic() - started < 1
    assert "not a regular file" in (client.app[REFRESHER].feed("pipe").last_error or "")
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "not a regular file" in (await ready.json())["detail"]


async def test_a_file_larger_than_a_page_is_refused(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    upstream = file_upstream(
        tmp_path / "d", "big", [server_entry(f"com.e/s{i}", "1.0.0") for i in range(40)]
    )
    config = make_config(upstreams=[{**upstream, "max_page_bytes": 2048}])
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    assert "larger than 2048 bytes" in (client.app[REFRESHER].feed("big").last_error or "")


async def test_a_blocked_call_fails_after_its_deadline() -> None:
    read, write = os.pipe()  # nobody writes: a read blocks, as on a hung mount
    try:
        started = time.monotonic()
        with pytest.raises(StillBlocked, match=r"no answer within 0\.2 s"):
            await detached(lambda: os.read(read, 1), 0.2, "blocked-read")
        assert time.monotonic() - started < 1
        assert await detached(lambda: 42, 1, "quick") == 42
        with pytest.raises(ZeroDivisionError):
            await detached(lambda: 1 // 0, 1, "failing")
    finally:
        os.close(write)  # the blocked read returns (b""), and its thread ends
        os.close(read)


_BLOCKED_AT_EXIT = """
import asyncio, os
from gateway.detached import detached
from gateway.errors import StillBlocked
read, write = os.pipe()
async def main():
    try:
        await detached(lambda: os.read(read, 1), 0.1, "blocked-read")
    except StillBlocked:
        print("gave up", flush=True)
asyncio.run(main())
"""


def test_shutdown_never_waits_on_a_blocked_call() -> None:
    """`asyncio.run` joins its executor's threads at exit: a read stuck there would hold the
    process forever. A detached call's thread is not waited for."""
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED_AT_EXIT], capture_output=True, text=True, timeout=10
    )
    assert (done.returncode, done.stdout) == (0, "gave up\n"), done.stderr


def test_sigterm_ends_a_gateway_whose_file_upstream_is_a_fifo(tmp_path: Path) -> None:
    """A FIFO upstream neither blocks the gateway from answering nor SIGTERM from ending it."""
    fifo = tmp_path / "catalog.json"
    os.mkfifo(fifo)
    port = free_port()
    config = write_config(
        tmp_path / "c",
        {"listen": f"127.0.0.1:{port}", "upstreams": [{"name": "pipe", "file": str(fifo)}]},
    )
    import urllib.error
    import urllib.request

    with serving_process(config.directory) as process:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
                detail = orjson.loads(exc.read())["detail"]
                if "not a regular file" in detail:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert status == 503
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
        assert time.monotonic() - started < 10
    assert process.returncode == 0


# -- the breaker ---------------------------------------------------------------------------------


async def test_an_operators_sync_is_a_probe_while_the_breaker_is_open(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry: FakeRegistry = await registries(REMOTE)
    config = make_config(
        admin_token="adm1n",
        upstreams=[
            file_upstream(tmp_path / "d", "local", OK),
            remote(registry, optional=True, breaker={"failures": 1, "open_for": "1h"}),
        ],
    )
    client = await serve(config, sync=False)
    registry.fail_next(1000)
    await client.app[REFRESHER].sync_all()
    assert client.app[REFRESHER].feed("remote").breaker.state == "open"
    asked = len(registry.requests)
    await client.app[REFRESHER].sync_all()
    assert len(registry.requests) == asked  # the breaker holds background syncs back
    registry.failures.clear()
    answer = await client.post("/admin/upstreams/remote/sync", headers=AUTH)
    assert answer.status == 200, await answer.text()
    assert len(registry.requests) > asked
    assert client.app[REFRESHER].feed("remote").breaker.state == "closed"
    assert len(await served(client)) == 3


async def test_a_reload_applies_new_breaker_settings(
    tmp_path: Path, registries: Any, serve: Any
) -> None:
    registry: FakeRegistry = await registries(REMOTE)
    local = file_upstream(tmp_path / "d", "local", OK)

    def config(open_for: str) -> Any:
        upstream = remote(registry, optional=True, breaker={"failures": 1, "open_for": open_for})
        return write_config(tmp_path / "c", {"upstreams": [local, upstream]})

    client = await serve(config("1h"), sync=False)
    refresher = client.app[REFRESHER]
    registry.fail_next(1000)
    await refresher.sync_all()
    assert refresher.feed("remote").breaker.state == "open"
    registry.failures.clear()
    await refresher.apply(config("1ms"))
    await asyncio.sleep(0.01)
    asked = len(registry.requests)
    await refresher.sync_all()
    assert len(registry.requests) > asked  # the new, shorter wait is over: a probe
    assert refresher.feed("remote").breaker.state == "closed"
    assert load_config(tmp_path / "c").gateway.upstreams[1].breaker.open_for == 0.001
