"""Go and Maven end to end, as any ecosystem: rewritten to the mirror, checked against a
mirror speaking the real protocol (GOPROXY `@v/list`, maven2 `maven-metadata.xml`), the
install command fetching from the mirror, and `explain` saying where each version installs from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.app import REFRESHER
from gateway.install import package_command
from gateway.loader import load_config
from tests.conftest import file_upstream
from tests.fakes import FakeMirror, server_entry

NS = "com.example.mcp-gateway"
AUTH = {"Authorization": "Bearer tok3n"}


def _package(kind: str, identifier: str, version: str, base: str) -> dict[str, Any]:
    return {"registryType": kind, "identifier": identifier, "version": version,
            "registryBaseUrl": base, "transport": {"type": "stdio"}}  # fmt: skip


async def test_go_and_maven_are_mirrored_checked_and_installed_from_the_mirror(
    mirror: FakeMirror, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    go_module, maven_id = "github.com/Acme/weather-mcp", "com.acme:weather-mcp"
    items = [
        server_entry("io.github.acme/go-weather", version, published=published,
                     packages=[_package("go", go_module, f"v{version}", "https://proxy.golang.org")])
        for version, published in (("1.2.0", "2026-01-01T00:00:00Z"), ("1.3.0", "2026-02-01T00:00:00Z"))
    ] + [
        server_entry("io.github.acme/jvm-weather", "1.2.0",
                     packages=[_package("maven", maven_id, "1.2.0", "https://repo1.maven.org/maven2")])
    ]  # fmt: skip
    config = make_config(
        admin_token="tok3n", access_log=False,
        upstreams=[file_upstream(tmp_path / "d", "up", items)],
    )  # fmt: skip
    mirrors = {"go": f"{mirror.url}/go", "maven": f"{mirror.url}/maven/",
               "verify": {"mode": "enforce"}}  # fmt: skip
    (config.directory / "mirrors.yaml").write_text(yaml.safe_dump(mirrors), encoding="utf-8")
    client = await serve(load_config(config.directory))
    refresher = client.app[REFRESHER]
    await refresher.verify()
    await refresher.rebuild_now()

    listing = await (await client.get("/v0.1/servers?include_deleted=true")).json()
    served = {(e["server"]["name"], e["server"]["version"]): e for e in listing["servers"]}
    # v1.3.0 never reached the mirror: enforce hides it, and latest moves to what installs.
    assert sorted(served) == [("io.github.acme/go-weather", "1.2.0"),
                              ("io.github.acme/jvm-weather", "1.2.0")]  # fmt: skip
    go_entry = served[("io.github.acme/go-weather", "1.2.0")]
    (go_package,) = go_entry["server"]["packages"]
    assert go_package["registryBaseUrl"] == f"{mirror.url}/go"
    assert go_package["identifier"] == go_module  # never touched
    assert go_entry["_meta"][NS]["packages"][0]["verification"] == "available"
    assert mirror.hits["/go/github.com/!acme/weather-mcp/@v/list"] == 1  # one list, every version
    assert package_command(go_package) == (
        f"GOPROXY={mirror.url}/go go run github.com/Acme/weather-mcp@v1.2.0"
    )
    jvm = served[("io.github.acme/jvm-weather", "1.2.0")]
    (maven_package,) = jvm["server"]["packages"]
    assert maven_package["registryBaseUrl"] == f"{mirror.url}/maven/"
    assert jvm["_meta"][NS]["packages"][0]["verification"] == "available"
    assert package_command(maven_package) == (
        f"jbang --repos mirror={mirror.url}/maven/ com.acme:weather-mcp:1.2.0"
    )

    report = await (
        await client.get("/admin/explain?name=io.github.acme/go-weather", headers=AUTH)
    ).json()
    views = {v["version"]: v["views"]["default"] for v in report["versions"]}
    assert views["1.2.0"]["served"] is True
    assert views["1.3.0"]["served"] is False
    assert "missing" in str(views["1.3.0"])

    page = await (await client.get("/server/io.github.acme%2Fgo-weather")).text()
    assert f"GOPROXY={mirror.url}/go go run github.com/Acme/weather-mcp@v1.2.0" in page
