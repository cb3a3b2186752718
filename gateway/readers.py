"""Requests that read a snapshot across awaits, so that it is not released under them.

`released.release` empties a replaced catalog's lists a slice at a time (freeing hundreds of
thousands of objects without one long stall). A request that took a snapshot and then waits
(a server page for its account, a search finished in a worker thread) would read emptied
lists: such a request says so (`reading`), and the refresher waits for it (`done`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import structlog

log = structlog.get_logger("gateway.readers")


class Readers:
    """How many requests read each snapshot (by identity) right now."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    @contextlib.contextmanager
    def reading(self, snapshot: object | None) -> Iterator[None]:
        key = id(snapshot)
        if snapshot is not None:
            self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield
        finally:
            if snapshot is not None:
                left = self._counts[key] - 1
                if left:
                    self._counts[key] = left
                else:
                    del self._counts[key]

    async def done(self, snapshot: object, wait: float) -> bool:
        """Once no request reads the snapshot (True); False after `wait` seconds."""
        deadline = time.monotonic() + wait
        while id(snapshot) in self._counts:
            if time.monotonic() > deadline:
                log.warning("release_skipped", reason="a request still reads the old catalog")
                return False
            await asyncio.sleep(0.005)
        return True
