"""The command line: check; serve (the offline demo, a bad config, an address in use); a
reader that stops early; explain of a name nobody offers."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

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
    names = [e["event"] for e in events]
    assert names[-2:] == ["shutting_down", "catalog_kept"]  # kept as it stops: a fast restart
    assert (tmp_path / "cache" / "mcp-discovery-gateway" / "demo-state" / "snapshot.pack").exists()


DEMO = str(REPO / "federation_config" / "demo")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_an_address_in_use_says_so_in_one_line(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", DEMO,
             "--state-dir", str(tmp_path / "state"), "--listen", f"127.0.0.1:{port}",
             "--workers", workers],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; "
        "choose another with --listen"
    ]
    assert result.stdout == ""  # never announced as serving


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="sizes a pipe the Linux way")
def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)  # far less than the command writes
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "config-schema"], stdout=write, stderr=subprocess.PIPE
    )
    os.close(write)
    try:
        assert os.read(read, 100).startswith(b"{")  # as `| head -c 100` reads, then leaves
    finally:
        os.close(read)
    _, err = process.communicate(timeout=30)
    assert err == b""  # no traceback, no "Exception ignored" at exit
    assert process.returncode == 141  # as a command killed by SIGPIPE (128 + 13)


def test_explain_of_a_name_no_upstream_offers_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    assert main(["sync", "--config", DEMO, "--state-dir", state]) == 0
    args = ["--config", DEMO, "--state-dir", state]
    capsys.readouterr()
    assert main(["explain", "io.github.nobody/nothing", *args]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "error: no upstream offers io.github.nobody/nothing\n")
    # --json keeps the report's shape, and says "not found" by the exit status too.
    assert main(["explain", "io.github.nobody/nothing", *args, "--json"]) == 1
    out, err = capsys.readouterr()
    report = orjson.loads(out)
    assert (report["owner"], report["versions"]) == (None, [])
    assert err == "error: no upstream offers io.github.nobody/nothing\n"
    github = "io.github.github/github-mcp-server"
    assert main(["explain", github, *args, "--version", "9.9.9"]) == 1
    assert capsys.readouterr().err == f"error: no upstream offers {github} at version 9.9.9\n"
    assert main(["explain", github, *args, "--json"]) == 0  # found: as before
    assert orjson.loads(capsys.readouterr().out)["versions"]
    empty = str(tmp_path / "empty")
    assert main(["explain", github, "--config", DEMO, "--state-dir", empty]) == 1
    assert capsys.readouterr().err == (
        f"error: no upstream offers {github}; {empty} holds no upstream data yet "
        "(fill it with: mcp-discovery-gateway sync)\n"
    )


def test_diff_on_an_empty_state_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A diff of nothing against nothing is not "no change": the operator is told to sync."""
    empty = str(tmp_path / "empty")
    assert main(["diff", "--config", DEMO, "--against", DEMO, "--state-dir", empty]) == 0
    err = capsys.readouterr().err
    assert f"{empty} holds no upstream data yet" in err
    state = str(tmp_path / "state")
    assert main(["sync", "--config", DEMO, "--state-dir", state]) == 0
    capsys.readouterr()
    assert main(["diff", "--config", DEMO, "--against", DEMO, "--state-dir", state]) == 0
    assert "holds no upstream data" not in capsys.readouterr().err


def _readme_commands() -> list[str]:
    """The shell commands in the README's ```sh blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        commands.extend(line.strip() for line in joined.splitlines() if line.strip())
    return [c for c in commands if not c.startswith("#")]


def test_the_readmes_gateway_commands_run_from_the_venv() -> None:
    """Each command the README shows runs as written in a fresh checkout after its first two
    commands: the gateway's CLI is `.venv/bin/mcp-discovery-gateway`, not on the PATH."""
    commands = _readme_commands()
    assert len(commands) > 10
    bare = [c for c in commands if re.search(r"(^|[\s=])mcp-discovery-gateway\s", c)]
    assert bare == []


def test_the_readmes_check_of_the_example_config_passes() -> None:
    """The example config's check, as the README gives it, passes: it sets every variable the
    example references (a new `${VAR}` in the example fails this until the README names it)."""
    (command,) = [
        c for c in _readme_commands() if "check --config ./federation_config/example" in c
    ]
    words = shlex.split(command.split("#")[0])
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
    argv = [w for w in words if "=" not in w]
    assert argv[0] == ".venv/bin/mcp-discovery-gateway"
    values = [
        yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in (REPO / "federation_config/example").rglob("*.yaml")
    ]  # its values, not its comments
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", orjson.dumps(values).decode()))
    assert referenced <= set(env), f"the README's check does not set {referenced - set(env)}"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv[1:]], cwd=REPO, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k not in referenced}, **env}, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ": OK (" in done.stdout


def test_the_explanation_is_what_explain_json_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`explain --json` prints the typed report's own serialisation, and the report is a
    value: nothing a caller does to it changes what a page or /admin/explain shows next."""
    import dataclasses
    from datetime import UTC, datetime

    from gateway.explain import explain, render_text
    from gateway.loader import load_config
    from gateway.offline import sources_from_state
    from gateway.snapshot import view_policies

    state = str(tmp_path / "state")
    assert main(["sync", "--config", DEMO, "--state-dir", state]) == 0
    name = "io.github.github/github-mcp-server"
    capsys.readouterr()
    assert main(["explain", name, "--config", DEMO, "--state-dir", state, "--json"]) == 0
    printed = capsys.readouterr().out
    assert main(["explain", name, "--config", DEMO, "--state-dir", state]) == 0
    text = capsys.readouterr().out
    config = load_config(DEMO)
    gateway = config.gateway.model_validate({**config.gateway.model_dump(), "state_dir": state})
    sources, _, _ = sources_from_state(config.model_copy(update={"gateway": gateway}))
    report = explain(config, view_policies(config), sources, name, now=datetime.now(UTC))
    assert printed == orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    assert text == render_text(report) + "\n"
    assert [list(v["views"]) for v in report.to_json()["versions"]] == [
        list(report.views) for _ in report.versions
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.versions[0].views[0][1].served = False  # type: ignore[misc]
