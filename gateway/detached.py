"""Blocking calls that may never return (a file on a hung mount), run so that neither the event
loop nor shutdown waits on them.

`asyncio.to_thread` runs a call in the loop's executor, whose threads `asyncio.run` joins at
exit: one read stuck in the kernel would hold SIGTERM past any grace period. A detached call
runs in a daemon thread of its own, awaited under a deadline; past the deadline the caller
goes on (the call fails), and the thread is left to finish or to die with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from gateway.errors import StillBlocked

T = TypeVar("T")


async def detached(call: Callable[[], T], deadline: float, name: str) -> T:
    """The call's result (or exception), run in a daemon thread; StillBlocked after
    `deadline` seconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        async with asyncio.timeout(deadline):
            return await future
    except TimeoutError:
        raise StillBlocked(name, deadline) from None
