"""`serve`'s logs: JSON lines through a buffer, written at least every second, at once on
SIGHUP and SIGTERM; the access log's lines have the fields and form the structlog chain gives."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import logs
from tests.conftest import REPO, free_port

# `serve` with the periodic write made rare (60 s): what reaches stderr before then was
# written because of a signal (the test's seam: the interval, set before the CLI runs).
SERVE = (
    "import sys, gateway.logs as logs; logs.FLUSH_EVERY = 60.0;"
    "from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _get(url: str) -> None:
    with urllib.request.urlopen(url) as answer:
        answer.read()


def _wait(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`serve` on the demo config (`SERVE`: written on signals), its stderr to a file: the
    process, its base URL once ready, and the file; killed afterwards if still running."""
    port = free_port()
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--listen", f"127.0.0.1:{port}", *args],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=sink,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                 "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                _get(base + "/readyz")
            except OSError:
                return False
            return True

        assert _wait(ready, 30)
        yield process, base, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_lines_are_written_on_sighup_and_sigterm_not_one_write_per_request(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (process, base, stderr):
        for index in range(5):
            _get(f"{base}/v0.1/servers?limit={index + 1}")
        time.sleep(0.3)
        asked = [e for e in _lines(stderr) if e.get("path", "").startswith("/v0.1/servers")]
        assert asked == []  # buffered: not written per request

        process.send_signal(signal.SIGHUP)

        def written() -> list[dict[str, Any]]:
            return [e for e in _lines(stderr) if e.get("path", "").startswith("/v0.1/servers")]

        assert _wait(lambda: len(written()) == 5, 3)
        _get(base + "/v0.1/servers?limit=9")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        last = written()[-1]
        assert last["path"] == "/v0.1/servers?limit=9"
        assert set(last) == {"request_id", "method", "path", "status", "duration_ms", "event",
                             "level", "timestamp"}  # fmt: skip
        assert last["event"] == "request"
        assert last["level"] == "info"
        assert last["status"] == 200
        assert last["timestamp"].endswith("Z")


def test_an_access_line_is_what_the_structlog_chain_would_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast access line and the chain's: the same keys in the same order, the same
    values, the same timestamp form (configured as `serve` does, then as other commands)."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "log_request", logs.log_request)  # put back afterwards
    saved = structlog.get_config()
    asked = ("abc", "GET", "/x?y=" + "1" * 600, 200, 0.0123456)
    monkeypatch.setattr(logs, "_bound", {})
    monkeypatch.setattr(logs, "_bound_json", b"")
    logs.bind_process(worker=1)
    try:
        logs.configure_logging("json", "info", buffered=True)
        logs.log_request(*asked)
        logs.BUFFER.flush()
        logs.configure_logging("json", "info")
        logs.log_request(*asked)
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
    stream.flush()
    written = stream.buffer.getvalue().splitlines()  # type: ignore[attr-defined]
    fast, chain = (orjson.loads(line) for line in written)
    assert list(fast) == list(chain)
    timed = ("timestamp", "duration_ms")
    assert {k: v for k, v in fast.items() if k not in timed} == {
        k: v for k, v in chain.items() if k not in timed
    }
    assert len(fast["path"]) == 512
    assert fast["worker"] == 1
    assert fast["duration_ms"] == chain["duration_ms"] == 12.35
    assert len(fast["timestamp"]) == len(chain["timestamp"])
    assert fast["timestamp"][:19] <= chain["timestamp"][:19]


_ACCESS_KEYS = {"request_id", "method", "path", "status", "duration_ms", "event", "level",
                "timestamp"}  # fmt: skip
_texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # valid UTF-8


@settings(max_examples=300, deadline=None)
@given(
    fields=st.tuples(_texts, _texts, _texts, st.integers(100, 599),
                     st.floats(0, 1e7, allow_nan=False), st.floats(0, 4e9, allow_nan=False)),
    bound=st.dictionaries(  # a process binds its own keys (the worker's index), not the line's
        st.text(min_size=1, max_size=8).filter(lambda key: key not in _ACCESS_KEYS),
        st.integers(-(2**63), 2**63 - 1) | _texts,
        max_size=3,
    ),
)  # fmt: skip
def test_every_access_line_is_the_json_of_its_fields(
    fields: tuple[str, str, str, int, float, float], bound: dict[str, Any]
) -> None:
    """The access line filled into its template is byte for byte the JSON of the chain's
    dict, whatever the strings (quotes, control characters, any script), numbers and
    bound values."""
    request_id, method, path, status, seconds, now = fields
    saved = logs._bound, logs._bound_json
    logs._bound, logs._bound_json = {}, b""
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(structlog.contextvars, "bind_contextvars", lambda **_: None)
            if bound:
                logs.bind_process(**bound)
        line = logs._access_line(fields)
    finally:
        logs._bound, logs._bound_json = saved
    expected = {"request_id": request_id, "method": method, "path": path, "status": status,
                "duration_ms": int(seconds * 100_000 + 0.5) / 100, "event": "request",
                **bound, "level": "info", "timestamp": datetime.fromtimestamp(now, UTC)}  # fmt: skip
    assert line == orjson.dumps(expected, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)


def test_an_access_line_of_texts_not_utf8_is_written_escaped(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A path with bytes that are not UTF-8 (kept as surrogates by aiohttp's parser in pure
    Python) is written with them escaped, and the lines after it are written too."""
    buffer = logs.LogBuffer()
    monkeypatch.setattr(buffer, "_start", lambda: None)  # no writer thread: flushed below
    buffer.write(("r\udcfe", "GET", "/a\udcffb?q=\ud800", 404, 0.001, 1_767_225_600.0))
    buffer.write(b'{"n":1}\n')
    buffer.flush()
    lines = [orjson.loads(line) for line in capsysbinary.readouterr().err.splitlines()]
    assert [line.get("path") for line in lines] == ["/a\\udcffb?q=\\ud800", None]
    assert lines[0]["request_id"] == "r\\udcfe"
    assert lines[0]["status"] == 404
    assert lines[1] == {"n": 1}


def test_lines_past_what_may_wait_are_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A reader that stops reading costs lines, counted, never unbounded memory."""
    monkeypatch.setattr(logs, "MAX_WAITING", 100)
    buffer = logs.LogBuffer()
    monkeypatch.setattr(buffer, "_start", lambda: None)  # no writer thread: flushed below
    for index in range(10):
        buffer.write(orjson.dumps({"n": index, "pad": "x" * 30}) + b"\n")
    buffer.flush()
    lines = [orjson.loads(line) for line in capsysbinary.readouterr().err.splitlines()]
    assert [line.get("n") for line in lines[:-1]] == [0, 1, 2]
    assert lines[-1]["event"] == "logs_dropped"
    assert lines[-1]["lines"] == 7


def test_access_fields_become_lines_in_order_with_every_other_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop appends an access line's fields; the writer makes the line where they stand
    among the other lines, counts them as it counted them in, and drops them past what may
    wait like any line (counted)."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "_bound", {})
    monkeypatch.setattr(logs, "_bound_json", b"")
    monkeypatch.setattr(structlog.contextvars, "bind_contextvars", lambda **_: None)
    logs.bind_process(worker=3)
    buffer = logs.LogBuffer()
    monkeypatch.setattr(buffer, "_start", lambda: None)  # no writer thread: flushed below
    access = ("r1", "GET", "/v0.1/servers", 200, 0.0042, 1_767_225_600.25)
    buffer.write(b'{"n":1}\n')
    buffer.write(access)
    buffer.write(b'{"n":2}\n')
    buffer.flush()
    assert buffer._appended == buffer._taken  # what waits, counted alike both ways
    monkeypatch.setattr(logs, "MAX_WAITING", 2 * logs.ACCESS_BYTES)
    for number in range(5):
        buffer.write(("r2", "GET", "/x", 200 + number, 0.001, 1_767_225_601.0))
    buffer.flush()
    stream.flush()
    lines = [orjson.loads(line) for line in stream.buffer.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert lines[0] == {"n": 1}
    assert lines[2] == {"n": 2}
    assert lines[1] == {"request_id": "r1", "method": "GET", "path": "/v0.1/servers",
                        "status": 200, "duration_ms": 4.2, "event": "request", "worker": 3,
                        "level": "info", "timestamp": "2026-01-01T00:00:00.250000Z"}  # fmt: skip
    assert list(lines[1]) == ["request_id", "method", "path", "status", "duration_ms", "event",
                              "worker", "level", "timestamp"]  # fmt: skip
    assert [line["status"] for line in lines[3:-1]] == [200, 201]  # then over 2 lines' worth
    assert lines[-1]["event"] == "logs_dropped"
    assert lines[-1]["lines"] == 3


def test_lines_from_many_threads_are_each_written_once_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines are appended without a lock while the writer takes them: none lost, none twice,
    each thread's in its order, and nothing counted as waiting afterwards."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stream)
    buffer = logs.LogBuffer()
    monkeypatch.setattr(buffer, "_start", lambda: None)  # flushed by the thread below
    per, threads = 20_000, 4
    done = threading.Event()

    def produce(index: int) -> None:
        for number in range(per):
            buffer.write(b'{"t":%d,"n":%d}\n' % (index, number))

    def flush_until_done() -> None:
        while not done.is_set():
            buffer.flush()

    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    producers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    flusher.join()
    buffer.flush()
    stream.flush()
    seen: dict[int, list[int]] = {index: [] for index in range(threads)}
    for line in stream.buffer.getvalue().splitlines():  # type: ignore[attr-defined]
        parsed = orjson.loads(line)
        seen[parsed["t"]].append(parsed["n"])
    assert all(numbers == list(range(per)) for numbers in seen.values())
    assert buffer._appended == buffer._taken  # what waits, counted


def test_a_forked_child_does_not_write_its_parents_lines(tmp_path: Path) -> None:
    """`serve --workers` forks: lines waiting in the parent are the parent's to write."""
    buffer = logs.LogBuffer()
    buffer._start = lambda: None  # type: ignore[method-assign]
    buffer.write(b'{"from":"parent"}\n')
    written = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # the child: its stderr a file, one line of its own, flushed
        code = 1
        try:
            with written.open("w", encoding="utf-8") as sink:
                sys.stderr = sink
                buffer.write(b'{"from":"child"}\n')
                buffer.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _lines(written) == [{"from": "child"}]


@pytest.mark.slow
def test_every_access_line_of_a_worker_names_it(tmp_path: Path) -> None:
    """`serve --workers 2`: each worker's access lines carry its index, as its other lines do."""
    with serving(tmp_path, "--workers", "2") as (process, base, stderr):
        for _ in range(40):
            _get(f"{base}/v0.1/servers?limit=2")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        asked = [e for e in _lines(stderr) if e.get("path") == "/v0.1/servers?limit=2"]
        # A request the other worker answered through the first (before it served a catalog
        # of its own) is logged by both, under one request id.
        by_id: dict[str, list[int]] = {}
        for line in asked:
            by_id.setdefault(line["request_id"], []).append(line["worker"])
        assert len(by_id) == 40
        assert all(sorted(workers) in ([0], [1], [0, 1]) for workers in by_id.values())
        assert all(list(line)[5:7] == ["event", "worker"] for line in asked)


def test_logging_configured_by_one_test_first() -> None:
    """With the next test: a test that configures logging for the process (as `cli.main` run
    in-process does) does not change where the next test's lines go (conftest restores it)."""
    logs.configure_logging("json", "warning", buffered=True)
    assert logs.log_request is logs._no_request


def test_logging_configured_by_one_test_is_not_the_next_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert logs.log_request is not logs._no_request
    structlog.get_logger("gateway.test").info("seen_by_the_next_test")
    assert "seen_by_the_next_test" in capsys.readouterr().out
