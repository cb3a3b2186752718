"""Fault injection: what was served before is still served, and status and metrics say why."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import REFRESHER
from tests.conftest import file_upstream
from tests.fakes import Failure, FakeRegistry, server_entry

NS = "com.example.mcp-gateway"
AUTH = {"Authorization": "Bearer adm1n"}
FLAKY = [server_entry(f"io.github.flaky/s{i:02d}", "1.0.0") for i in range(20)]
STABLE = [server_entry("com.example/stable", "1.0.0"), server_entry("com.example/other", "2.0.0")]


def by_key(body: bytes) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["server"]["name"], e["server"]["version"]): e for e in orjson.loads(body)["servers"]}


def upstream_part(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without the gateway's own _meta (which says `stale` while syncs fail)."""
    return {
        "server": entry["server"],
        "_meta": {k: v for k, v in entry["_meta"].items() if k != NS},
    }


async def metric(client: Any, name: str, **labels: str) -> float | None:
    text = (await (await client.get("/metrics")).read()).decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


async def upstream_status(client: Any, name: str) -> dict[str, Any]:
    status = await (await client.get("/admin/status", headers=AUTH)).json()
    return next(u for u in status["upstreams"] if u["name"] == name)


@pytest.fixture
async def gateway(tmp_path: Path, registries: Any, make_config: Any, serve: Any) -> Any:
    flaky: FakeRegistry = await registries(FLAKY)
    stable = file_upstream(tmp_path / "data", "stable", STABLE)
    config = make_config(
        admin_token="adm1n",
        access_log=False,
        upstreams=[
            stable,
            {
                "name": "flaky",
                "url": flaky.url,
                "refresh": "1h",
                "full_sync": "0s",  # every sync is a full walk
                "timeout": "300ms",
                "page_size": 4,
                "retry": {"attempts": 2, "initial_wait": "0s", "max_wait": "2s"},
                "breaker": {"failures": 100},
            },
        ],
    )
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    before = await (await client.get("/v0.1/servers?limit=100")).read()
    return client, flaky, before


FAULTS = {
    "burst of 5xx": (lambda f: f.fail_next(5, Failure(status=502)), "HTTP 502"),
    "timeout": (lambda f: setattr(f, "delay", 1.0), "timed out"),
    "body stalls halfway": (lambda f: f.fail_next(2, Failure(stall=True)), "timed out"),
    "truncated JSON": (lambda f: f.fail_next(1, Failure(200, b'{"servers":[{"serv')), "not JSON"),
    "non-JSON 200": (lambda f: f.fail_next(1, Failure(200, b"<html>oops</html>")), "not JSON"),
    "cursor loop": (
        lambda f: f.fail_next(
            5, Failure(200, orjson.dumps({"servers": [FLAKY[0]], "metadata": {"nextCursor": "x"}}))
        ),
        "cursor loop",
    ),
    "vanishes mid-walk": (
        lambda f: setattr(f, "vanish_after", len(f.requests) + 1),
        "Disconnected",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failing_upstream_keeps_its_last_good_data(gateway: Any, fault: str) -> None:
    client, flaky, before = gateway
    inject, reason = FAULTS[fault]
    # The upstream also changed: a half-applied walk would show here.
    for i in range(20):
        flaky.put(server_entry(f"io.github.flaky/s{i:02d}", "1.0.1"))
    inject(flaky)
    await client.app[REFRESHER].sync_all()
    response = await client.get("/v0.1/servers?limit=100")
    old, new = by_key(before), by_key(await response.read())
    assert new.keys() == old.keys()  # nothing lost, nothing half-synced
    for key, entry in new.items():
        if key[0].startswith("com.example/"):
            assert orjson.dumps(entry) == orjson.dumps(old[key])  # untouched upstream: same bytes
        else:
            assert upstream_part(entry) == upstream_part(old[key])
            assert entry["_meta"][NS]["stale"] is True
    assert response.headers["X-Gateway-Stale-Upstreams"] == "flaky"
    status = await upstream_status(client, "flaky")
    assert reason in status["lastError"]
    assert status["stale"] is True
    assert status["entries"] == 20
    assert await metric(client, "mcp_gateway_upstream_sync_failures_total", upstream="flaky") == 1
    assert await metric(client, "mcp_gateway_upstream_stale", upstream="flaky") == 1
    assert (await upstream_status(client, "stable"))["stale"] is False


async def test_429_retry_after_is_honoured(gateway: Any) -> None:
    client, flaky, _ = gateway
    flaky.put(server_entry("io.github.flaky/new", "1.0.0"))
    flaky.fail_next(1, Failure(status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    await client.app[REFRESHER].sync_all()
    assert time.monotonic() - started >= 0.9  # initial_wait is 0: only Retry-After waited
    assert ("io.github.flaky/new", "1.0.0") in by_key(
        await (await client.get("/v0.1/servers?limit=100")).read()
    )
    assert (await upstream_status(client, "flaky"))["failuresTotal"] == 0


async def test_one_malformed_entry_is_skipped_and_its_page_kept(gateway: Any) -> None:
    client, flaky, _ = gateway
    flaky.put(server_entry("io.github.flaky/new", "1.0.0"))
    flaky.raw_items = [{"server": {"name": "no slash here", "version": "1"}}]
    await client.app[REFRESHER].sync_all()
    served = by_key(await (await client.get("/v0.1/servers?limit=100")).read())
    assert ("io.github.flaky/new", "1.0.0") in served
    assert len(served) == 2 + 21
    status = await upstream_status(client, "flaky")
    assert (status["skippedLastSync"], status["lastError"]) == (1, None)
    assert await metric(client, "mcp_gateway_upstream_skipped_entries_total", upstream="flaky") == 1


async def test_a_mass_drop_is_held_until_it_repeats(gateway: Any) -> None:
    client, flaky, before = gateway
    flaky.entries = dict(list(flaky.entries.items())[:1])  # 95 % gone
    await client.app[REFRESHER].sync_all()
    assert await (await client.get("/v0.1/servers?limit=100")).read() == before
    status = await upstream_status(client, "flaky")
    assert status["heldDrop"]["before"] == 20
    assert status["heldDrop"]["after"] == 1
    assert await metric(client, "mcp_gateway_upstream_mass_drops_held_total", upstream="flaky") == 1
    await client.app[REFRESHER].sync_all()  # the same answer again: it is real
    assert len(by_key(await (await client.get("/v0.1/servers?limit=100")).read())) == 2 + 1
    assert (await upstream_status(client, "flaky"))["heldDrop"] is None


async def test_an_operator_confirms_a_held_drop(gateway: Any) -> None:
    client, flaky, _ = gateway
    flaky.entries = {}
    flaky.put(server_entry("io.github.flaky/last", "1.0.0"))
    await client.app[REFRESHER].sync_all()
    url = "/admin/upstreams/flaky/confirm-drop"
    assert (await client.post(url)).status == 401
    confirmed = await client.post(url, headers=AUTH)
    assert confirmed.status == 200, await confirmed.text()
    served = by_key(await (await client.get("/v0.1/servers?limit=100")).read())
    assert [k for k in served if k[0].startswith("io.github.flaky/")] == [
        ("io.github.flaky/last", "1.0.0")
    ]
    again = await client.post(url, headers=AUTH)
    assert again.status == 400  # nothing held any more


async def test_breaker_opens_and_stops_asking(gateway: Any, make_config: Any) -> None:
    client, flaky, _ = gateway
    feed = client.app[REFRESHER].feed("flaky")
    feed.breaker.settings = feed.breaker.settings.model_copy(
        update={"failures": 2, "open_for": 3600}
    )
    flaky.fail_next(100)
    for _ in range(2):
        await client.app[REFRESHER].sync_all()
    asked = len(flaky.requests)
    await client.app[REFRESHER].sync_all()
    assert len(flaky.requests) == asked  # open: no request at all
    status = await upstream_status(client, "flaky")
    assert status["breaker"]["state"] == "open"
    assert (
        await metric(client, "mcp_gateway_upstream_breaker_state", upstream="flaky", state="open")
        == 1
    )


async def test_beyond_max_stale_hide_or_flag(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry = await registries([server_entry("io.github.gone/a", "1.0.0")])
    stable = file_upstream(tmp_path / "data", "stable", STABLE)
    config = make_config(
        upstreams=[
            stable,
            {
                "name": "gone",
                "url": registry.url,
                "max_stale": "0s",
                "on_stale": "hide",
                "refresh": "1h",
            },
        ],
    )
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    assert ("io.github.gone/a", "1.0.0") in by_key(await (await client.get("/v0.1/servers")).read())
    registry.fail_next(100)
    await client.app[REFRESHER].sync_all()
    served = by_key(await (await client.get("/v0.1/servers")).read())
    assert ("io.github.gone/a", "1.0.0") not in served  # hidden once beyond max_stale
    assert len(served) == 2


async def test_corrupted_state_file_is_set_aside_and_resynced(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any
) -> None:
    registry = await registries(FLAKY[:3])
    config = make_config(upstreams=[{"name": "flaky", "url": registry.url, "refresh": "1h"}])
    first = await serve(config)
    before = await (await first.get("/v0.1/servers")).read()
    await first.close()
    state = config.gateway.state_dir / "flaky.json"
    state.write_bytes(state.read_bytes()[:100])  # truncated, as by a full disk
    second = await serve(config)  # no crash: the upstream is synced afresh
    after = await (await second.get("/v0.1/servers")).read()
    assert [upstream_part(e) for e in by_key(after).values()] == [
        upstream_part(e) for e in by_key(before).values()
    ]
    assert list(config.gateway.state_dir.glob("flaky.json.corrupt-*"))


async def test_status_and_metrics_say_what_a_refused_reload_was(gateway: Any) -> None:
    client, _, before = gateway
    directory = client.app[REFRESHER].config.directory
    (directory / "policy.yaml").write_text("default: maybe\n", encoding="utf-8")
    assert (await client.post("/admin/reload", headers=AUTH)).status == 400
    status = await (await client.get("/admin/status", headers=AUTH)).json()
    assert "policy.yaml: default" in status["config"]["reloadError"]
    assert await metric(client, "mcp_gateway_config_reload_failed") == 1
    assert await (await client.get("/v0.1/servers?limit=100")).read() == before


@pytest.mark.timeout(20)
async def test_a_yaml_alias_bomb_is_refused_by_a_hot_reload(gateway: Any) -> None:
    from tests.test_loader import LAUGHS

    client, _, before = gateway
    directory = client.app[REFRESHER].config.directory
    (directory / "policy.yaml").write_text(LAUGHS, encoding="utf-8")
    refused = await client.post("/admin/reload", headers=AUTH)
    assert refused.status == 400
    assert "anchors and aliases (& and *) are not allowed" in (await refused.json())["detail"]
    assert await (await client.get("/v0.1/servers?limit=100")).read() == before


async def test_request_metrics_count_routes_and_statuses(gateway: Any) -> None:
    client, _, _ = gateway
    for _ in range(3):
        await client.get("/v0.1/servers?limit=5")
    await client.get("/v0.1/servers/io.github.no%2Fsuch/versions")
    assert await metric(client, "mcp_gateway_requests_total", route="list", status="200") >= 3  # type: ignore[operator]
    assert await metric(client, "mcp_gateway_requests_total", route="versions", status="404") == 1
    count = await metric(client, "mcp_gateway_request_duration_seconds_count", route="list")
    assert count is not None
    assert count >= 3
    inf = await metric(
        client, "mcp_gateway_request_duration_seconds_bucket", le="+Inf", route="list"
    )
    assert inf == count


async def test_an_operator_syncs_an_upstream_now(gateway: Any) -> None:
    client, flaky, _ = gateway
    flaky.put(server_entry("io.github.flaky/fresh", "1.0.0"))
    assert (await client.post("/admin/upstreams/flaky/sync")).status == 401
    response = await client.post("/admin/upstreams/flaky/sync", headers=AUTH)
    assert (await response.json()) == {"upstream": "flaky", "changed": True, "error": None}
    served = by_key(await (await client.get("/v0.1/servers?limit=100")).read())
    assert ("io.github.flaky/fresh", "1.0.0") in served
    missing = await client.post("/admin/upstreams/nobody/sync", headers=AUTH)
    assert missing.status == 404


# -- hostile upstreams cannot stall or exhaust the gateway -------------------------------------


async def _loop_lag_during(work: Any) -> list[float]:
    """The event loop's lateness (seconds) every 2 ms while `work` runs."""
    lags: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            due = time.perf_counter() + 0.002
            await asyncio.sleep(0.002)
            lags.append(time.perf_counter() - due)

    sampler = asyncio.create_task(sample())
    try:
        await work
    finally:
        done.set()
        await sampler
    return lags


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


HOSTILE_PAGES = {
    "a million tiny invalid items": b'{"servers":[' + b",".join([b"{}"] * 1_000_000) + b"]}",
    "a million values besides the items": (
        b'{"metadata":{"junk":[' + b",".join([b"[]"] * 1_000_000) + b']},"servers":[]}'
    ),
    "a 2 MB item of empty lists": b'{"servers":[[' + b",".join([b"[]"] * 700_000) + b"]]}",
}


@pytest.mark.parametrize("shape", HOSTILE_PAGES)
async def test_a_hostile_page_never_stalls_the_event_loop(gateway: Any, shape: str) -> None:
    client, flaky, before = gateway
    flaky.fail_next(1, Failure(200, HOSTILE_PAGES[shape]))
    refresher = client.app[REFRESHER]
    lags = await _loop_lag_during(refresher.sync_all())
    assert lags  # the loop was sampled throughout the sync
    assert p99(lags) <= 0.050, f"p99 {p99(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    served = await (await client.get("/v0.1/servers?limit=100")).read()
    assert by_key(served).keys() == by_key(before).keys()  # the last good data is kept
    status = await upstream_status(client, "flaky")
    if shape == "a million tiny invalid items":
        assert "the page has 5 items, more than the 4 asked for" in status["lastError"]
    elif shape == "a million values besides the items":
        assert "over 65536 bytes besides its servers" in status["lastError"]
    else:  # one entry over max_entry_bytes: skipped, the page kept
        assert status["skippedLastSync"] == 1


async def test_a_page_of_mostly_invalid_items_fails_the_sync(
    registries: Any, make_config: Any, serve: Any, tmp_path: Path
) -> None:
    good = [server_entry(f"io.github.ok/s{i:02d}", "1.0.0") for i in range(40)]
    registry: FakeRegistry = await registries(good)
    config = make_config(
        admin_token="adm1n",
        upstreams=[{"name": "flaky", "url": registry.url, "refresh": "1h", "full_sync": "0s",
                    "page_size": 100, "breaker": {"failures": 100}}],
    )  # fmt: skip
    client = await serve(config)
    refresher = client.app[REFRESHER]
    # 9 bad items among 49: skipped one by one, the rest kept.
    registry.raw_items = [{"server": {"name": f"bad {i}", "version": "1"}} for i in range(9)]
    await refresher.sync_all()
    status = await upstream_status(client, "flaky")
    assert (status["lastError"], status["skippedLastSync"]) == (None, 9)
    # 60 bad items among 100: the page is not what a registry serves; the last good data stays.
    registry.raw_items = [{"server": {"name": f"bad {i}", "version": "1"}} for i in range(60)]
    await refresher.sync_all()
    status = await upstream_status(client, "flaky")
    assert "60 of the 100 items of page 1 are invalid" in status["lastError"]
    assert "server.name is missing or not a namespace/name (60)" in status["lastError"]
    body = await (await client.get("/v0.1/servers?limit=100")).json()
    assert len(body["servers"]) == 40


async def test_skipped_entries_are_logged_once_per_sync(
    tmp_path: Path, make_config: Any, serve: Any, capsys: Any
) -> None:
    import structlog

    items: list[Any] = [server_entry(f"io.github.ok/s{i:02d}", "1.0.0") for i in range(20)]
    items += [{"server": {"name": f"bad {i}", "version": "1"}} for i in range(7)]
    items += [{"server": {"name": f"io.github.x/v{i}"}} for i in range(2)]
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    try:
        client = await serve(make_config(upstreams=[file_upstream(tmp_path / "d", "u", items)]))
        events = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
    skipped = [e for e in events if e.get("event", "").startswith("upstream_entr")]
    assert skipped == [{
        "upstream": "u", "skipped": 9, "event": "upstream_entries_skipped",
        "reasons": {"server.name is missing or not a namespace/name": 7,
                    "server.version is missing or not a string": 2},
        "first": ["server.name is missing or not a namespace/name"] * 5,
    }]  # fmt: skip
    assert client.app[REFRESHER].feeds[0].skipped == 9
