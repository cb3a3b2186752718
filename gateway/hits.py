"""A page of search results as items, in list order: the items of the names the index gives
(`found`), or every item checked in turn while the index does not cover the catalog (`scan`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from gateway.pacing import Allowance

if TYPE_CHECKING:
    from gateway.catalog import Item


def matches(item: Item, needle: str) -> bool:
    return needle in item.name_folded or needle in item.registry_meta.entry.text


SCAN_STEP = 1024  # items checked between two steps of a scan's allowance
CHECK_EVERY = 64  # and between two looks at its time


def scan(items: Sequence[Item], start: int, needle: str, allowance: Allowance) -> Iterator[Item]:
    """The items from `start` on that match, in list order."""
    countdown = SCAN_STEP
    for index in range(start, len(items)):
        countdown -= 1
        if not countdown:
            countdown = SCAN_STEP
            allowance.step()
        elif not countdown % CHECK_EVERY:  # an item may be made as it is read (`inplace`)
            allowance.check()
        item = items[index]
        if needle in item.name_folded or needle in item.registry_meta.entry.text:
            yield item


def _name(item: Item) -> str:
    return item.name


def found(
    items: Sequence[Item], names: Iterator[str], after: tuple[str, str] | None, needle: str
) -> Iterator[Item]:
    """The items of these names (in order) after `after` that match, in list order: each name
    is looked for from where the last one was found, galloping (names that match are often
    neighbours), then bisecting what is left."""
    at, end = 0, len(items)
    for name in names:
        if at < end and items[at].name < name:
            step, low = 1, at
            while at + step < end and items[at + step].name < name:
                low = at + step
                step *= 2
            at = bisect_left(items, name, lo=low, hi=min(at + step, end), key=_name)
        while at < end and items[at].name == name:
            item = items[at]
            at += 1
            if after is not None and (item.name, item.version) <= after:
                continue
            if matches(item, needle):
                yield item
