from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from hypothesis import settings

from gateway.config import FederationConfig
from gateway.loader import load_config
from tests.fakes import FakeMirror, FakeRegistry

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """Each test finds logging as configured before it and leaves it so: a command run
    in-process (`cli.main`) configures structlog and the access log for the whole process,
    and a test asserting on log lines after it would read them from the wrong place."""
    import structlog

    from gateway import logs

    saved, access = structlog.get_config(), logs.log_request
    yield
    structlog.configure(**saved)
    logs.log_request = access


# What the helper process (`gateway.isolated`) imports on its first job: signature, provenance
# and advisory verification, and the libraries they load only there.
HELPER_MODULES = [
    "gateway.registries", "gateway.provenance", "gateway.oci_verify", "gateway.advisories",
    "gateway.osv", "sigstore.verify", "sigstore.models", "pypi_attestations", "univers.versions",
    "cvss",
]  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def helper_starts_warm() -> None:
    """Every gateway app stops its helper process when it stops, so each test that verifies a
    signal starts one, and the helper imports sigstore afresh (about 0.2 s each time). A
    gateway runs one app for its life and pays that once; the suite pays it once too: helpers
    fork from a forkserver that has the libraries loaded. The product's own preload is then
    not applied (the forkserver is already running), which changes only what is imported
    before a job rather than during it."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(HELPER_MODULES)
    forkserver.ensure_running()


# Hypothesis: a run that leaves the slow suites out (`-m "not slow"`, the quick suite) tries a
# quarter of each property's examples; a run with them (CI's) tries every one. Either can be
# asked for by name: `--hypothesis-profile full` or `quick`.
settings.register_profile("full", max_examples=100)  # Hypothesis' own default
settings.register_profile("quick", max_examples=25)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile") is None:
        quick = "not slow" in config.getoption("markexpr")
        settings.load_profile("quick" if quick else "full")


def examples(full: int) -> int:
    """How many examples a property whose full run tries `full` tries in this run."""
    scale = settings().max_examples / 100
    return min(full, max(10, round(full * scale)))


SHARED = REPO.parent / "shared"
REF = SHARED / "mcp-registry-ref"


def write_config(directory: Path, gateway: dict[str, Any]) -> FederationConfig:
    """Write a gateway.yaml (retries instant, so failure tests stay fast) and load it."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"state_dir": str(directory / "state"), **gateway}
    for upstream in document.get("upstreams", []):
        upstream.setdefault("retry", {"attempts": 3, "initial_wait": "0s", "max_wait": "0s"})
    (directory / "gateway.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_config(directory)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., FederationConfig]:
    def make(name: str = "config", **gateway: Any) -> FederationConfig:
        return write_config(tmp_path / name, gateway)

    return make


@pytest.fixture
async def registries() -> AsyncIterator[Callable[..., Any]]:
    """Start fake registries on loopback; all are stopped at the end of the test."""
    started: list[FakeRegistry] = []

    async def start(entries: list[dict[str, Any]] | None = None, api: str = "v0.1") -> FakeRegistry:
        registry = await FakeRegistry(entries, api=api).start()
        started.append(registry)
        return registry

    yield start
    for registry in started:
        await registry.stop()


class GatewayServer(RawTestServer):
    """A test server running the gateway as `serve` does (see `gateway.serve.Serving`): the
    app's lifecycle around aiohttp's low-level server and the gateway's one handler."""

    def __init__(self, app: web.Application) -> None:
        from gateway.app import handler_for

        super().__init__(handler_for(app))
        self.app = app
        self._app_started = False

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        from gateway.app import HANDLER_ARGS
        from gateway.serve import start_app

        if not self._app_started:
            await start_app(self.app)
            self._app_started = True
        await super().start_server(loop=loop, **{**HANDLER_ARGS, **kwargs})

    async def close(self) -> None:
        await super().close()
        if self._app_started:
            self._app_started = False
            await self.app.shutdown()
            await self.app.cleanup()


@pytest.fixture
async def serve(aiohttp_client: Any) -> Callable[..., Any]:
    """Run a gateway app in-process on loopback, as `serve` does, and wait until its catalog
    is loaded; the client's `app` is the gateway's app."""
    from gateway.app import REFRESHER, create_app

    async def start(config: FederationConfig, *, sync: bool = True) -> Any:
        app = create_app(config, sync=sync)
        client = await aiohttp_client(GatewayServer(app))
        if sync:
            await app[REFRESHER].wait_ready()
        return client

    return start


@contextlib.contextmanager
def serving_process(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """`mcp-discovery-gateway serve` on a config directory, as a process (its output read
    as text); killed at the end if it is still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def file_upstream(directory: Path, name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Write an API-shaped list file and return its upstream config."""
    import orjson

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_bytes(orjson.dumps({"servers": items, "metadata": {"count": len(items)}}))
    return {"name": name, "file": str(path), "refresh": "1h"}


@contextlib.asynccontextmanager
async def loopback(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp app on 127.0.0.1 (a free port) while in the block: its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def mirror() -> AsyncIterator[FakeMirror]:
    fake = FakeMirror()
    async with loopback(fake.app()) as url:
        fake.url = url
        yield fake


CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM") or shutil.which("chromium") or ""


@contextlib.asynccontextmanager
async def held_feed() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An advisory feed (its URL) that answers once released: a gateway waits for it before
    its first build, so whatever it serves before comes from elsewhere (a kept catalog), or
    it is starting. Released when the block ends, so that no request is left waiting."""
    release = asyncio.Event()

    async def feed(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"[]", content_type="application/json")

    app = web.Application()
    app.router.add_get("/osv.json", feed)
    async with loopback(app) as url:
        try:
            yield f"{url}/osv.json", release
        finally:
            release.set()  # a test that failed midway: no request left waiting


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium through Playwright (no browser download): skipped where it is not
    installed, a failure on CI (`.ci/run` installs it)."""
    if not CHROMIUM or not Path(CHROMIUM).exists():
        reason = "Chromium is not installed: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


SCREENSHOTS = REPO / "docs" / "screenshots"  # what the browser tests save (the README links)
PHONE = {"width": 390, "height": 844}


async def open_page(browser: Any, *, phone: bool = False) -> tuple[Any, Any, list[str]]:
    """A page in a fresh context (its own sessionStorage), recording every problem."""
    context = await browser.new_context(
        viewport=PHONE if phone else {"width": 1280, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )
    problems: list[str] = []

    async def elsewhere(route: Any) -> None:  # nothing may leave the machine: a problem
        problems.append(f"a request to a third party: {route.request.url}")
        await route.abort()

    await context.route(lambda url: not url.startswith("http://127.0.0.1"), elsewhere)
    page = await context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    async def refuse(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", refuse)
    return context, page, problems


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched
