"""What VS Code does against a custom registry, step by step, on the bundled demo catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.cli import DEMO_CONFIG
from gateway.loader import load_config

OFFICIAL = "io.modelcontextprotocol.registry/official"


@pytest.fixture
async def base(tmp_path: Path, serve: Any) -> Any:
    config = load_config(DEMO_CONFIG)
    gateway = config.gateway.model_copy(update={"state_dir": tmp_path, "access_log": False})
    client = await serve(config.model_copy(update={"gateway": gateway}))
    return str(client.make_url("")).rstrip("/")


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    # encoded=True: the URL goes out byte for byte, as VS Code builds it by concatenation.
    async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
        return response.status, await response.json(content_type=None)


async def test_vscode_walk(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, probe = await get(session, f"{base}/v0.1/servers?limit=1")
        assert status == 200
        assert probe["metadata"]["count"] == 1

        # Latest versions, 50 per page, the cursor pasted into the URL as is.
        names: list[str] = []
        url = f"{base}/v0.1/servers?version=latest&limit=50"
        while True:
            status, page = await get(session, url)
            assert status == 200
            assert all(entry["_meta"][OFFICIAL]["isLatest"] for entry in page["servers"])
            names.extend(entry["server"]["name"] for entry in page["servers"])
            cursor = page["metadata"].get("nextCursor")
            if not cursor:
                break
            url = f"{base}/v0.1/servers?version=latest&limit=50&cursor={cursor}"
        assert len(names) == len(set(names)) >= 15  # one latest per server
        assert names == sorted(names)

        # A search; page 2 drops `search` (as VS Code does) and stays filtered.
        status, first = await get(session, f"{base}/v0.1/servers?search=LEGACY&limit=2")
        assert status == 200
        assert first["metadata"]["count"] == 2
        cursor = first["metadata"]["nextCursor"]
        status, second = await get(session, f"{base}/v0.1/servers?limit=2&cursor={cursor}")
        assert status == 200
        found = [e["server"]["name"] for e in first["servers"] + second["servers"]]
        assert found
        assert all("legacy" in name.lower() for name in found)
        assert len(found) == 3

        status, latest = await get(
            session, f"{base}/v0.1/servers/io.github.acme-weather%2Fweather/versions/latest"
        )
        assert status == 200
        assert latest["server"]["name"] == "io.github.acme-weather/weather"
        assert latest["server"]["version"] == "1.3.0-beta.1"

        async with session.options(
            f"{base}/v0.1/servers",
            headers={"Origin": "vscode-file://vscode-app", "Access-Control-Request-Method": "GET"},
        ) as preflight:
            assert preflight.status == 204
            assert preflight.headers["Access-Control-Allow-Origin"] == "*"

        status, missing = await get(session, f"{base}/v0.1/servers/io.github.no%2Fsuch/versions")
        assert status == 404
        assert missing["detail"] == "Server not found"
