"""A gateway starting (restoring its state, reading its feeds, building the first catalog)
already listens: every request is answered, 503 with Retry-After until it is ready, never a
refused connection."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import REFRESHER, create_app
from gateway.loader import load_config
from gateway.serve import Serving
from tests.conftest import file_upstream, free_port, held_feed, serving_process, write_config
from tests.fakes import server_entry
from tests.trusted import write_yaml


async def test_the_port_answers_503_with_retry_after_until_the_gateway_is_ready(
    tmp_path: Path, make_config: Any
) -> None:
    """The advisory feed's URL answers after a while (a slow mirror of OSV): the gateway
    waits for it before its first catalog, and meanwhile its port says so."""
    async with held_feed() as (feed_url, release):
        upstream = file_upstream(tmp_path / "data", "u", [server_entry("io.github.a/b", "1.0.0")])
        config = make_config(upstreams=[upstream], access_log=False)
        write_yaml(config.directory / "trust.yaml", {"osv": [
            {"name": "osv", "url": feed_url, "ecosystems": ["npm"]}]})  # fmt: skip
        port = free_port()
        app = create_app(load_config(config.directory))
        starting = asyncio.create_task(Serving.start(app, "127.0.0.1", port))
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # listening within moments, while the feed is awaited
                try:
                    async with session.get(base + "/v0.1/servers") as answer:
                        status, retry = answer.status, answer.headers.get("Retry-After")
                        problem = await answer.json(content_type=None)
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            else:
                raise AssertionError("the port never answered while the gateway started")
            assert not starting.done()
            assert status == 503
            assert retry == "1"
            assert problem["status"] == 503
            async with session.get(base + "/readyz") as ready:
                assert ready.status == 503
                assert ready.headers["Retry-After"]
            async with session.get(base + "/healthz") as alive:
                assert alive.status == 200
            release.set()
            serving = await asyncio.wait_for(starting, 30)
            try:
                await asyncio.wait_for(app[REFRESHER].wait_ready(), 30)
                async with session.get(base + "/v0.1/servers") as answer:
                    assert answer.status == 200
                    names = [e["server"]["name"] for e in (await answer.json())["servers"]]
                assert names == ["io.github.a/b"]
            finally:
                await serving.stop()


def test_sigterm_while_starting_ends_the_gateway_at_once(tmp_path: Path) -> None:
    """The port answers while the gateway starts (here its advisory feed never answers, so
    its first build waits): SIGTERM then ends it at once, gracefully, its logs written;
    SIGHUP meanwhile does not end it (a reload waits until it has started)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        feed = f"http://127.0.0.1:{silent.getsockname()[1]}/osv.json"
        upstream = file_upstream(tmp_path / "data", "u", [server_entry("io.github.a/b", "1.0.0")])
        port = free_port()
        config = write_config(tmp_path / "c", {"listen": f"127.0.0.1:{port}",
                                               "upstreams": [upstream]})  # fmt: skip
        write_yaml(config.directory / "trust.yaml", {"osv": [
            {"name": "osv", "url": feed, "ecosystems": ["npm"]}]})  # fmt: skip
        with serving_process(config.directory) as process:
            deadline = time.monotonic() + 20
            status = None
            while time.monotonic() < deadline and status is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    status = 200
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError:
                    time.sleep(0.05)
            assert status == 503  # starting: listening, not ready
            process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            assert process.poll() is None
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=15)
            assert time.monotonic() - started < 10
    assert process.returncode == 0
    assert '"reload_skipped"' in err
    assert '"shutting_down"' in err
