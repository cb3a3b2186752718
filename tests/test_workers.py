"""`serve --workers N` as a process: a worker that fails says why, as one process would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway import app as gateway_app
from gateway.app import REFRESHER, create_app
from gateway.cli import DEMO_CONFIG
from gateway.loader import load_config
from gateway.serve import Serving
from gateway.workers import run_workers
from tests.test_sharing import _config, _registries

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio]

SEAM = """
import gateway.metrics
def cannot(self):
    raise RuntimeError("the metrics cannot be made (a test's seam)")
gateway.metrics.Metrics.__init__ = cannot
"""


async def test_a_worker_that_fails_to_start_says_why(tmp_path: Path) -> None:
    """Before, the gateway exited 1 with nothing on stderr: each worker's traceback (and
    what it had logged) went with its process."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        code = f"{SEAM}\nimport sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "serve", "--config", str(config), "--workers", "2",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        for registry in registries:
            await registry.stop()
    assert process.returncode == 1
    said = stderr.decode()
    assert said.count("RuntimeError: the metrics cannot be made (a test's seam)") == 2, said
    assert said.count("Traceback (most recent call last)") == 2


async def test_a_stop_drains_the_port_and_the_workers_socket_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker also listens on the run's socket for what the others hand on: a
    stop drains both within one grace, not one after the other (twice as long)."""
    config = load_config(DEMO_CONFIG)
    gateway = config.gateway.model_copy(update={"state_dir": tmp_path / "state"})
    app = create_app(config.model_copy(update={"gateway": gateway}))
    socket = tmp_path / "leader.sock"
    serving = await Serving.start(app, "127.0.0.1", 0, grace=1.0, unix=socket)
    await asyncio.wait_for(app[REFRESHER].wait_ready(), 30)

    async def slow(*_: object) -> web.StreamResponse:
        await asyncio.sleep(30)
        raise AssertionError("cancelled by the stop first")

    monkeypatch.setattr(gateway_app, "dispatch", slow)
    sessions = [
        aiohttp.ClientSession(),
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))),
    ]
    urls = [f"http://127.0.0.1:{serving.port}/v0.1/servers", "http://leader/v0.1/servers"]
    asked = [asyncio.create_task(s.get(url)) for s, url in zip(sessions, urls, strict=True)]
    await asyncio.sleep(0.3)  # both in flight
    started = time.monotonic()
    await serving.stop()
    took = time.monotonic() - started
    for task in asked:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    for session in sessions:
        await session.close()
    # One site's drain takes aiohttp about twice the grace (2 s here); one after the other, 4 s.
    assert took < 3.0


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPPED_WHILE_FORKING = """
import os, signal, sys, time
from gateway.workers import run_workers
forks = []
def before():
    forks.append(1)
    if len(forks) == 2:  # between the two forks: a supervisor stops the gateway
        os.kill(os.getpid(), signal.SIGTERM)
os.register_at_fork(before=before)
def serve(index):
    print(os.getpid(), flush=True)
    time.sleep(30)
    return 0
sys.exit(run_workers(2, serve))
"""


async def test_a_stop_while_the_workers_are_forked_stops_them_too() -> None:
    """A SIGTERM between two forks waits for the parent to forward it: before, it ended the
    parent alone, and its workers went on serving the port with no one to stop them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STOPPED_WHILE_FORKING, stdout=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    workers = [int(pid) for pid in out.split()]
    left = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM  # as its workers ended
    assert left == []


async def test_a_first_worker_that_fails_before_it_listens_stops_the_others(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Nothing would ever sync or build for the others (a crash in the first's app): they
    would answer 503 for ever while alive. They are stopped; the gateway ends with its
    status, so a supervisor restarts the whole."""
    handlers = {signum: signal.getsignal(signum) for signum in FORWARDED}  # the test's own
    started = time.monotonic()
    try:
        code = run_workers(2, lambda index: 3 if index == 0 else time.sleep(30) or 0,
                           lambda: False)  # fmt: skip
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert code == 3
    assert time.monotonic() - started < 10
    assert capfd.readouterr().err == ""  # a worker with a status said why itself
