"""The audit log: every admin action, who took it (a token id, never the token) and how it went;
in the log, in `state_dir/audit.jsonl` (shared by the workers) and at `/admin/audit`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from gateway.app import REFRESHER
from gateway.audit import AUDIT_FILE, KEEP, MAX_LINE, Actor, Audit
from tests.conftest import REPO, file_upstream, free_port, write_config
from tests.fakes import server_entry

TOKEN = "audit-admin-token-6f1d2c"
TOKEN_ID = hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MANY = [server_entry(f"io.github.many/s{i:02d}", "1.0.0") for i in range(20)]


def test_a_token_is_named_by_the_first_8_hex_digits_of_its_sha256() -> None:
    actor = Actor.of_token(TOKEN)
    assert actor.token_id == TOKEN_ID
    assert len(TOKEN_ID) == 8
    assert actor.who == f"token {TOKEN_ID}"


@pytest.fixture
def logs() -> Any:
    """structlog's output, as JSON lines, while the test runs."""
    written = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(written),
        cache_logger_on_first_use=False,
    )
    yield written
    structlog.reset_defaults()


def events(logs: io.StringIO, name: str) -> list[dict[str, Any]]:
    found = [orjson.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return [event for event in found if event["event"] == name]


async def test_each_admin_action_is_audited_with_its_outcome_and_never_the_token(
    tmp_path: Path, registries: Any, make_config: Any, serve: Any, logs: io.StringIO
) -> None:
    many = await registries(MANY)
    config = make_config(
        admin_token=TOKEN,
        access_log=False,
        upstreams=[
            file_upstream(tmp_path / "data", "local", [server_entry("com.example/a", "1.0.0")]),
            {"name": "many", "url": many.url, "refresh": "1h", "full_sync": "0s"},
        ],
    )
    client = await serve(config, sync=False)
    await client.app[REFRESHER].sync_all()
    posts = [
        "/admin/upstreams/local/sync",  # ok, unchanged
        "/admin/upstreams/nope/sync",  # refused: no such upstream
        "/admin/upstreams/many/confirm-drop",  # refused: nothing held
    ]
    for path in posts:
        (await client.post(path, headers=AUTH)).release()
    many.entries = dict(list(many.entries.items())[:1])  # 95 % gone: held
    (await client.post("/admin/upstreams/many/sync", headers=AUTH)).release()
    status = await (await client.get("/admin/status", headers=AUTH)).json()
    assert next(u["heldDrop"] for u in status["upstreams"] if u["name"] == "many")["after"] == 1
    confirmed = await client.post("/admin/upstreams/many/confirm-drop", headers=AUTH)
    assert confirmed.status == 200
    assert (await client.post("/admin/reload", headers=AUTH)).status == 200
    (config.directory / "policy.yaml").write_text("default: allw\n", encoding="utf-8")
    assert (await client.post("/admin/reload", headers=AUTH)).status == 400
    assert (await client.post("/admin/reload")).status == 401  # no token: no action, no audit
    (await client.get("/admin/explain?name=com.example/a", headers=AUTH)).release()  # read-only

    assert (await client.post("/admin/audit", headers=AUTH)).status == 405
    assert (await client.get("/admin/audit")).status == 401
    audit_body = await (await client.get("/admin/audit", headers=AUTH)).read()
    audit = orjson.loads(audit_body)["audit"]
    assert [(e["action"], e["target"], e["outcome"]) for e in audit] == [
        ("reload", None, "refused"),
        ("reload", None, "ok"),
        ("confirm-drop", "many", "ok"),
        ("sync", "many", "ok"),
        ("confirm-drop", "many", "refused"),
        ("sync", "nope", "refused"),
        ("sync", "local", "ok"),
    ]  # newest first
    assert {(e["who"], e["tokenId"]) for e in audit} == {(f"token {TOKEN_ID}", TOKEN_ID)}
    details = [e["detail"] for e in audit]
    assert "policy.yaml: default:" in details[0]
    assert details[2] == "applied: 1 entries"
    assert "mass drop is held (20 -> 1 entries)" in details[3]
    assert "no held sync" in details[4]
    assert details[6] == "unchanged: 1 entries"
    assert all(e["at"].endswith("Z") for e in audit)

    logged = events(logs, "audit")
    assert len(logged) == len(audit)
    assert {key for event in logged for key in event} >= {
        "who", "token_id", "action", "target", "at", "outcome", "detail",
    }  # fmt: skip
    assert [event["outcome"] for event in logged[::-1]] == [e["outcome"] for e in audit]
    written = (config.gateway.state_dir / AUDIT_FILE).read_text(encoding="utf-8")
    assert len(written.splitlines()) == len(audit)
    for where, text in (("log", logs.getvalue()), ("file", written), ("answer", audit_body)):
        assert TOKEN not in str(text), f"the token is in the {where}"


async def test_a_refused_config_from_the_file_watch_is_audited(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    config = make_config(
        admin_token=TOKEN,
        access_log=False,
        watch_config="100ms",
        upstreams=[file_upstream(tmp_path / "d", "u", [server_entry("io.github.a/one", "1.0.0")])],
    )
    client = await serve(config)
    (config.directory / "policy.yaml").write_text("rules: [{deny: {nmae: x}}]\n")
    audit: list[dict[str, Any]] = []
    for _ in range(80):
        await asyncio.sleep(0.05)
        audit = (await (await client.get("/admin/audit", headers=AUTH)).json())["audit"]
        if audit:
            break
    assert [(e["who"], e["tokenId"], e["action"], e["outcome"]) for e in audit] == [
        ("file-watch", None, "reload", "refused")
    ]
    assert "unknown key" in audit[0]["detail"]


async def test_an_audit_that_cannot_be_written_is_still_logged_and_the_action_works(
    tmp_path: Path, make_config: Any, serve: Any, logs: io.StringIO
) -> None:
    config = make_config(
        admin_token=TOKEN,
        access_log=False,
        upstreams=[file_upstream(tmp_path / "d", "u", [server_entry("io.github.a/one", "1.0.0")])],
    )
    client = await serve(config, sync=False)
    (config.gateway.state_dir / AUDIT_FILE).mkdir(parents=True)  # not a file: writes fail
    answer = await client.post("/admin/upstreams/u/sync", headers=AUTH)
    assert answer.status == 200
    assert (await answer.json())["changed"] is True
    audit = await client.get("/admin/audit", headers=AUTH)
    assert audit.status == 200
    assert (await audit.json())["audit"] == []
    assert [event["action"] for event in events(logs, "audit")] == ["sync"]
    assert events(logs, "audit_write_failed")


def test_the_file_is_cut_back_to_the_newest_entries(tmp_path: Path) -> None:
    audit = Audit(tmp_path, max_bytes=20_000)
    for number in range(600):
        audit.record(Actor("signal"), "reload", "ok", f"number {number}")
        assert (tmp_path / AUDIT_FILE).stat().st_size <= 20_000 + MAX_LINE
    recent = audit.recent()
    assert len(recent) == KEEP
    assert [entry.detail for entry in recent[:2]] == ["number 599", "number 598"]  # newest first
    assert recent[-1].detail == f"number {600 - KEEP}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [AUDIT_FILE, AUDIT_FILE + ".lock"]


def test_a_corrupt_line_is_skipped(tmp_path: Path) -> None:
    audit = Audit(tmp_path)
    audit.record(Actor("signal"), "reload", "ok", "first")
    with (tmp_path / AUDIT_FILE).open("ab") as file:
        file.write(b"not json\n[1, 2]\n{}\n")
        file.write(
            b'{"at": "yesterday", "who": "x", "action": "a", "outcome": "ok", "detail": ""}\n'
        )
        file.write(b'{"at": "2026-01-01T00:00:00Z", "who": 1, "action": "a", "outcome": "ok"}\n')
        file.write(b'{"at": "2026-01-01T00:00:00Z", "who": "x", "action": "a", "outcome": "won"')
        file.write(b', "detail": ""}\n' + b"x" * (3 * MAX_LINE) + b"\n")
    audit.record(Actor("file-watch"), "reload", "refused", "second")
    assert [(entry.actor.who, entry.detail) for entry in audit.recent()] == [
        ("file-watch", "second"),
        ("signal", "first"),
    ]


def test_reading_a_huge_file_reads_its_tail_only(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    with path.open("wb") as file:  # 40 MB that no audit wrote: one endless line
        for _ in range(40):
            file.write(b"y" * (1 << 20))
    audit = Audit(tmp_path)
    tracemalloc.start()
    try:
        assert audit.recent() == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * KEEP * MAX_LINE  # the tail, not the file


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gateway.audit import Actor, Audit
    directory, who, max_bytes, count = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    audit = Audit(directory, max_bytes=int(max_bytes))
    (directory / f"{who}.ready").touch()
    while not (directory / "go").exists():  # both start writing at once
        time.sleep(0.001)
    for number in range(int(count)):
        audit.record(Actor(who), "sync", "ok", f"{who} {number} " + "x" * 200)
    """
)


def _writers(directory: Path, max_bytes: int, count: int) -> None:
    directory.mkdir(exist_ok=True)
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory), who, str(max_bytes), str(count)],
            cwd=REPO, stdout=subprocess.DEVNULL,
        )
        for who in ("worker-a", "worker-b")
    ]  # fmt: skip
    while not all((directory / f"{who}.ready").exists() for who in ("worker-a", "worker-b")):
        assert all(process.poll() is None for process in started)
        time.sleep(0.01)
    (directory / "go").touch()
    for process in started:
        assert process.wait(timeout=60) == 0


def test_two_processes_appending_to_one_audit_both_show(tmp_path: Path) -> None:
    _writers(tmp_path / "many", 1 << 20, 1000)
    lines = (tmp_path / "many" / AUDIT_FILE).read_bytes().splitlines()
    assert len(lines) == 2000  # whole lines, none lost, none interleaved
    entries = [orjson.loads(line) for line in lines]
    for who in ("worker-a", "worker-b"):
        numbers = [int(e["detail"].split()[1]) for e in entries if e["who"] == who]
        assert numbers == list(range(1000))
    _writers(tmp_path / "few", 1 << 20, 40)
    shown = Audit(tmp_path / "few").recent()
    assert (
        sorted(entry.detail.split()[0] for entry in shown) == ["worker-a"] * 40 + ["worker-b"] * 40
    )


@pytest.mark.slow  # two processes, a few thousand appends each
def test_two_processes_cutting_one_audit_keep_it_whole_and_bounded(tmp_path: Path) -> None:
    _writers(tmp_path, 30_000, 1000)
    lines = (tmp_path / AUDIT_FILE).read_bytes().splitlines()
    assert len(lines) * 300 < 30_000 + MAX_LINE
    assert all(orjson.loads(line)["action"] == "sync" for line in lines)  # none torn
    assert len(Audit(tmp_path).recent()) == KEEP


def _call(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, headers=AUTH, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


def _pids(audit: list[dict[str, Any]], who: str) -> set[int]:
    return {entry["pid"] for entry in audit if entry["who"] == who}


def test_the_workers_share_one_audit_and_each_audits_a_sighup_reload(tmp_path: Path) -> None:
    port = free_port()
    upstream = file_upstream(tmp_path / "d", "u", [server_entry("io.github.a/one", "1.0.0")])
    config = write_config(
        tmp_path / "c",
        {"upstreams": [upstream], "listen": f"127.0.0.1:{port}", "admin_token": TOKEN,
         "watch_config": "0s", "log_format": "json"},
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config.directory),
         "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/admin"
    try:
        deadline = time.monotonic() + 30
        synced: set[int] = set()
        asked = 0
        while time.monotonic() < deadline and asked < 6:  # each on a connection of its own
            try:
                _call(f"{base}/upstreams/u/sync", "POST")
                asked += 1
            except OSError:
                time.sleep(0.1)
        synced = _pids(_call(f"{base}/audit")["audit"], f"token {TOKEN_ID}")
        # Whichever worker was asked, the one that syncs and builds acted (and audited).
        assert len(synced) == 1
        assert process.pid not in synced
        process.send_signal(signal.SIGHUP)  # the parent forwards it to each worker
        reloaded: set[int] = set()
        while time.monotonic() < deadline and len(reloaded) < 2:
            time.sleep(0.05)
            reloaded = _pids(_call(f"{base}/audit")["audit"], "signal")
        assert len(reloaded) == 2
        assert synced < reloaded
        for _ in range(6):  # whichever worker answers shows both reloads
            audit = _call(f"{base}/audit")["audit"]
            assert _pids(audit, "signal") == reloaded
            assert {e["outcome"] for e in audit if e["who"] == "signal"} == {"ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert TOKEN not in err
    assert TOKEN not in (config.gateway.state_dir / AUDIT_FILE).read_text(encoding="utf-8")
    # One worker keeps the catalog for a restart as they stop, not each of them.
    assert sum('"catalog_kept"' in line for line in err.splitlines()) == 1
    assert (config.gateway.state_dir / "snapshot.pack").is_file()


def test_a_detail_of_any_characters_is_kept_whole_lines_and_bounded(tmp_path: Path) -> None:
    audit = Audit(tmp_path)
    hostile = "\x00\x1b[31m\ud800" * 2000  # control characters, a lone surrogate: 8000 of them
    audit.record(Actor("signal"), "reload", "refused", hostile, target="\x01" * 500)
    (line,) = (tmp_path / AUDIT_FILE).read_bytes().splitlines()
    assert len(line) <= MAX_LINE
    (entry,) = audit.recent()
    assert entry.detail.startswith("\x00\x1b[31m?")
    assert len(entry.detail) == 1000
