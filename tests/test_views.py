"""Views served side by side over HTTP, /admin/explain, and reloading a policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import REFRESHER
from tests.conftest import file_upstream
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys

OFFICIAL = "io.modelcontextprotocol.registry/official"
NS = "com.example.mcp-gateway"


def write_yaml(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")


@pytest.fixture
async def setup(tmp_path: Path, make_config: Any, serve: Any) -> Any:
    internal = file_upstream(
        tmp_path / "data",
        "internal",
        [server_entry("com.example/search", "1.0.0", status="deprecated")],
    )
    public = [
        server_entry("com.example/search", "9.0.0"),  # public entry of an internal name
        *[server_entry(f"io.github.pub/s{i:02d}", "1.0.0") for i in range(12)],
        server_entry("io.github.w/weather", "1.0.0", published="2026-01-01T00:00:00Z"),
        server_entry("io.github.w/weather", "1.1.0", published="2026-02-01T00:00:00Z"),
        server_entry("io.github.w/weather", "2.0.0", published="2026-03-01T00:00:00Z"),
    ]
    official = file_upstream(tmp_path / "data", "official", public)
    config = make_config(upstreams=[internal, official], admin_token="tok3n", access_log=False)
    directory = config.directory
    write_yaml(directory / "policy.yaml", {"default": "allow"})
    write_yaml(
        directory / "views" / "payments.yaml",
        {
            "description": "Payments",
            "default": "allow",
            "rules": [
                {"deny": {"status": "deprecated"}},
                {"deny": {"name": "io.github.w/weather", "version": ">=2"}},
                {"deny": {"name": "io.github.pub/s0*"}},
            ],
        },
    )
    write_yaml(
        directory / "views" / "research.yaml",
        {"default": "deny", "rules": [{"allow": {"name": "io.github.pub/*"}}]},
    )
    from gateway.loader import load_config

    client = await serve(load_config(directory))
    return client, directory


async def test_views_served_side_by_side(setup: Any) -> None:
    client, _ = setup
    root = keys(await all_entries(client))
    payments = keys(await all_entries(client, "/views/payments"))
    research = keys(await all_entries(client, "/views/research"))
    assert ("com.example/search", "1.0.0") in root
    assert len(root) == 1 + 12 + 3
    # The internal entry is denied in payments; the public 9.0.0 never takes its place.
    assert not [k for k in payments if k[0] == "com.example/search"]
    assert [k for k in payments if k[0].startswith("io.github.pub/")] == [
        ("io.github.pub/s10", "1.0.0"),
        ("io.github.pub/s11", "1.0.0"),
    ]
    assert research == [(f"io.github.pub/s{i:02d}", "1.0.0") for i in range(12)]


async def test_paging_a_view_with_small_pages(setup: Any) -> None:
    client, _ = setup
    seen: list[tuple[str, str]] = []
    query = {"limit": "5"}
    while True:
        body = await (await client.get("/views/research/v0.1/servers", params=query)).json()
        seen.extend(keys(body["servers"]))
        if "nextCursor" not in body["metadata"]:
            break
        query = {"limit": "5", "cursor": body["metadata"]["nextCursor"]}
    assert len(seen) == 12
    assert len(set(seen)) == 12


async def test_latest_moves_to_the_newest_served_version(setup: Any) -> None:
    client, _ = setup
    root = await client.get("/v0.1/servers/io.github.w%2Fweather/versions/latest")
    assert (await root.json())["server"]["version"] == "2.0.0"
    payments = await client.get(
        "/views/payments/v0.1/servers/io.github.w%2Fweather/versions/latest"
    )
    body = await payments.json()
    assert body["server"]["version"] == "1.1.0"
    assert body["_meta"][OFFICIAL]["isLatest"] is True
    listing = await all_entries(client, "/views/payments", version="latest", search="weather")
    assert keys(listing) == [("io.github.w/weather", "1.1.0")]
    denied = await client.get("/views/payments/v0.1/servers/io.github.w%2Fweather/versions/2.0.0")
    assert denied.status == 404


async def test_meta_names_the_admitting_rules(setup: Any) -> None:
    client, _ = setup
    entry = await (
        await client.get("/views/research/v0.1/servers/io.github.pub%2Fs01/versions/1.0.0")
    ).json()
    assert entry["_meta"][NS]["admittedBy"] == [
        "policy.yaml default",
        "views/research.yaml rules[0]",
    ]
    root = await (await client.get("/v0.1/servers/io.github.pub%2Fs01/versions/1.0.0")).json()
    assert root["_meta"][NS]["admittedBy"] == ["policy.yaml default"]


async def test_admin_explain(setup: Any) -> None:
    client, _ = setup
    url = "/admin/explain?name=com.example/search"
    assert (await client.get(url)).status == 401
    wrong = await client.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    response = await client.get(url, headers={"Authorization": "Bearer tok3n"})
    assert response.status == 200
    report = await response.json()
    assert report["owner"] == "internal"
    by_version = {item["version"]: item for item in report["versions"]}
    assert by_version["9.0.0"]["upstream"] == "official"
    assert by_version["9.0.0"]["shadowedBy"] == "internal"
    internal = by_version["1.0.0"]["views"]
    assert internal["default"]["served"] is True
    assert internal["payments"] == {
        "served": False,
        "reason": "denied",
        "rules": ["policy.yaml default", "views/payments.yaml rules[0]"],
        "isLatest": False,
    }
    assert internal["research"]["rules"] == ["policy.yaml default", "views/research.yaml default"]


async def test_admin_is_off_without_a_token(tmp_path: Path, make_config: Any, serve: Any) -> None:
    upstream = file_upstream(tmp_path / "d", "u", [server_entry("a.b/c", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    response = await client.get("/admin/explain?name=a.b/c", headers={"Authorization": "Bearer x"})
    assert response.status == 404


async def test_reload_applies_a_good_policy_and_refuses_a_bad_one(setup: Any) -> None:
    client, directory = setup
    auth = {"Authorization": "Bearer tok3n"}
    write_yaml(
        directory / "policy.yaml",
        {"default": "allow", "rules": [{"deny": {"name": "io.github.pub/*"}}]},
    )
    reloaded = await client.post("/admin/reload", headers=auth)
    assert reloaded.status == 200, await reloaded.text()
    assert len(await all_entries(client)) == 1 + 3
    before = await (await client.get("/v0.1/servers")).read()

    (directory / "policy.yaml").write_text("rules:\n  - allow: {nmae: x}\n", encoding="utf-8")
    refused = await client.post("/admin/reload", headers=auth)
    assert refused.status == 400
    assert "policy.yaml: rules[0].allow.nmae: unknown key" in (await refused.json())["detail"]
    assert await (await client.get("/v0.1/servers")).read() == before  # old policy serves on
    assert client.app[REFRESHER].reload_error is not None


async def test_a_cooled_down_version_appears_by_itself(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    soon = datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=0.6)
    fresh = server_entry("io.github.n/new", "1.0.0", published=soon.isoformat())
    upstream = file_upstream(tmp_path / "d", "u", [fresh, server_entry("io.github.o/old", "1.0.0")])
    config = make_config(upstreams=[upstream])
    write_yaml(config.directory / "policy.yaml", {"min_age": "1h"})
    from gateway.loader import load_config

    client = await serve(load_config(config.directory))
    assert keys(await all_entries(client)) == [("io.github.o/old", "1.0.0")]
    for _ in range(50):  # no sync, no reload: the cooldown timer alone brings it in
        await asyncio.sleep(0.1)
        if len(await all_entries(client)) == 2:
            break
    assert keys(await all_entries(client)) == [
        ("io.github.n/new", "1.0.0"),
        ("io.github.o/old", "1.0.0"),
    ]
