"""The command line: check, and serve (the offline demo, a bad config)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from gateway.cli import main
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_check_good_config(capsys: object) -> None:
    assert main(["check", "--config", str(REPO / "federation_config" / "demo")]) == 0


def test_check_bad_config_lists_every_mistake(tmp_path: Path, capsys: object) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "listen: nowhere\nupstreams:\n  - {name: a, url: 'https://x.example', bogus: 1}\n",
        encoding="utf-8",
    )
    assert main(["check", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "gateway.yaml: listen: 'nowhere' is not HOST:PORT" in err
    assert "gateway.yaml: upstreams[0].bogus: unknown key" in err


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("upstreams: []\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "gateway.yaml: upstreams:" in result.stderr


def test_serve_runs_the_offline_demo_from_any_directory(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 20
        while "registry URL" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
        assert line.strip().endswith(f"http://127.0.0.1:{port}")
        while "Browse the catalog" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
        assert f"at http://127.0.0.1:{port}/ " in line
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v0.1/servers?limit=100") as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        servers = orjson.loads(body)["servers"]
        assert len(servers) >= 30
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert b"<title>MCP servers</title>" in page.read()
        assert (tmp_path / "cache" / "mcp-discovery-gateway" / "demo-state" / "demo.json").exists()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    events = [orjson.loads(line) for line in err.splitlines() if line.strip()]  # JSON lines
    synced = [e for e in events if e["event"] == "upstream_synced"]
    assert synced[0]["upstream"] == "demo"
    assert synced[0]["entries"] >= 30
    assert "duration_ms" in synced[0]
    requests = [e for e in events if e["event"] == "request"]
    assert requests
    assert all(len(e["request_id"]) >= 8 for e in requests)
    assert events[-1]["event"] == "shutting_down"
