"""The `serve` command's process: one event loop (or `--workers` of them on one port) serving a
config until SIGTERM, with SIGHUP reloading it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from gateway import __version__, logs
from gateway.app import HANDLER_ARGS, REFRESHER, create_app, handler_for
from gateway.config import FederationConfig
from gateway.logs import BUFFER
from gateway.reloader import ConfigLoader, reload_config
from gateway.rundir import Run
from gateway.sharing import Shared
from gateway.workers import run_workers

SHUTDOWN_GRACE = 10.0
SWITCH_INTERVAL = 0.0005


def use_one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own heap ("arena"), and memory freed in one
    is not reused by another; syncs and builds run in worker threads. With one arena, a
    gateway holding 200k versions peaks about 12 % lower (bench/README.md). An explicit
    MALLOC_ARENA_MAX in the environment wins; other C libraries are left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8  # from glibc's malloc.h
    libc.mallopt(m_arena_max, 1)


def public_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


# Why a listening address cannot be used: the operator's to fix with --listen.
_LISTEN_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def cannot_listen(listen: str, exc: OSError) -> str | None:
    """The one line saying why `listen` cannot be listened on, or None for another error."""
    if isinstance(exc, socket.gaierror):
        reason = str(exc.strerror or exc).lower()
    elif exc.errno in _LISTEN_ERRORS and exc.filename is None:  # a socket's, not a file's
        reason = os.strerror(exc.errno).lower()
    else:
        return None
    return f"error: cannot listen on {listen}: {reason}; choose another with --listen"


async def _serve(
    config: FederationConfig,
    load: ConfigLoader,
    *,
    reuse_port: bool = False,
    announce: bool = True,
    keeps: bool = True,
    shared: Shared | None = None,
) -> int:
    gateway = config.gateway
    app = create_app(config, load=load, keeps=keeps, shared=shared)
    # SIGTERM ends it at any time, while it starts too (loading a kept catalog or state,
    # waiting on a feed, building): the port answers meanwhile, so it may be in service.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log = structlog.get_logger("gateway.serve")
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("reload_skipped", why="starting"))
    leads = shared is not None and shared.builds  # the others ask it what only it knows
    starting = asyncio.create_task(Serving.start(
        app, gateway.host or None, gateway.port, reuse_port=reuse_port, grace=SHUTDOWN_GRACE,
        unix=shared.run.socket if shared is not None and leads else None,
        listening=shared.run.listening.touch if shared is not None and leads else None,
    ))  # fmt: skip
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("shutting_down", starting=True)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await asyncio.to_thread(BUFFER.flush)
        return 0
    stopped.cancel()
    try:
        serving = starting.result()
    except OSError as exc:
        message = cannot_listen(gateway.listen, exc)
        if message is None:
            raise
        if announce:  # every worker binds the same address alike: one says why
            print(message, file=sys.stderr, flush=True)
        return 1
    url = public_url(gateway.host, gateway.port)
    if announce:
        print(f"MCP discovery gateway {__version__} is serving.", flush=True)
        print(f"Give your IDE this MCP registry URL: {url}", flush=True)
        print(f"  (try: curl '{url}/v0.1/servers?limit=3')", flush=True)
        print(f"Browse the catalog at {url}/ (operators: {url}/admin/)", flush=True)
    reloads: set[asyncio.Task[str | None]] = set()

    def reload() -> None:
        loop.run_in_executor(None, BUFFER.flush)  # what was logged before it, written now
        task = asyncio.create_task(reload_config(app[REFRESHER], load))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting_down")
    await asyncio.to_thread(BUFFER.flush)  # what was logged before SIGTERM, written now
    await serving.stop()
    await asyncio.to_thread(BUFFER.flush)
    return 0


def serve(config: FederationConfig, load: ConfigLoader, workers: int = 1) -> int:
    """Serve `config` until SIGTERM (`load` re-reads it on a reload); the exit status."""
    # Snapshots are rebuilt in a worker thread: hand the GIL back to the serving loop often,
    # so a rebuild slows requests down a little instead of stalling them (5 ms by default).
    sys.setswitchinterval(SWITCH_INTERVAL)
    use_one_malloc_arena()
    if workers > 1:
        if config.gateway.port == 0:
            print("--workers needs a fixed port (SO_REUSEPORT), not port 0", file=sys.stderr)
            return 2

        # One worker syncs and builds, the others follow it (see `sharing`).
        run = Run.prepare(config.gateway.state_dir, workers)

        def worker(index: int) -> int:
            logs.bind_process(worker=index)
            first = index == 0  # says where it listens, and keeps the catalog as it stops
            try:
                return asyncio.run(_serve(config, load, reuse_port=True, announce=first,
                                          keeps=first, shared=Shared(run, index)))  # fmt: skip
            finally:
                BUFFER.flush()  # a worker ends without exit handlers: what it logged, written

        try:
            listened = run.listening.exists
            return run_workers(workers, worker, first_listening=listened, ended=run.ended)
        finally:
            run.close()
    return asyncio.run(_serve(config, load))


def _runner(app: web.Application, grace: float, *, counted: bool) -> web.ServerRunner:
    server = web.Server(handler_for(app, counted=counted), access_log=None, **HANDLER_ARGS)
    return web.ServerRunner(server, handle_signals=False, shutdown_timeout=grace)


async def start_app(app: web.Application) -> None:
    """Run an app's startup (its cleanup_ctx: syncs, the refresher) as aiohttp's own runner
    does, for a server that is not the app's: the app is frozen once it has started."""
    app.on_startup.freeze()
    await app.startup()
    app.freeze()


class Serving:
    """An app serving on a port as `serve` runs it: the app's lifecycle (syncs, the refresher)
    around aiohttp's low-level server, which hands every request to the gateway's handler
    (see `handler_for`)."""

    def __init__(
        self, app: web.Application, runners: list[web.ServerRunner], site: web.TCPSite
    ) -> None:
        self.app = app
        self._runner = runners[0]
        self._runners = runners
        self._site = site

    @classmethod
    async def start(
        cls,
        app: web.Application,
        host: str | None,
        port: int,
        *,
        reuse_port: bool = False,
        grace: float = 10.0,
        unix: Path | None = None,
        listening: Callable[[], None] | None = None,
    ) -> Serving:
        runners = [_runner(app, grace, counted=True)]
        await runners[0].setup()
        site = web.TCPSite(runners[0], host, port, reuse_port=reuse_port or None)
        try:
            # Listening first: while the app starts (state restored, the first catalog
            # built), the port answers 503 with Retry-After instead of refusing connections.
            await site.start()
            if unix is not None:  # the other workers' way to it (see `forwarding`): what
                runners.append(_runner(app, grace, counted=False))  # they hand on, they count
                await runners[1].setup()
                await web.UnixSite(runners[1], str(unix)).start()
            if listening is not None:
                listening()
            await start_app(app)
        except BaseException:
            for runner in runners:  # the port closed; an app that did not start, left alone
                await runner.cleanup()
            raise
        return cls(app, runners, site)

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose, for port 0)."""
        addresses = self._runner.addresses
        port: int = addresses[0][1]
        return port

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the grace), then the app's
        own shutdown: background syncs stop, state is saved."""
        # Both sites stop accepting at once and drain together: a request another worker hands
        # on finishes within the same grace as the client's request it answers.
        await asyncio.gather(*(runner.cleanup() for runner in self._runners))
        await self.app.shutdown()
        await self.app.cleanup()
