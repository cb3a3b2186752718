"""The status the refresher publishes: one frozen copy that /admin/status and /metrics read."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import REFRESHER
from gateway.status import GatewayStatus
from tests.conftest import file_upstream
from tests.fakes import FakeRegistry, server_entry

AUTH = {"Authorization": "Bearer adm1n"}


async def test_a_published_status_is_a_copy_that_later_syncs_leave_alone(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry: FakeRegistry = await registries([server_entry("io.github.acme/a", "1.0.0")])
    config = make_config(
        admin_token="adm1n",
        upstreams=[
            file_upstream(tmp_path / "d", "local", [server_entry("com.example/ok", "1.0.0")]),
            {"name": "remote", "url": registry.url, "refresh": "1h"},
        ],
    )
    client = await serve(config)
    refresher = client.app[REFRESHER]
    before = refresher.status()
    assert isinstance(before, GatewayStatus)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.ready = False  # type: ignore[misc]
    registry.fail_next(1000)
    await refresher.sync_all()  # fails: the remote upstream is stale from now on
    after = refresher.status()
    remote_before = next(u for u in before.upstreams if u.name == "remote")
    remote_after = next(u for u in after.upstreams if u.name == "remote")
    assert (remote_before.stale, remote_before.failures_total) == (False, 0)
    assert (remote_after.stale, remote_after.failures_total) == (True, 1)

    # /admin/status and /metrics both say what the published status says, once the search
    # index (which follows each build in a worker thread) has caught up: until then the two
    # readings may straddle it
    for _ in range(250):
        if refresher.status().search.indexed:
            break
        await asyncio.sleep(0.02)
    now = datetime.now(UTC)
    served = await (await client.get("/admin/status", headers=AUTH)).json()
    published = refresher.status().to_json(now)
    for upstream in (*served["upstreams"], *published["upstreams"]):
        upstream.pop("ageSeconds")
    assert served == published
    metrics = await (await client.get("/metrics")).text()
    assert 'mcp_gateway_upstream_stale{upstream="remote"} 1.0' in metrics
    assert 'mcp_gateway_upstream_sync_failures_total{upstream="remote"} 1.0' in metrics
    for view in after.views:
        assert f'mcp_gateway_view_entries{{view="{view.name}"}} {float(view.entries)}' in metrics


async def test_the_search_index_is_frozen_with_the_catalog(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """Once the index follows a build, the cyclic collector no longer walks it (a full
    collection walked its tens of thousands of containers at every pass)."""
    import asyncio
    import gc

    entries = [server_entry(f"com.example/s{i}", "1.0.0") for i in range(50)]
    client = await serve(make_config(upstreams=[file_upstream(tmp_path / "d", "u", entries)]))
    refresher = client.app[REFRESHER]
    for _ in range(200):
        if refresher.status().search.indexed:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the index loop freezes right after the update
    servers = refresher.builder.search._servers
    assert servers
    assert not any(held is servers for held in gc.get_objects())
