"""`serve --workers N`: N processes on one port (SO_REUSEPORT), so throughput scales with cores.

The first worker syncs the upstreams and builds; the others serve what it built (see
`sharing`). The parent only starts them and forwards signals: SIGTERM and SIGINT to stop,
SIGHUP to reload; when the first worker ends, it stops the others too (nothing would keep
their catalog current), so a supervisor restarts the whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Seconds the others have to end on their own once the first failed before it listened; then
# they are stopped (else they would answer 503 for ever: nothing would build for them).
FAILED_GRACE = 5.0


def run_workers(
    count: int,
    serve: Callable[[int], int],
    first_listening: Callable[[], bool] = lambda: True,
    ended: Callable[[int], None] = lambda index: None,
) -> int:
    """Fork `count` workers, each running `serve(index)`; wait for all of them, telling
    `ended` the index of each that ends. When the first ends once it had listened
    (`first_listening`), the others are stopped."""
    children: list[int] = []
    running: list[int] = []
    # Held back until the parent forwards them: a stop while the workers are forked would
    # end the parent alone, the workers left serving the port with no one to stop them.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for signum in _FORWARDED:  # its own, as a process of its own has
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, before)
                code = serve(index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:  # said as a process of its own would say it, then ended
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
        running.append(pid)

    def forward(signum: int, _: FrameType | None) -> None:
        for pid in running:  # never one reaped already: its number may be another's now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, before)  # one that came meanwhile: now
    worst = 0
    stop_at: float | None = None  # when to stop the others, if they are still running
    while running:
        if stop_at is None:
            pid, status = os.wait()
        else:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if time.monotonic() < stop_at:
                    time.sleep(0.05)
                    continue
                stop_at = None
                forward(signal.SIGTERM, None)
                continue
        if pid not in running:
            continue
        running.remove(pid)
        ended(children.index(pid))
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: as a shell reports it
        worst = worst or code
        if pid != children[0] or not running:
            continue
        # Nothing syncs or builds for the others now.
        if first_listening():
            if code > 128:  # it could not say why itself
                print(f"worker 0 was killed (signal {code - 128}): stopping the others",
                      file=sys.stderr, flush=True)  # fmt: skip
            forward(signal.SIGTERM, None)
        elif code:  # failed before it listened (an address in use, its app): the others
            stop_at = time.monotonic() + FAILED_GRACE  # likely fail alike, and say why
    sys.stdout.flush()
    return worst
