"""Accounts for server pages and /admin/explain: policies compiled once per config (not per
account), bounded, and never shared with a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway import accounts
from gateway.app import REFRESHER
from tests.conftest import file_upstream
from tests.fakes import server_entry


async def serving_one(tmp_path: Path, make_config: Any, serve: Any) -> Any:
    """A gateway serving one server, `com.example/a`."""
    entries = [server_entry("com.example/a", "1.0.0")]
    return await serve(make_config(upstreams=[file_upstream(tmp_path / "d", "local", entries)]))


async def test_accounts_compile_the_policies_once_per_config(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    client = await serving_one(tmp_path, make_config, serve)
    refresher = client.app[REFRESHER]
    first = accounts.explain_server(refresher, "com.example/a", None)
    compiled = accounts._compiled
    assert compiled is not None
    accounts.explain_server(refresher, "com.example/a", None)
    assert accounts._compiled is compiled  # the same policies, not compiled again
    assert compiled[1] is not refresher.builder.policies  # never the build's own
    page = await client.get("/server/com.example/a")
    assert page.status == 200
    assert accounts._compiled is compiled
    assert [v.version for v in first.versions] == ["1.0.0"]


async def test_names_asked_about_cannot_grow_the_policies_for_good(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    refresher = (await serving_one(tmp_path, make_config, serve)).app[REFRESHER]
    accounts.explain_server(refresher, "com.example/a", None)
    compiled = accounts._compiled
    for index in range(accounts.RECOMPILE_EVERY):
        accounts.explain_server(refresher, f"com.example/nothing-{index}", None)
    assert accounts._compiled is not compiled  # compiled afresh: what they remembered is gone
