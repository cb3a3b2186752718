"""`serve --workers N`: N processes on one port (SO_REUSEPORT), so throughput scales with cores.

Each worker is a whole gateway: it syncs its upstreams and serves its own snapshot. Given the
same upstream data, workers serve the same bytes (and accept each other's cursors). The parent
only starts them and forwards signals: SIGTERM and SIGINT to stop, SIGHUP to reload.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType


def run_workers(count: int, serve: Callable[[int], int]) -> int:
    """Fork `count` workers, each running `serve(index)`; wait for all of them."""
    children: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = serve(index)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _: FrameType | None) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        worst = worst or (code if code > 0 else 0)
    sys.stdout.flush()
    return worst
