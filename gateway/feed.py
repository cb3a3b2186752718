"""One upstream's feed: its last good data, its health, and how one sync of it goes.

A sync replaces the data only when it completed: a walk that fails halfway, runs past its
deadline, or suddenly drops most entries (held until confirmed) leaves the last good data served.

Where syncing stands is kept with the data (see `state`): when the last full walk began, and
the position incremental polls ask from: the newest `updatedAt` seen, but never later than the
time of the fetch (an entry dated in the future must not make later polls skip what changes
meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import structlog

from gateway.bounded import FileStamp
from gateway.breaker import Breaker
from gateway.catalog import Origin
from gateway.config import UpstreamSettings
from gateway.entry import Entry, format_timestamp, newest_update
from gateway.errors import StateError, UpstreamError, UpstreamInvalid, UpstreamUnavailable
from gateway.state import Saved, load, save
from gateway.upstream import Batch, RegistryClient, read_changed_file, read_file

log = structlog.get_logger("gateway.feed")

Key = tuple[str, str]
# Incremental polls ask for a little more than strictly needed: entries updated in the same
# instant as the newest one seen must not be missed. Re-applying an entry is harmless.
_OVERLAP = timedelta(seconds=1)


def active_count(entries: dict[Key, Entry]) -> int:
    return sum(1 for entry in entries.values() if entry.status != "deleted")


def position(entries: Iterable[Entry], fetched_at: datetime) -> datetime | None:
    """Where incremental polls go on from: the newest `updatedAt`, at most the fetch time."""
    newest = newest_update(entries)
    return None if newest is None else min(newest, fetched_at)


# What a feed fetches, of its settings: a change makes the next sync read or walk in full.
_SOURCE = {"url", "file", "api", "page_size", "headers", "include", "exclude", "max_entry_bytes"}


@dataclass(slots=True)
class HeldDrop:
    """A sync that would remove too many entries at once, waiting for a repeat or an operator."""

    entries: dict[Key, Entry]
    before: int
    after: int
    since: datetime


def data_age(
    last_success: datetime | None, synced_at: datetime | None, now: datetime
) -> float | None:
    """Seconds since the data was last known good: the last successful sync, or its fetch."""
    known = last_success or synced_at
    return (now - known).total_seconds() if known else None


def beyond_max_stale(stale: bool, age: float | None, max_stale: float) -> bool:
    """Stale, and for longer than `max_stale` seconds."""
    return stale and age is not None and age > max_stale


@dataclass(slots=True)
class Feed:
    """An upstream's last good data and sync history (mutated only on the event loop)."""

    settings: UpstreamSettings
    entries: dict[Key, Entry] = field(default_factory=dict)
    synced_at: datetime | None = None  # when the served data was fetched
    synced_up_to: datetime | None = None  # the sync position (see `position`)
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failing_since: datetime | None = None  # first failure since the last success
    settled: bool = False  # has data, or has tried once
    has_data: bool = False  # from state or a completed sync: what readiness waits for
    full_synced_at: datetime | None = None  # when the last full walk began
    stamp: FileStamp | None = None
    skipped: int = 0  # in the last sync
    skipped_total: int = 0
    failures_total: int = 0
    attempts_total: int = 0  # syncs that ran (not skipped by the breaker)
    last_duration: float | None = None
    held: HeldDrop | None = None
    held_total: int = 0
    # the entries not deleted and the newest updatedAt of one `entries` dict (never mutated)
    _summed: tuple[dict[Key, Entry], int, datetime | None] | None = field(
        default=None, init=False, repr=False
    )
    # (finished at, seconds, succeeded) of recent syncs: a day of history at a 1-minute refresh
    history: deque[tuple[datetime, float, bool]] = field(default_factory=lambda: deque(maxlen=1500))
    breaker: Breaker = field(init=False)

    def __post_init__(self) -> None:
        self.breaker = Breaker(self.settings.breaker)

    @property
    def name(self) -> str:
        return self.settings.name

    def configure(self, settings: UpstreamSettings) -> None:
        """A reloaded config's settings: breaker settings apply at once; a change to what is
        fetched makes the next sync read the file again, or walk the registry in full."""
        if settings == self.settings:
            return
        if settings.model_dump(include=_SOURCE) != self.settings.model_dump(include=_SOURCE):
            self.stamp = None
            self.full_synced_at = None
        self.settings = settings
        self.breaker.configure(settings.breaker)

    # -- health ------------------------------------------------------------------------------

    def stale(self) -> bool:
        """The most recent sync failed (or the breaker stops syncs): data may be out of date."""
        return self.failing_since is not None

    def data_age(self, now: datetime) -> float | None:
        return data_age(self.last_success, self.synced_at, now)

    def beyond_max_stale(self, now: datetime) -> bool:
        return beyond_max_stale(self.stale(), self.data_age(now), self.settings.max_stale)

    def high_water(self) -> str | None:
        if self.synced_up_to is None:
            return None
        return format_timestamp(self.synced_up_to - _OVERLAP)

    # -- persistence --------------------------------------------------------------------------

    def origin(self, now: datetime) -> Origin:
        """What its entries say of it (each entry's gateway `_meta`), as of now."""
        beyond = self.beyond_max_stale(now)
        return Origin(self.name, self.synced_up_to, stale_since=self.failing_since,
                      beyond_max_stale=beyond,
                      hidden=beyond and self.settings.on_stale == "hide")  # fmt: skip

    async def restore(self, state_dir: Path) -> None:
        try:
            saved = await asyncio.to_thread(load, state_dir, self.name)
        except StateError as exc:
            log.error("state_file_corrupt", upstream=self.name, path=exc.path, reason=exc.reason)
            return
        if saved is None:
            return
        self.entries = {entry.key: entry for entry in saved.entries}
        self.synced_at = saved.synced_at
        self.synced_up_to = saved.position or position(saved.entries, saved.synced_at)
        self.full_synced_at = saved.full_synced_at
        self.settled = self.has_data = True
        log.info("state_loaded", upstream=self.name, entries=len(saved.entries))

    # -- syncing ------------------------------------------------------------------------------

    async def sync(
        self, session: aiohttp.ClientSession, state_dir: Path, probe: bool = False
    ) -> bool:
        """One sync; True when the served data changed. Never raises UpstreamError. A probe
        (an operator's request) goes ahead while the breaker is open."""
        started = time.monotonic()
        if not self.breaker.allow(started, probe):
            log.debug("upstream_sync_skipped", upstream=self.name, breaker=self.breaker.state)
            return False
        self.attempts_total += 1
        fetched_at = datetime.now(UTC)
        try:
            async with asyncio.timeout(self.settings.sync_deadline):
                if self.settings.file is not None:
                    mode, entries, batch = await self._read_file()
                else:
                    mode, entries, batch = await self._walk(session, fetched_at)
        except (UpstreamError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                exc = UpstreamUnavailable(self.name, "sync deadline exceeded")
            self._failed(exc, started)
            return False
        except Exception as exc:  # a bug or an unforeseen answer: one failed sync, not a dead loop
            log.exception("upstream_sync_crashed", upstream=self.name)
            self._failed(UpstreamInvalid(self.name, f"unexpected {type(exc).__name__}"), started)
            return False
        now = datetime.now(UTC)
        if batch is not None:
            self.skipped = batch.skipped
            self.skipped_total += batch.skipped
            if batch.skipped:  # one event per sync, however many: a page can hold a million
                log.warning(
                    "upstream_entries_skipped", upstream=self.name, skipped=batch.skipped,
                    reasons=dict(batch.reasons), first=batch.examples,
                )  # fmt: skip
        changed = False
        if entries is not None:
            # Linear passes over every entry: in a worker thread, so requests keep flowing.
            prepare = self._prepare_changes if mode == "incremental" else self._prepare
            fetched, held = entries, None
            while held is not self.entries:  # changed meanwhile (a confirmed drop): again
                held = self.entries
                entries, counts, newest = await asyncio.to_thread(prepare, held, fetched)
        if entries is not None:  # changed (compared in the thread: it takes a pass)
            if self._hold(counts, entries, now):
                entries = None
            else:
                self.entries = entries
                self.synced_up_to = None if newest is None else min(newest, fetched_at)
                self.held = None
                changed = True
        self._succeeded(now, started)
        if changed or self.synced_at is None:
            self.synced_at = now
        if changed or mode == "full":  # a full walk moves the time of the next one: keep it
            await asyncio.to_thread(save, state_dir, self._saved())
        self.settled = self.has_data = True  # last: a build waiting for feeds sees this one
        event = log.info if batch is not None else log.debug
        event(
            "upstream_synced",
            upstream=self.name,
            mode=mode,
            changed=changed,
            entries=len(self.entries),
            received=len(batch.entries) if batch else 0,
            skipped=batch.skipped if batch else 0,
            pages=batch.pages if batch else 0,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return changed

    def _prepare(
        self, old: dict[Key, Entry], entries: dict[Key, Entry]
    ) -> tuple[dict[Key, Entry] | None, tuple[int, int], datetime | None]:
        """Against the entries held (`old`): unchanged entries keep their old objects
        (rebuilds recognise them and reuse work), or None when every entry is unchanged; the
        entries not deleted, before and after, for the mass-drop guard; the newest updatedAt."""
        kept = {}
        unchanged = 0
        for key, entry in entries.items():
            previous = old.get(key)
            if previous is not None and (previous is entry or previous == entry):
                kept[key] = previous
                unchanged += 1
            else:
                kept[key] = entry
        before, newest = self._summary(old)
        if unchanged == len(kept) == len(old):  # the very entries it has
            return None, (before, before), newest
        after, newest = active_count(kept), newest_update(kept.values())
        self._summed = (kept, after, newest)
        return kept, (before, after), newest

    def _prepare_changes(
        self, old: dict[Key, Entry], updated: dict[Key, Entry]
    ) -> tuple[dict[Key, Entry], tuple[int, int], datetime | None]:
        """`_prepare` of an incremental poll: the entries it brought (each differs from the
        one it replaces) over the others, counted in proportion to them."""
        before, newest = self._summary(old)
        replaced = [entry for key in updated if (entry := old.get(key)) is not None]
        kept = {**old, **updated}
        if newest is not None and any(entry.updated_at >= newest for entry in replaced):
            newest = newest_update(kept.values())  # the newest replaced: counted anew
        else:
            newest = max(filter(None, (newest, newest_update(updated.values()))), default=None)
        after = before - active_count({e.key: e for e in replaced}) + active_count(updated)
        self._summed = (kept, after, newest)
        return kept, (before, after), newest

    def _summary(self, entries: dict[Key, Entry]) -> tuple[int, datetime | None]:
        """The entries not deleted and the newest updatedAt of `entries` (counted once)."""
        summed = self._summed
        if summed is None or summed[0] is not entries:
            newest = newest_update(entries.values())
            summed = self._summed = (entries, active_count(entries), newest)
        return summed[1], summed[2]

    def _succeeded(self, now: datetime, started: float) -> None:
        self.breaker.succeeded()
        self.last_success = now
        self.last_error = None
        self.failing_since = None
        self.last_duration = time.monotonic() - started
        self.history.append((now, self.last_duration, True))

    def _failed(self, exc: UpstreamError, started: float) -> None:
        now = datetime.now(UTC)
        self.breaker.failed(time.monotonic())
        self.last_error = str(exc)
        self.last_error_at = now
        self.failing_since = self.failing_since or now
        self.failures_total += 1
        self.settled = True
        self.last_duration = time.monotonic() - started
        self.history.append((now, self.last_duration, False))
        log.warning(
            "upstream_sync_failed",
            upstream=self.name,
            error=exc.reason,
            kind=type(exc).__name__,
            breaker=self.breaker.state,
            duration_ms=round(self.last_duration * 1000, 1),
        )

    def _hold(self, counts: tuple[int, int], entries: dict[Key, Entry], now: datetime) -> bool:
        """Hold a sync that removes more than `max_drop` of the entries, unless it repeats."""
        before, after = counts
        if before == 0 or after >= before * (1 - self.settings.max_drop):
            return False
        repeated = self.held is not None and abs(self.held.after - after) <= max(1, after // 20)
        if repeated:
            log.warning(
                "upstream_mass_drop_applied", upstream=self.name, before=before, after=after
            )
            return False
        self.held = HeldDrop(entries, before, after, now)
        self.held_total += 1
        log.warning("upstream_mass_drop_held", upstream=self.name, before=before, after=after)
        return True

    async def confirm_drop(self, state_dir: Path) -> bool:
        """An operator accepts the held data. False when nothing is held."""
        if self.held is None:
            return False
        held, self.held = self.held, None
        self.entries = held.entries
        self.synced_up_to = position(held.entries.values(), held.since)
        self.synced_at = datetime.now(UTC)
        await asyncio.to_thread(save, state_dir, self._saved())
        log.warning("upstream_mass_drop_confirmed", upstream=self.name, after=held.after)
        return True

    def _saved(self) -> Saved:
        assert self.synced_at is not None
        return Saved(
            self.name, self.synced_at, list(self.entries.values()), self.full_synced_at,
            self.synced_up_to,
        )  # fmt: skip

    async def _read_file(self) -> tuple[str, dict[Key, Entry] | None, Batch | None]:
        raw, stamp = await read_changed_file(self.settings, self.stamp)
        if raw is None:
            return "file", None, None
        batch = await asyncio.to_thread(read_file, self.settings, raw, stamp)
        self.stamp = stamp
        return "file", {entry.key: entry for entry in batch.entries}, batch

    async def _walk(
        self, session: aiohttp.ClientSession, now: datetime
    ) -> tuple[str, dict[Key, Entry] | None, Batch]:
        client = RegistryClient(self.settings, session)
        full = (
            self.full_synced_at is None
            or not self.entries
            or (now - self.full_synced_at).total_seconds() >= self.settings.full_sync
            or now < self.full_synced_at  # the clock went back
        )
        if full:
            batch = await client.walk()
            self.full_synced_at = now
            return "full", {entry.key: entry for entry in batch.entries}, batch
        batch = await client.walk(updated_since=self.high_water())
        updated = {e.key: e for e in batch.entries if self.entries.get(e.key) != e}
        # A new dict, never a mutation: a snapshot build may be reading the old one.
        return "incremental", (updated or None), batch  # over the others: `_prepare_changes`
