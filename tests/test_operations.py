"""Running it: hot reload, graceful drain, hostile requests, and secrets that never leak."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.app import REFRESHER, create_app
from gateway.loader import load_config
from gateway.serve import Serving
from tests.conftest import examples, file_upstream, free_port, write_config
from tests.fakes import Failure, server_entry

ITEMS = [server_entry("io.github.a/one", "1.0.0"), server_entry("io.github.b/two", "2.0.0")]


async def names(client: Any, base: str = "") -> list[str]:
    body = await (await client.get(f"{base}/v0.1/servers")).json()
    return [entry["server"]["name"] for entry in body["servers"]]


async def test_a_changed_config_file_is_picked_up(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    config = make_config(
        upstreams=[file_upstream(tmp_path / "d", "u", ITEMS)],
        watch_config="100ms",
        access_log=False,
    )
    client = await serve(config)
    assert await names(client) == ["io.github.a/one", "io.github.b/two"]
    (config.directory / "policy.yaml").write_text("rules: [{deny: {name: io.github.a/*}}]\n")
    for _ in range(60):
        await asyncio.sleep(0.05)
        if await names(client) == ["io.github.b/two"]:
            break
    assert await names(client) == ["io.github.b/two"]
    (config.directory / "policy.yaml").write_text("rules: [{deny: {nmae: x}}]\n")  # broken
    for _ in range(60):
        await asyncio.sleep(0.05)
        if client.app[REFRESHER].reload_error:
            break
    assert "unknown key" in (client.app[REFRESHER].reload_error or "")
    assert await names(client) == ["io.github.b/two"]  # the last good config serves on


async def test_in_flight_requests_finish_during_shutdown(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c",
        {
            "upstreams": [file_upstream(tmp_path / "d", "u", ITEMS)],
            "admin_token": "t",
            "access_log": False,
        },
    )

    def slow_load() -> Any:
        time.sleep(0.5)  # an in-flight /admin/reload takes this long
        return load_config(config.directory)

    serving = await Serving.start(create_app(config, load=slow_load), "127.0.0.1", 0, grace=5)
    port = serving.port
    await serving.app[REFRESHER].wait_ready()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/admin/reload"
        request = asyncio.create_task(session.post(url, headers={"Authorization": "Bearer t"}))
        await asyncio.sleep(0.15)
        await serving.stop()  # what SIGTERM does: stop accepting, drain, then clean up
        response = await request
        assert response.status == 200  # the in-flight request finished
        response.release()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")  # no longer accepting


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return orjson.loads(response.read())


def test_sighup_reloads_and_sigterm_drains(tmp_path: Path) -> None:
    port = free_port()
    upstream = file_upstream(tmp_path / "d", "u", ITEMS)
    config = write_config(tmp_path / "c", {"upstreams": [upstream], "listen": f"127.0.0.1:{port}"})
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config.directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v0.1/servers"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if len(_get(base)["servers"]) == 2:
                    break
            except OSError:
                time.sleep(0.1)
        (config.directory / "policy.yaml").write_text("rules: [{deny: {name: io.github.b/*}}]\n")
        process.send_signal(signal.SIGHUP)
        while time.monotonic() < deadline and len(_get(base)["servers"]) != 1:
            time.sleep(0.05)
        assert [e["server"]["name"] for e in _get(base)["servers"]] == ["io.github.a/one"]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    events = [orjson.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "config_reloaded" in events
    assert events[-2:] == ["shutting_down", "catalog_kept"]  # its logs written to the end
    assert (config.gateway.state_dir / "u.json").is_file()


# Hostile requests -----------------------------------------------------------------------------


@pytest.fixture
async def base(tmp_path: Path, make_config: Any, serve: Any) -> str:
    config = make_config(upstreams=[file_upstream(tmp_path / "d", "u", ITEMS)], access_log=False)
    client = await serve(config)
    return str(client.make_url("")).rstrip("/")


async def raw_get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/v0.1/servers?search=%00", 400),
        ("/v0.1/servers/io.github.a%00%2Fone/versions", 400),
        ("/v0.1/servers?search=" + "a" * 9000, 414),
        ("/v0.1/servers/" + "a" * 3000 + "/versions", 414),
        ("/v0.1/servers?limit=99999999999999999999999", 422),
        ("/v0.1/servers?limit=-1", 422),
        ("/v0.1/servers?cursor=" + "A" * 200, 400),
        ("/v0.1/servers?cursor=%FF%FE", 400),
        ("/v0.1/servers/%FF%FE%2Fx/versions", 404),
        ("/v0.1/servers/io.github.a%2Fone/versions/%C0%AF", 404),
        ("/v0.1/servers?updated_since=%E2%80%AE2026-01-01T00:00:00Z", 400),
        ("/views/..%2F..%2Fetc/v0.1/servers", 404),
        ("/v0.1/servers?search=%25%32%46", 200),
    ],
)
async def test_hostile_requests_get_a_4xx_problem(base: str, target: str, status: int) -> None:
    async with aiohttp.ClientSession() as session:
        got, content_type, body = await raw_get(session, base + target)
    assert got == status
    if status >= 400:
        assert content_type == "application/problem+json", target
        assert orjson.loads(body)["status"] == status


query_values = st.text(st.characters(codec="utf-8"), max_size=40)
params = st.dictionaries(
    st.sampled_from(
        ["limit", "cursor", "search", "version", "updated_since", "include_deleted", "x"]
    ),
    query_values,
    max_size=4,
)
paths = st.sampled_from(
    ["/v0.1/servers", "/v0/servers", "/servers", "/views/x/v0.1/servers",
     "/v0.1/servers/{}/versions", "/v0.1/servers/{}/versions/{}"]
)  # fmt: skip


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(paths, st.lists(query_values, min_size=2, max_size=2), params)
async def test_fuzzed_queries_never_cause_a_5xx(
    base: str, path: str, segments: list[str], query: dict[str, str]
) -> None:
    from urllib.parse import quote, urlencode

    target = path.format(*(quote(s, safe="") for s in segments)) + "?" + urlencode(query)
    async with aiohttp.ClientSession() as session:
        status, content_type, _ = await raw_get(session, base + target)
    assert status < 500
    if status >= 400:
        assert content_type == "application/problem+json", target


# Secrets ----------------------------------------------------------------------------------------


async def test_secrets_never_appear_in_logs_admin_metrics_or_data(
    tmp_path: Path, registries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "UPSTREAM_TOKEN": "upstream-s3cret-1",
        "ADMIN_TOKEN": "admin-s3cret-2",
        "MIRROR_TOKEN": "mirror-s3cret-3",
        "URL_PASSWORD": "url-s3cret-4",
        "FILE_SECRET": "file-s3cret-5",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(secrets["FILE_SECRET"])
    registry = await registries(ITEMS)
    host = registry.url.removeprefix("http://")
    config = write_config(
        tmp_path / "c",
        {
            "admin_token": "${ADMIN_TOKEN}",
            "upstreams": [
                {
                    "name": "official",
                    "url": f"http://user:${{URL_PASSWORD}}@{host}",
                    "headers": {
                        "X-Api-Key": "${UPSTREAM_TOKEN}",
                        "X-Other": "${file:" + str(secret_file) + "}",
                    },
                }
            ],
        },
    )
    (config.directory / "mirrors.yaml").write_text(
        "npm: 'http://127.0.0.1:9/npm/'\n"
        "verify:\n  mode: annotate\n  credentials:\n"
        "    - {prefix: 'http://127.0.0.1:9/', headers: {Authorization: 'Bearer ${MIRROR_TOKEN}'}}\n"
    )
    logs = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(logs),
        cache_logger_on_first_use=False,
    )
    try:
        app = create_app(load_config(config.directory))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        refresher = app[REFRESHER]
        await refresher.wait_ready()
        assert registry.headers_seen[-1]["X-Api-Key"] == secrets["UPSTREAM_TOKEN"]  # used
        assert registry.headers_seen[-1]["Authorization"].startswith("Basic ")
        await refresher.verify()  # a mirror that is down: errors logged
        registry.fail_next(10, Failure(status=500))
        await refresher.sync_all()  # an upstream failing: errors logged
        seen = [logs.getvalue()]
        auth = {"Authorization": f"Bearer {secrets['ADMIN_TOKEN']}"}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for path in ("/admin/status", "/admin/explain?name=io.github.a/one", "/metrics",
                         "/v0.1/servers?include_deleted=true", "/admin/nope", "/v0.1/nope"):  # fmt: skip
                async with session.get(path, headers=auth) as response:
                    seen.append(await response.text())
                    seen.append(str(response.headers))
            async with session.post("/admin/reload", headers=auth) as response:
                seen.append(await response.text())
            seen.append(repr(refresher.config))
        await runner.cleanup()
        seen.append(logs.getvalue())
    finally:
        structlog.reset_defaults()
    everything = "\n".join(seen)
    assert "upstream_sync_failed" in everything  # the failures were logged...
    for name, value in secrets.items():
        where = everything.find(value)
        assert where < 0, f"{name} leaked: ...{everything[max(0, where - 300) : where + 50]}"
