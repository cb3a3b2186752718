"""The gateway's state as one frozen value: what the refresher publishes (`Refresher.status`),
and what `/admin/status`, `/metrics` and the operators' page read. Nothing here reaches back
into a feed, a breaker or a snapshot: a status is a copy, taken at one moment.

`to_json` is `/admin/status` exactly (users script against it); figures that depend on the
time they are read at (data age, past `max_stale`, the last day's syncs) are worked out there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway import __version__, compiled
from gateway.config import DEFAULT_VIEW, redact_url
from gateway.entry import format_timestamp
from gateway.feed import beyond_max_stale, data_age

if TYPE_CHECKING:
    from gateway.advisories import FeedState
    from gateway.feed import Feed
    from gateway.refresher import Refresher
    from gateway.snapshot import Snapshot

HISTORY = timedelta(days=1)  # of syncs, in /admin/status (the operators' page draws it)
BREAKER_STATES = ("closed", "open", "half-open")

Json = dict[str, object]


def _time(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment else None


@dataclass(frozen=True, slots=True)
class HeldDropStatus:
    before: int
    after: int
    since: datetime


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """One upstream: its source, its data, its syncs and its breaker."""

    name: str
    source: str  # a URL with its credentials redacted, or a file's path
    optional: bool
    has_data: bool  # from state or a sync: what readiness waits for
    full_synced_at: datetime | None
    sync_position: datetime | None  # incremental polls ask from here
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    data_synced_at: datetime | None
    entries: int
    skipped_last_sync: int
    skipped_total: int
    failures_total: int
    held_total: int
    last_duration: float | None  # seconds
    breaker_state: str
    breaker_failures: int
    stale_since: datetime | None  # the first failure since the last success
    max_stale: float  # seconds
    held_drop: HeldDropStatus | None
    history: tuple[tuple[datetime, float, bool], ...]  # (finished at, seconds, succeeded)

    @classmethod
    def of(cls, feed: Feed, source: str) -> UpstreamStatus:
        held = feed.held
        return cls(
            feed.name, source, feed.settings.optional, feed.has_data, feed.full_synced_at,
            feed.synced_up_to, feed.last_success, feed.last_error, feed.last_error_at,
            feed.synced_at, len(feed.entries), feed.skipped, feed.skipped_total,
            feed.failures_total, feed.held_total, feed.last_duration, feed.breaker.state,
            feed.breaker.failures, feed.failing_since, feed.settings.max_stale,
            HeldDropStatus(held.before, held.after, held.since) if held else None,
            tuple(feed.history),
        )  # fmt: skip

    @property
    def stale(self) -> bool:
        """The most recent sync failed (or the breaker stops syncs): data may be out of date."""
        return self.stale_since is not None

    def data_age(self, now: datetime) -> float | None:
        return data_age(self.last_success, self.data_synced_at, now)

    def beyond_max_stale(self, now: datetime) -> bool:
        return beyond_max_stale(self.stale, self.data_age(now), self.max_stale)

    def to_json(self, now: datetime) -> Json:
        age = self.data_age(now)
        held = self.held_drop
        return {
            "name": self.name,
            "source": self.source,
            "optional": self.optional,
            "hasData": self.has_data,
            "fullSyncAt": _time(self.full_synced_at),
            "syncPosition": _time(self.sync_position),
            "lastSuccess": _time(self.last_success),
            "lastError": self.last_error,
            "lastErrorAt": _time(self.last_error_at),
            "dataSyncedAt": _time(self.data_synced_at),
            "ageSeconds": round(age, 1) if age is not None else None,
            "entries": self.entries,
            "skippedLastSync": self.skipped_last_sync,
            "skippedTotal": self.skipped_total,
            "failuresTotal": self.failures_total,
            "lastDurationMs": round(self.last_duration * 1000, 1)
            if self.last_duration is not None
            else None,
            "breaker": {"state": self.breaker_state, "failures": self.breaker_failures},
            "stale": self.stale,
            "staleSince": _time(self.stale_since),
            "beyondMaxStale": self.beyond_max_stale(now),
            "heldDrop": {"before": held.before, "after": held.after, "since": _time(held.since)}
            if held
            else None,
            # [finished at, milliseconds, succeeded] of each sync in the last day
            "history": [
                [_time(at), round(seconds * 1000, 1), ok]
                for at, seconds, ok in self.history
                if now - at <= HISTORY
            ],
        }


@dataclass(frozen=True, slots=True)
class ViewStatus:
    name: str
    entries: int  # versions served, deleted ones left out
    hidden: tuple[tuple[str, int], ...]  # versions not served, by reason
    # served versions by what the advisory feeds say (present, absent, unknown; with feeds)
    advisories: tuple[tuple[str, int], ...] = ()
    # served versions by signal and state: ((signal, state), count)
    signals: tuple[tuple[tuple[str, str], int], ...] = ()

    def to_json(self) -> Json:
        view: Json = {"name": self.name, "entries": self.entries, "hidden": dict(self.hidden)}
        if self.advisories:
            view["advisories"] = dict(self.advisories)
        if self.signals:
            signals: dict[str, dict[str, int]] = {}
            for (signal, state), count in self.signals:
                signals.setdefault(signal, {})[state] = count
            view["signals"] = signals
        return view


@dataclass(frozen=True, slots=True)
class SearchStatus:
    """Whether searches are answered from the index yet (they scan until it catches up with
    a build), and its size."""

    indexed: bool
    size: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, snapshot: Snapshot | None, view: str) -> SearchStatus:
        catalog = snapshot.views.get(view) if snapshot is not None else None
        if catalog is None or catalog.search is None:
            return cls(False)
        return cls(catalog.search.covers(catalog.token), tuple(catalog.search.size().items()))

    def to_json(self) -> Json:
        return {"indexed": self.indexed, **dict(self.size)}


@dataclass(frozen=True, slots=True)
class AdvisoryFeedStatus:
    """One advisory feed (trust.yaml): the data in use, and how its last read went."""

    name: str
    file: str
    ecosystems: tuple[str, ...]
    loaded_at: datetime | None  # when the data in use was read (None: never)
    records: int
    packages: int  # distinct packages some advisory names
    skipped: tuple[tuple[str, int], ...]  # malformed records in the data in use, by reason
    checked_at: datetime | None
    last_error: str | None
    failing_since: datetime | None

    @classmethod
    def of(cls, state: FeedState) -> AdvisoryFeedStatus:
        data = state.advisories
        return cls(
            state.settings.name,
            redact_url(state.settings.url) if state.settings.url else str(state.settings.file),
            tuple(state.settings.ecosystems),
            state.loaded_at, data.records if data else 0, len(data.packages) if data else 0,
            tuple(state.skipped.items()), state.checked_at, state.last_error, state.failing_since,
        )  # fmt: skip

    def to_json(self, now: datetime) -> Json:
        age = round((now - self.loaded_at).total_seconds(), 1) if self.loaded_at else None
        return {
            "name": self.name, "file": self.file, "ecosystems": list(self.ecosystems),
            "loadedAt": _time(self.loaded_at), "ageSeconds": age,
            "records": self.records, "packages": self.packages, "skipped": dict(self.skipped),
            "checkedAt": _time(self.checked_at), "lastError": self.last_error,
            "failingSince": _time(self.failing_since),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Everything an operator asks first: is each upstream healthy, what does each view serve."""

    version: str
    compiled: bool  # whether the snapshot build runs compiled (setup.py)
    ready: bool
    awaiting: tuple[str, ...]  # required upstreams with no data yet
    snapshot_built_at: datetime | None
    build_seconds: float | None  # the last build's
    config_directory: str
    reload_error: str | None  # the last refused config, until one is accepted
    upstreams: tuple[UpstreamStatus, ...]
    views: tuple[ViewStatus, ...]
    verification: tuple[tuple[str, int], ...]  # served packages by mirror check result
    search: SearchStatus
    advisories: tuple[AdvisoryFeedStatus, ...] = ()
    syncs: bool = True  # False: it serves another replica's catalogs (`replicas`)

    def to_json(self, now: datetime) -> Json:
        return {
            "version": self.version,
            "compiled": self.compiled,
            "ready": self.ready,
            "awaiting": list(self.awaiting),
            "snapshotBuiltAt": _time(self.snapshot_built_at),
            "snapshotBuildMs": round(self.build_seconds * 1000, 1)
            if self.build_seconds is not None
            else None,
            "config": {"directory": self.config_directory, "reloadError": self.reload_error},
            "upstreams": [upstream.to_json(now) for upstream in self.upstreams],
            "views": [view.to_json() for view in self.views],
            "verification": dict(self.verification),
            "search": self.search.to_json(),
            "advisoryFeeds": [feed.to_json(now) for feed in self.advisories],
            "syncs": self.syncs,
        }


def gateway_status(refresher: Refresher) -> GatewayStatus:
    """What this refresher publishes to admin, metrics and pages: a frozen copy of its
    state now (see `gateway.status`)."""
    snapshot = refresher.snapshot
    upstreams = upstream_statuses(refresher)
    views: tuple[ViewStatus, ...] = ()
    if snapshot is not None:
        hidden = snapshot.hidden
        views = tuple(
            ViewStatus(
                name,
                len(view),
                tuple(hidden.get(name, {}).items()),
                tuple(refresher.advisory_states.get(name, {}).items()),
                tuple(snapshot.signals.get(name, {}).items()),
            )
            for name, view in snapshot.views.items()
        )
    return GatewayStatus(
        __version__, compiled(), snapshot is not None, tuple(refresher.awaited()),
        snapshot.built_at if snapshot else None,
        refresher.build_durations[-1] if refresher.build_durations else None,
        str(refresher.config.directory), refresher.reload_error, upstreams, views,
        tuple(snapshot.verification.items()) if snapshot else (),
        SearchStatus.of(snapshot, DEFAULT_VIEW),
        tuple(AdvisoryFeedStatus.of(state) for state in refresher.advisories.states),
        refresher.syncing or refresher.follows,
    )  # fmt: skip


def upstream_statuses(refresher: Refresher) -> tuple[UpstreamStatus, ...]:
    """Its upstreams now; a worker that follows another's builds (`sharing`) tells them as
    that worker last said, once it has."""
    shared = refresher.shared
    if shared is not None and not shared.builds:
        told = shared.upstreams()
        if told is not None:
            return told
    return tuple(
        UpstreamStatus.of(f, redact_url(f.settings.url) if f.settings.url else str(f.settings.file))
        for f in refresher.feeds
    )
