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

if TYPE_CHECKING:
    from gateway.refresher import Refresher

log = structlog.get_logger("gateway.refresher")


async def restore(refresher: Refresher) -> None:
    """Serve the catalog the last run kept, if this gateway and config built it."""
    if not refresher.config.gateway.snapshot_every:
        return
    started = time.monotonic()
    state_dir = refresher.config.gateway.state_dir
    try:
        restored = await asyncio.to_thread(kept.restore, state_dir, refresher.builder.fingerprint)
    except KeptForOther as exc:
        log.info("kept_catalog_ignored", path=exc.path, reason=exc.reason)
        return
    except StateError as exc:
        log.error("kept_catalog_corrupt", path=exc.path, reason=exc.reason)
        return
    if restored is None:
        return
    refresher.serve_first(restored)
    gc.freeze()  # long-lived, like every catalog (see `Refresher._rebuild`)
    log.info(
        "kept_catalog_served",
        views={name: len(view) for name, view in restored.views.items()},
        built_at=format_timestamp(restored.built_at),
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )


async def keep(refresher: Refresher) -> int | None:
    """Keep the served catalog for a restart; its size in bytes (None: nothing to keep, or
    it could not be written, which is logged). The catalog is held as read meanwhile: a swap
    does not release it under the writer, which stops if this is cancelled."""
    snapshot = refresher.snapshot
    if snapshot is None:
        return None
    started = time.monotonic()
    stop = threading.Event()
    with refresher.readers.reading(snapshot):
        writing = asyncio.ensure_future(
            asyncio.to_thread(kept.keep, refresher.config.gateway.state_dir, snapshot, stop)
        )
        try:
            size = await asyncio.shield(writing)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Stopped, OSError):
                await writing  # the writer has let go of the catalog
            raise
        except OSError as exc:
            log.warning("catalog_keep_failed", error=str(exc))
            return None
    log.info("catalog_kept", bytes=size, duration_ms=round((time.monotonic() - started) * 1000, 1))
    return size


async def every_build(refresher: Refresher, unkept: asyncio.Event) -> None:
    """Keep each new catalog for a restart, at most every `snapshot_every`."""
    while True:
        await unkept.wait()
        unkept.clear()
        every = refresher.config.gateway.snapshot_every
        if every:
            await keep(refresher)
            await asyncio.sleep(every)
