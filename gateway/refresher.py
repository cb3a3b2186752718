"""Keeps each upstream's last good data current and swaps in new catalog snapshots.

Each upstream syncs in its own task, isolated from the others: a failure keeps that upstream's
last good data. When any upstream's data changes, one builder task rebuilds the snapshot off
the event loop and replaces the served one with a single assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog

from gateway.catalog import Origin, ViewCatalog, build_view
from gateway.config import FederationConfig, UpstreamSettings
from gateway.entry import Entry, format_timestamp
from gateway.errors import StateError, UpstreamError
from gateway.merge import Merged, Source, merge
from gateway.state import Saved, load, save
from gateway.upstream import Batch, FileStamp, RegistryClient, file_stamp, read_file

log = structlog.get_logger("gateway.refresher")

DEFAULT_VIEW = "default"
# Incremental polls ask for a little more than strictly needed: entries updated in the same
# instant as the newest one seen must not be missed. Re-applying an entry is harmless.
_OVERLAP = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the gateway serves right now: one catalog per view."""

    views: dict[str, ViewCatalog]
    built_at: datetime


@dataclass(slots=True)
class UpstreamState:
    """One upstream's last good data and sync history."""

    settings: UpstreamSettings
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    synced_at: datetime | None = None  # when the served data was fetched
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    settled: bool = False  # has data, or has tried once
    last_full_sync: float | None = None
    stamp: FileStamp | None = None
    skipped: int = 0

    @property
    def name(self) -> str:
        return self.settings.name

    def high_water(self) -> str | None:
        if not self.entries:
            return None
        newest = max(entry.updated_at for entry in self.entries.values())
        return format_timestamp(newest - _OVERLAP)


def build_snapshot(
    config: FederationConfig, sources: list[Source], origins: dict[str, Origin]
) -> Snapshot:
    """Merge every upstream's data and build each view (pure and synchronous: run it off-loop)."""
    merged: Merged = merge(sources)
    namespace = config.gateway.meta_namespace
    views = {DEFAULT_VIEW: build_view(DEFAULT_VIEW, merged, origins, namespace)}
    return Snapshot(views=views, built_at=datetime.now(UTC))


class Refresher:
    """Owns the sync tasks and the current snapshot of one gateway process."""

    def __init__(self, config: FederationConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.states = [UpstreamState(settings) for settings in config.gateway.upstreams]
        self.snapshot: Snapshot | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._built = asyncio.Event()

    def state(self, name: str) -> UpstreamState:
        for state in self.states:
            if state.name == name:
                return state
        raise KeyError(name)

    async def start(self, *, background: bool = True) -> None:
        """Load persisted data, serve it at once if every upstream has some, start syncing."""
        for state in self.states:
            await self._restore(state)
        if all(state.settled for state in self.states):
            await self.rebuild_now()
        if not background:
            return
        self._tasks.append(asyncio.create_task(self._build_loop(), name="catalog-builder"))
        for state in self.states:
            self._tasks.append(
                asyncio.create_task(self._sync_loop(state), name=f"sync-{state.name}")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def wait_ready(self) -> None:
        await self._built.wait()

    async def _restore(self, state: UpstreamState) -> None:
        state_dir = self.config.gateway.state_dir
        try:
            saved = await asyncio.to_thread(load, state_dir, state.name)
        except StateError as exc:
            log.error("state_file_corrupt", upstream=state.name, path=exc.path, reason=exc.reason)
            return
        if saved is None:
            return
        state.entries = {entry.key: entry for entry in saved.entries}
        state.synced_at = saved.synced_at
        state.settled = True
        log.info("state_loaded", upstream=state.name, entries=len(saved.entries))

    async def _sync_loop(self, state: UpstreamState) -> None:
        while True:
            await self.sync(state)
            await asyncio.sleep(state.settings.refresh)

    async def sync(self, state: UpstreamState) -> bool:
        """One sync of one upstream; True when its data changed. Never raises UpstreamError."""
        started = time.monotonic()
        settings = state.settings
        try:
            if settings.file is not None:
                mode, changed, batch = await self._sync_file(state)
            else:
                mode, changed, batch = await self._sync_registry(state, started)
        except UpstreamError as exc:
            state.last_error = str(exc)
            state.last_error_at = datetime.now(UTC)
            log.warning(
                "upstream_sync_failed",
                upstream=state.name,
                error=exc.reason,
                kind=type(exc).__name__,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            if not state.settled:
                state.settled = True
                self._dirty.set()
            return False
        now = datetime.now(UTC)
        state.last_success = now
        state.last_error = None
        if batch is not None:
            state.skipped = len(batch.skipped)
            for skipped in batch.skipped[:20]:
                log.warning(
                    "upstream_entry_skipped",
                    upstream=state.name,
                    server=skipped.name,
                    reason=skipped.reason,
                )
        if changed:
            state.synced_at = now
            await asyncio.to_thread(
                save,
                self.config.gateway.state_dir,
                Saved(state.name, now, list(state.entries.values())),
            )
        if changed or not state.settled:
            state.settled = True
            self._dirty.set()
        event = log.info if changed or batch is not None else log.debug
        event(
            "upstream_synced",
            upstream=state.name,
            mode=mode,
            changed=changed,
            entries=len(state.entries),
            received=len(batch.entries) if batch else 0,
            skipped=len(batch.skipped) if batch else 0,
            pages=batch.pages if batch else 0,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return changed

    async def _sync_file(self, state: UpstreamState) -> tuple[str, bool, Batch | None]:
        assert state.settings.file is not None
        stamp = file_stamp(state.settings.file)
        if stamp is not None and stamp == state.stamp:
            return "file", False, None
        batch = await asyncio.to_thread(read_file, state.settings)
        state.stamp = stamp
        entries = {entry.key: entry for entry in batch.entries}
        changed = entries != state.entries
        state.entries = entries
        return "file", changed, batch

    async def _sync_registry(
        self, state: UpstreamState, now: float
    ) -> tuple[str, bool, Batch | None]:
        client = RegistryClient(state.settings, self.session)
        full = (
            state.last_full_sync is None
            or not state.entries
            or now - state.last_full_sync >= state.settings.full_sync
        )
        if full:
            batch = await client.walk()
            entries = {entry.key: entry for entry in batch.entries}
            state.last_full_sync = now
            changed = entries != state.entries
            state.entries = entries
            return "full", changed, batch
        batch = await client.walk(updated_since=state.high_water())
        updated = [e for e in batch.entries if state.entries.get(e.key) != e]
        if updated:
            # A new dict, never a mutation: a snapshot build may be reading the old one.
            state.entries = {**state.entries, **{entry.key: entry for entry in updated}}
        return "incremental", bool(updated), batch

    async def sync_all(self) -> None:
        """Sync every upstream now, concurrently, then rebuild if anything changed."""
        await asyncio.gather(*(self.sync(state) for state in self.states))
        if self._dirty.is_set():
            self._dirty.clear()
            await self.rebuild_now()

    async def rebuild_now(self) -> Snapshot:
        started = time.monotonic()
        sources = [Source(s.name, list(s.entries.values()), s.settings.owns) for s in self.states]
        origins = {s.name: Origin(s.name, s.synced_at) for s in self.states}
        snapshot = await asyncio.to_thread(build_snapshot, self.config, sources, origins)
        self.snapshot = snapshot
        self._built.set()
        log.info(
            "catalog_swapped",
            views={name: len(view) for name, view in snapshot.views.items()},
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return snapshot

    async def _build_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if all(state.settled for state in self.states):
                await self.rebuild_now()
