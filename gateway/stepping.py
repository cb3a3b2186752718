"""Long loops over `paced(items)`: compiled, ticking an interpreted `pacing.Pacer` every few
items (see `gateway.pacing`, the one seam between build work and the serving loop)."""

from collections.abc import Iterable, Iterator
from typing import TypeVar

from gateway.pacing import Pacer

T = TypeVar("T")


def paced(items: Iterable[T], every: int = 1024) -> Iterator[T]:
    """The items, in order, offering the GIL about every `pacing.INTERVAL` of the loop's work
    (a tick every `every` items: 1024 for steps well under a microsecond, fewer for longer)."""
    pacer = Pacer()
    countdown = every
    for item in items:
        countdown -= 1
        if not countdown:
            countdown = every
            pacer.tick()
        yield item
