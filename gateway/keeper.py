"""A refresher's catalog kept for a restart, and served from there at the next start (the
file is `kept`'s): when to write it, and how, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from typing import TYPE_CHECKING

import structlog

from gateway import kept
from gateway.entry import format_timestamp
from gateway.errors import KeptForOther, StateError, Stopped
from gateway.released import release

if TYPE_CHECKING:
    from gateway.refresher import Refresher
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.refresher")


STOP_DEADLINE = 25.0  # seconds a stopping gateway gives keeping its catalog, at most


async def restore(refresher: Refresher) -> Snapshot | None:
    """Serve the catalog the last run kept, if this gateway and config built it."""
    if not refresher.config.gateway.keep_catalog:
        return None
    started = time.monotonic()
    state_dir = refresher.config.gateway.state_dir
    try:
        restored = await asyncio.to_thread(kept.restore, state_dir, refresher.builder.fingerprint)
    except KeptForOther as exc:
        log.info("kept_catalog_ignored", path=exc.path, reason=exc.reason)
        return None
    except StateError as exc:
        log.error("kept_catalog_corrupt", path=exc.path, reason=exc.reason)
        return None
    if restored is None:
        return None
    refresher.serve_first(restored)
    refresher.kept = restored  # on disk as it is served
    gc.freeze()  # long-lived, like every catalog (see `Refresher._rebuild`)
    log.info(
        "kept_catalog_served",
        views={name: len(view) for name, view in restored.views.items()},
        built_at=format_timestamp(restored.built_at),
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return restored


async def keep(refresher: Refresher, deadline: float | None = None) -> int | None:
    """Keep the served catalog for a restart; its size in bytes (None: nothing to keep, or
    it could not be written in time, which is logged). The catalog is held as read
    meanwhile: a swap does not release it under the writer, which stops if this is
    cancelled or `deadline` seconds pass (the last file kept as it was)."""
    snapshot = refresher.snapshot
    if snapshot is None:
        return None
    started = time.monotonic()
    stop = threading.Event()
    timer = None if deadline is None else asyncio.get_running_loop().call_later(deadline, stop.set)
    shared = refresher.shared
    packed = shared.published if shared is not None else None  # the catalog served, packed
    with refresher.readers.reading(snapshot):
        writing = asyncio.ensure_future(asyncio.to_thread(
            kept.keep, refresher.config.gateway.state_dir, snapshot, stop, packed
        ))  # fmt: skip
        try:
            size = await asyncio.shield(writing)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Stopped, OSError):
                await writing  # the writer has let go of the catalog
            raise
        except Stopped:
            log.warning("catalog_keep_stopped", after_s=deadline)
            return None
        except OSError as exc:
            log.warning("catalog_keep_failed", error=str(exc))
            return None
        finally:
            if timer is not None:
                timer.cancel()
    refresher.kept = snapshot
    log.info("catalog_kept", bytes=size, duration_ms=round((time.monotonic() - started) * 1000, 1))
    return size


async def at_stop(refresher: Refresher) -> None:
    """Keep the served catalog as the gateway stops, unless it is kept already. What only
    later builds need is let go first: packing takes its room (see `pack`)."""
    refresher.builder.search.halt()  # not asked again: an update under way takes the GIL
    snapshot = refresher.snapshot
    if not (refresher.keeps and refresher.config.gateway.keep_catalog) or snapshot is None:
        return
    if snapshot is refresher.kept:
        return
    building = refresher.building
    if building is not None:  # a build cancelled by the stop ends first: it uses the builder
        await asyncio.wait([building], timeout=STOP_DEADLINE)
        if not building.done():
            return
        if not building.cancelled():
            building.exception()  # retrieved: its result, if any, is not served
    await asyncio.to_thread(release, None, refresher.builder)
    await keep(refresher, STOP_DEADLINE)


async def every_build(refresher: Refresher, unkept: asyncio.Event) -> None:
    """Keep each new catalog, at most every `keep_catalog_every` (when it is set)."""
    while True:
        await unkept.wait()
        unkept.clear()
        every = refresher.config.gateway.keep_catalog_every
        if every and refresher.keeps and refresher.config.gateway.keep_catalog:
            await keep(refresher)
            await asyncio.sleep(every)
