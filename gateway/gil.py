"""Offering the GIL from long loops.

Compiled (see setup.py), a snapshot build's loops never give up the GIL on their own, and the
event loop's requests would wait for a whole build; interpreted, they give it up every few
milliseconds anyway. Long loops call `pause()` every `EVERY` steps of about 10 µs each.
"""

import time

EVERY = 256


def pause() -> None:
    """Let a thread waiting for the GIL (the event loop's) have it."""
    time.sleep(0)  # sleeping releases the GIL, for no time at all
