"""How long work in a worker thread shares the process with the serving loop: the one seam.

The GIL: compiled (see setup.py), a snapshot build's loops never give up the GIL on their own,
and the event loop's requests would wait for a whole build; interpreted, they give it up when
asked (every `sys.getswitchinterval()`). A long loop runs over `paced(items)` (in
`gateway.stepping`, compiled), which ticks a `Pacer` every few items; the pacer offers the
GIL once the loop has run for `INTERVAL`: as often as the work needs, whatever a step costs,
and rarely enough that handing over is cheap. A loop whose steps are irregular ticks a
`Pacer` itself.

The collector: a build runs with the cyclic collector paused (`collector_paused`).

A request: an `Allowance` gives it a few steps of work on the serving loop (`ON_LOOP`); work
that needs more is done again in the one thread for long work (`api.elsewhere`), paced.

This module is not compiled, on purpose: a tick is an interpreted call, and an interpreted
call is where a thread waiting for the GIL gets it after the switch interval. Compiled, the
serving loop waits for the next explicit offer instead: its p99 during the rebuild after a
sync went from 17 to 45 ms at 200k versions (measured). `paced` itself is compiled: an
interpreted step per item made that rebuild about 20 % slower.
"""

import gc
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from gateway.errors import OverAllowance

INTERVAL = 0.002  # seconds of a loop's work between two offers
ON_LOOP = 4  # steps of work one request may do on the serving loop (about 1-2 ms of a search)
STEP_SECONDS = 0.0005  # and at most this long a step, on the loop, whatever its items cost


class Pacer:
    """Offers the GIL about every INTERVAL of one loop's work."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due = time.perf_counter() + INTERVAL

    def tick(self) -> None:
        """Call every few steps (a step of a few µs: every 16; of well under 1 µs: every 1024)."""
        if time.perf_counter() >= self._due:
            time.sleep(0)  # sleeping releases the GIL: a thread waiting for it takes it
            self._due = time.perf_counter() + INTERVAL


class Allowance:
    """How much work one request may do where it runs. On the serving loop, a few steps
    (`step()` every few hundred candidates of a search) and then `OverAllowance`: the caller
    does the work again in a worker thread, where an allowance of None steps without limit and
    offers the GIL like any paced loop. What the loop wasted is at most its allowance."""

    __slots__ = ("_due", "_left", "_pacer")

    def __init__(self, steps: int | None) -> None:
        self._left = steps
        self._pacer = Pacer() if steps is None else None
        # Steps are counted in items of a known cost; an item can cost far more than that
        # (one of a catalog served in place, made as it is first read: 30 times more): on
        # the loop, the steps' time is bounded too (`check`).
        self._due = None if steps is None else time.perf_counter() + steps * STEP_SECONDS

    def ensure(self, steps: int) -> None:
        """`OverAllowance` now, when the work ahead is known to take more steps than are left
        (rather than after spending what is left on it)."""
        if self._left is not None and steps > self._left:
            raise OverAllowance()

    def step(self) -> None:
        if self._pacer is not None:
            self._pacer.tick()
            return
        assert self._left is not None
        self._left -= 1
        if self._left < 0:
            raise OverAllowance()
        self.check()

    def check(self) -> None:
        """`OverAllowance` once the loop's steps have taken their time (between two steps of
        items whose cost is not known: a few of them, so that the loop runs over by little)."""
        if self._due is not None and time.perf_counter() > self._due:
            raise OverAllowance()


T = TypeVar("T")


def stepped(items: Iterable[T], allowance: Allowance, every: int) -> Iterator[T]:
    """The items, in order, stepping `allowance` every `every` of them."""
    countdown = every
    for item in items:
        countdown -= 1
        if not countdown:
            countdown = every
            allowance.step()
        yield item


_pauses = 0
_resume = False  # whether the collector was on when the first of the running builds began
_pauses_lock = threading.Lock()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while a build runs.

    A build creates millions of objects without cycles. Once earlier catalogs are frozen
    (`gc.freeze()` after each swap) the collector counts almost no long-lived objects, so it
    walks every object the build has made so far again and again: 7 s of an 18 s cold build
    at 3 x 66k versions. Reference counting still frees everything that is not a cycle; the
    objects made meanwhile are frozen, like the catalogs (see `Refresher`).
    """
    global _pauses, _resume
    with _pauses_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
        _pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.freeze()  # else the first collection walks every object the build made
                gc.enable()
