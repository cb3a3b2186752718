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
from typing import Any

import aiohttp
import structlog

from gateway.catalog import Admission, Origin, ViewCatalog, build_view
from gateway.config import DEFAULT_VIEW, FederationConfig, UpstreamSettings
from gateway.entry import Entry, format_timestamp
from gateway.errors import StateError, UpstreamError
from gateway.merge import Merged, Source, merge
from gateway.state import Saved, load, save
from gateway.upstream import Batch, FileStamp, RegistryClient, file_stamp, read_file
from gateway.verify import Check, Verifier
from gateway.view import Lookup, ViewPolicy, no_lookup

log = structlog.get_logger("gateway.refresher")

# Incremental polls ask for a little more than strictly needed: entries updated in the same
# instant as the newest one seen must not be missed. Re-applying an entry is harmless.
_OVERLAP = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the gateway serves right now: one catalog per view."""

    views: dict[str, ViewCatalog]
    built_at: datetime
    merged: Merged = field(default_factory=Merged)
    hidden: dict[str, dict[str, int]] = field(default_factory=dict)  # view -> reason -> count
    next_change: datetime | None = None  # when the first held-back version comes of age
    pending: frozenset[Check] = frozenset()  # mirror checks to run, then rebuild


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


def view_policies(config: FederationConfig) -> list[ViewPolicy]:
    """The default view (policy.yaml alone), then each configured view."""
    policies = [ViewPolicy.of(DEFAULT_VIEW, config.policy, None, config.mirrors)]
    for name, settings in config.views.items():
        policies.append(ViewPolicy.of(name, config.policy, settings, config.mirrors))
    return policies


def build_snapshot(
    config: FederationConfig,
    sources: list[Source],
    origins: dict[str, Origin],
    now: datetime | None = None,
    lookup: Lookup = no_lookup,
) -> Snapshot:
    """Merge every upstream's data, decide and build each view (pure: run it off the loop)."""
    now = now or datetime.now(UTC)
    merged: Merged = merge(sources)
    namespace = config.gateway.meta_namespace
    views: dict[str, ViewCatalog] = {}
    hidden: dict[str, dict[str, int]] = {}
    held: list[datetime] = []
    pending: set[Check] = set()
    for policy in view_policies(config):
        counts: dict[str, int] = {}

        def admit(
            upstream: str,
            entry: Entry,
            policy: ViewPolicy = policy,
            counts: dict[str, int] = counts,
        ) -> Admission | None:
            decision = policy.decide(upstream, entry, now, lookup)
            pending.update(decision.pending)
            if not decision.served or decision.server is None:
                counts[decision.reason] = counts.get(decision.reason, 0) + 1
                if decision.held_until is not None:
                    held.append(decision.held_until)
                return None
            extra: dict[str, Any] = {"admittedBy": list(decision.rules)}
            if decision.packages:
                extra["packages"] = decision.packages
            return decision.server, extra

        views[policy.name] = build_view(policy.name, merged, origins, namespace, admit)
        hidden[policy.name] = counts
    return Snapshot(
        views=views,
        built_at=now,
        merged=merged,
        hidden=hidden,
        next_change=min(held) if held else None,
        pending=frozenset(pending),
    )


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
        self._cooldown: asyncio.TimerHandle | None = None
        self._background = False
        self.reload_error: str | None = None  # the last refused config, until one is accepted
        self.verifier = Verifier(config.mirrors.verify, session)
        self._verifying: asyncio.Task[int] | None = None

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
        self._background = background
        self._start_tasks()

    def _start_tasks(self) -> None:
        if not self._background:
            return
        self._tasks.append(asyncio.create_task(self._build_loop(), name="catalog-builder"))
        if any(policy.verify_mode != "off" for policy in view_policies(self.config)):
            self._tasks.append(asyncio.create_task(self._reverify_loop(), name="reverify"))
        for state in self.states:
            self._tasks.append(
                asyncio.create_task(self._sync_loop(state), name=f"sync-{state.name}")
            )

    async def apply(self, config: FederationConfig) -> None:
        """Swap in a new, already validated config: keep each surviving upstream's data,
        restore new upstreams from state, restart syncing, and rebuild every view."""
        await self._stop_tasks()
        old = {state.name: state for state in self.states}
        states = []
        for settings in config.gateway.upstreams:
            state = old.get(settings.name)
            if state is None:
                state = UpstreamState(settings)
                self.config = config
                await self._restore(state)
            elif state.settings != settings:
                state.settings = settings
                state.stamp = None  # re-read files, and walk registries in full:
                state.last_full_sync = None  # include/exclude or the URL may have changed
            states.append(state)
        self.config = config
        self.states = states
        if config.mirrors.verify != self.verifier.settings:
            self.verifier = Verifier(config.mirrors.verify, self.session)
        self._start_tasks()
        await self.rebuild_now()

    async def stop(self) -> None:
        self._schedule_cooldown_rebuild(None)
        if self._verifying is not None:
            self._verifying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._verifying
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
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
        """Sync every upstream now, concurrently, then rebuild: on return, the served snapshot
        reflects this sync (whatever the background builder did meanwhile)."""
        await asyncio.gather(*(self.sync(state) for state in self.states))
        self._dirty.clear()
        await self.rebuild_now()

    async def rebuild_now(self) -> Snapshot:
        started = time.monotonic()
        sources = [Source(s.name, list(s.entries.values()), s.settings.owns) for s in self.states]
        origins = {s.name: Origin(s.name, s.synced_at) for s in self.states}
        snapshot = await asyncio.to_thread(
            build_snapshot, self.config, sources, origins, None, self.verifier.lookup
        )
        self.snapshot = snapshot
        self._built.set()
        self._schedule_cooldown_rebuild(snapshot.next_change)
        if snapshot.pending and self._background:
            self._start_verification(snapshot.pending)
        log.info(
            "catalog_swapped",
            views={name: len(view) for name, view in snapshot.views.items()},
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return snapshot

    def _start_verification(self, checks: frozenset[Check]) -> None:
        if self._verifying is not None and not self._verifying.done():
            return  # the running round's rebuild will collect what is still pending
        self._verifying = asyncio.create_task(self.verify(checks), name="mirror-verification")

    async def verify(self, checks: frozenset[Check] | None = None) -> int:
        """Ask the mirrors what the snapshot still needs to know; rebuild when answers came."""
        if checks is None:
            checks = self.snapshot.pending if self.snapshot else frozenset()
        fetched = await self.verifier.run(checks)
        log.info("mirrors_verified", checks=len(checks), fetched=fetched)
        if fetched:
            self._dirty.set()
        return fetched

    def _schedule_cooldown_rebuild(self, when: datetime | None) -> None:
        """Versions held back by `min_age` appear by themselves once old enough."""
        if self._cooldown is not None:
            self._cooldown.cancel()
            self._cooldown = None
        if when is None:
            return
        delay = max((when - datetime.now(UTC)).total_seconds(), 0.0) + 0.001
        self._cooldown = asyncio.get_running_loop().call_later(delay, self._dirty.set)

    async def _reverify_loop(self) -> None:
        """Results age out after `ttl`: a rebuild then finds them pending and asks again."""
        while True:
            await asyncio.sleep(self.config.mirrors.verify.ttl)
            self._dirty.set()

    async def _build_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if all(state.settled for state in self.states):
                await self.rebuild_now()
