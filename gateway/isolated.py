"""Parsing a hostile answer where it cannot stall the serving loop.

orjson and expat parse a whole document in one C call that holds the GIL: 16 MB of
`[[],[],...]` from a mirror takes 3 s, and a worker thread would hold every request up as
surely as the event loop itself. So an answer small enough to parse in a few milliseconds
whatever its bytes (`INLINE_BYTES`) is parsed at once, and a larger one in a helper process
(one for the gateway, started on first need), which hands back only the small result. A
parse that raises hands back its error; a helper that dies is an unknown answer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import orjson

from gateway.errors import HelperFailed, MirrorUnavailable

T = TypeVar("T")

# Parsed at once up to this many bytes: the worst JSON (a value every three bytes) takes about
# 1 ms, the worst XML (a tag every four) about 7 ms (measured); most answers are smaller.
INLINE_BYTES = 64 * 1024

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _helper() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            # The helper imports what a parse needs as it unpickles it, never the program
            # that started it (a forkserver preloads `__main__` unless told otherwise).
            context.set_forkserver_preload(["gateway.registries"])
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return _pool


async def parse(parser: Callable[..., T], body: bytes, *args: object) -> T:
    """`parser(body, *args)`: at once, or in the helper process (see above). `parser` and its
    arguments cross to the helper pickled: a module-level function or a bound method of a
    module-level object."""
    if len(body) <= INLINE_BYTES:
        return parser(body, *args)
    try:
        return await asyncio.get_running_loop().run_in_executor(_helper(), parser, body, *args)
    except BrokenProcessPool:
        shutdown()  # the next large answer starts a new helper
        raise MirrorUnavailable("the process parsing a large answer died") from None
    except OSError as exc:  # no process could be started (limits, no /dev/shm): unknown
        shutdown()
        raise MirrorUnavailable(f"no process to parse a large answer: {exc}") from None


async def run(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in the helper process, whatever its size (pickled, as for `parse`):
    `HelperFailed` when the helper dies or cannot start."""
    try:
        return await asyncio.get_running_loop().run_in_executor(_helper(), work, *args)
    except BrokenProcessPool:
        shutdown()
        raise HelperFailed("the helper process died") from None
    except OSError as exc:
        shutdown()
        raise HelperFailed(f"no helper process could be started: {exc}") from None


def json_then(body: bytes, extract: Callable[[object], T]) -> tuple[T] | None:
    """`extract` of the JSON document (in a 1-tuple), or None when the body is not JSON: what
    crosses back from the helper is the small extract, never the document."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return (extract(document),)


def shutdown() -> None:
    """Stop the helper process, if one was started (its current parse is abandoned)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    # Stopped at once, not after the parse it is in (seconds, for the worst answers): exit
    # would otherwise wait for it.
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
