"""Letting go of a replaced snapshot (and of a builder a reload retired) without stalling the
serving loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.inplace import PlacedItems
from gateway.pacing import Pacer

if TYPE_CHECKING:
    from gateway.snapshot import Builder, Snapshot


_RELEASE_STEP = 2048  # objects let go of at a time


def release(snapshot: Snapshot | None, builder: Builder | None = None) -> None:
    """Let go of a replaced snapshot (and builder) a little at a time: call it in a worker
    thread, once nothing reads them any more.

    Dropping the last reference to a catalog frees its objects in one C-level cascade that
    holds the GIL throughout (over 100 ms after a reload at 200k versions, when nothing is
    shared with the new catalog). Emptying its lists in small slices frees the same objects
    with the GIL changing hands between slices. Items the new catalog shares stay alive.
    """
    chunks: list[list[Any]] = []
    in_place: list[PlacedItems] = []
    if snapshot is not None:
        for view in snapshot.views.values():
            for listing in (view.latest, view.active, view.every):
                items = listing.items
                if isinstance(items, list):
                    chunks.append(items)
                elif isinstance(items, PlacedItems):  # a catalog served from its buffer
                    chunks.extend(items.made())
                    in_place.append(items)
            for made in list(view.memo.values()):  # what pages worked out (see `listing`)
                if isinstance(made, dict):
                    chunks.append(list(made.values()))  # shared values: the dict frees fast
                    made.clear()
                for field in ("by_name", "by_updated"):
                    found = getattr(made, field, None)
                    if isinstance(found, list):
                        chunks.append(found)
            view.memo.clear()
    if builder is not None:
        chunks.extend(builder.release())
    pacer = Pacer()
    for items in chunks:
        while items:
            del items[-_RELEASE_STEP:]
            pacer.tick()
    for rows in in_place:
        rows.release()
