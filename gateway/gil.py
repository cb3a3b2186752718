"""Offering the GIL from long loops.

Compiled (see setup.py), a snapshot build's loops never give up the GIL on their own, and the
event loop's requests would wait for a whole build; interpreted, they give it up when asked
(every `sys.getswitchinterval()`). A long loop ticks a `Pacer` every few steps, and the pacer
offers the GIL once its loop has run for `INTERVAL`: as often as the work needs, whatever a
step costs, and rarely enough that handing over is cheap.
"""

import time

INTERVAL = 0.002  # seconds of a loop's work between two offers


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
