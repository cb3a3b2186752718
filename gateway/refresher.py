"""Keeps every upstream feed current and swaps in new catalog snapshots.

Each upstream syncs in its own task, isolated from the others: a failure keeps its last good
data. When any feed's data or health changes, one builder task rebuilds the snapshot off the
event loop and replaces the served one with a single assignment.

A replica is ready (serves its first catalog) once every upstream has data, from its state or
a completed sync; an upstream marked `optional` is not waited for. Until then nothing is
served: a catalog without an upstream's data would be wrong, not just smaller (a lower
upstream would serve names the missing one owns). Once serving, a replica stays ready: a
reload that adds an upstream is served without it until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from gateway import keeper
from gateway.advisories import Feeds
from gateway.build import Order
from gateway.config import FederationConfig
from gateway.errors import Awaited
from gateway.feed import Feed
from gateway.merge import Source
from gateway.readers import Readers
from gateway.released import release
from gateway.sharing import Shared
from gateway.snapshot import Builder, Snapshot, advisory_states, view_policies
from gateway.status import GatewayStatus, gateway_status, upstream_statuses
from gateway.triggers import Triggers, on_each
from gateway.unpack import Followed, searched, unindexed
from gateway.verify import Verifier, sources

log = structlog.get_logger("gateway.refresher")
READERS_WAIT = 10.0  # seconds a replaced catalog waits for the requests still reading it


class Refresher(Triggers):
    """Owns the feeds, the sync tasks and the current snapshot of one gateway process."""

    def __init__(self, config: FederationConfig, session: aiohttp.ClientSession,
                 keeps: bool = True, shared: Shared | None = None) -> None:  # fmt: skip
        self.config = config
        self.shared = shared  # of `serve --workers N`: one worker builds, the others follow
        self.keeps = keeps  # keeps its catalog for a restart (see `keeper`), if configured
        self.session = session
        self.feeds = [Feed(settings) for settings in config.gateway.upstreams]
        self.snapshot: Snapshot | None = None
        self.verifier = Verifier(config.mirrors.verify, session, config.trust)
        self.advisories = Feeds(config.trust, config.gateway.state_dir, session)
        self.builder = Builder(config)
        self._build_lock = asyncio.Lock()
        self.reload_error: str | None = None  # the last refused config, until one is accepted
        self.build_durations: list[float] = []  # seconds, the most recent builds
        self.sync_listeners: list[Callable[[Feed, bool], None]] = []  # (feed, succeeded)
        self.reload_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._built = asyncio.Event()
        self._unindexed = asyncio.Event()  # a swap the search index has not caught up with
        self._unkept = asyncio.Event()  # a build not yet kept for a restart (see `kept`)
        self._tasks: list[asyncio.Task[None]] = []
        self._cooldown: asyncio.TimerHandle | None = None
        self._verifying: asyncio.Task[int] | None = None
        self._background = False
        self._retired: Builder | None = None  # replaced by a reload: freed after the next swap
        # served versions per view by what the advisory feeds say, counted after each build
        self.advisory_states: dict[str, dict[str, int]] = {}
        self.readers = Readers()  # requests reading a snapshot across awaits
        self.kept: Snapshot | None = None  # the catalog on disk for a restart (see `keeper`)
        self.building: asyncio.Future[Snapshot] | None = None  # the last build's thread
        self._followed: list[Any] | None = None  # a following worker's search token, order
        self.reread: Callable[[], Awaitable[object]] | None = None  # its config, from its files
        self.built_listeners: list[Callable[[Snapshot], None]] = []  # after each own build
        # at each swap, before the catalog replaced is let go: (replaced, new)
        self.swap_listeners: list[Callable[[Snapshot, Snapshot], Awaitable[None]]] = []
        self.syncing = False  # its upstreams (not when it serves another replica's catalogs)

    def feed(self, name: str) -> Feed:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def follows(self) -> bool:
        """Whether another worker syncs and builds, and this one serves what it built."""
        return self.shared is not None and not self.shared.builds

    def awaiting(self) -> list[Awaited]:
        """The upstreams a replica waits for: required ones with no data yet, with their last
        errors (a following worker's: as the building worker last told them; a replica that
        serves the store's catalog waits for none)."""
        if not self.syncing and not self.follows and self.snapshot is not None:
            return []
        return [
            Awaited(upstream.name, upstream.last_error)
            for upstream in upstream_statuses(self)
            if not upstream.optional and not upstream.has_data
        ]

    def awaited(self) -> list[str]:
        return [awaited.upstream for awaited in self.awaiting()]  # their names

    def status(self) -> GatewayStatus:
        """What this refresher publishes to admin, metrics and pages: a frozen copy of its
        state now (see `gateway.status`)."""
        return gateway_status(self)

    def _may_build(self) -> bool:
        """The first catalog waits for every required upstream's data (see the docstring);
        an upstream that is optional is waited for only when every upstream is, and then
        only for its first attempt."""
        if self.snapshot is not None:
            return all(feed.settled for feed in self.feeds if not feed.settings.optional)
        if any(not feed.settings.optional for feed in self.feeds):
            return not self.awaited()
        return all(feed.settled for feed in self.feeds)

    async def start(self, *, background: bool = True) -> None:
        """Serve the kept catalog if there is one, load persisted data, build and serve it
        at once if every upstream has some, start syncing. A following worker only serves
        the catalog kept, then each one the building worker offers."""
        self.syncing = not self.follows
        await keeper.restore(self)
        if self.follows:
            self._background = background
            self._start_tasks()
            return
        await self.start_own(background)

    async def start_own(self, background: bool = True) -> None:
        """Load persisted data, build and serve it if every upstream has some, start syncing
        (after `start`, or when a replica stops following the store: see `replicas`)."""
        self.syncing = True
        for feed in self.feeds:
            await feed.restore(self.config.gateway.state_dir)
        # The first catalog already applies what the advisory feeds say (a feed that cannot
        # be read leaves its package types unknown until it can).
        await self.advisories.refresh(force=True)
        if self._may_build():
            await self.rebuild_now()
        self._background = background
        self._start_tasks()

    def index_in_background(self) -> None:
        """Bring the search index up to each catalog swapped in, in a task (one)."""
        if not any(task.get_name() == "search-indexer" for task in self._tasks):
            self._tasks.append(asyncio.create_task(self._index_loop(), name="search-indexer"))

    def _start_tasks(self) -> None:
        if not self._background:
            return
        self.index_in_background()
        if self.shared is not None and self.follows:  # serves what another worker builds
            follow = self.shared.follow(
                self._prepare, self.take, self._ready, lambda: self.snapshot
            )
            self._tasks.append(asyncio.create_task(follow))
            return
        self._tasks += [asyncio.create_task(self._build_loop(), name="catalog-builder"),
                        asyncio.create_task(keeper.every_build(self, self._unkept))]  # fmt: skip
        for feed in self.feeds:
            self._tasks.append(asyncio.create_task(self._sync_loop(feed), name=f"sync-{feed.name}"))
        asking = view_policies(self.config)  # views that check mirrors or read npm signals
        if any(policy.verify_mode != "off" or policy.signing for policy in asking):
            self._tasks.append(asyncio.create_task(self._reverify_loop(), name="reverify"))
        if self.advisories.states:
            self._tasks.append(asyncio.create_task(self._advisory_loop(), name="advisories"))

    async def stop(self) -> None:
        await self._halt()
        await keeper.at_stop(self)

    async def stop_own(self) -> None:
        """Stop syncing and building, and let go of the upstreams' data: a replica that goes
        back to serving the store's catalogs (see `replicas`). What it serves stays."""
        await self._halt()
        self.syncing = False
        self.feeds = [Feed(settings) for settings in self.config.gateway.upstreams]
        await asyncio.to_thread(release, None, self.builder)  # a later build starts afresh
        self.index_in_background()

    async def _halt(self) -> None:
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

    def serve_first(self, snapshot: Snapshot) -> None:
        """Serve a catalog from before the first build (the one the last run kept)."""
        self.snapshot = snapshot
        self._serving()

    def _serving(self) -> None:
        self._built.set()
        if self.shared is not None:  # the workers report ready once every one serves
            self.shared.note_serving()

    async def wait_ready(self) -> None:
        await self._built.wait()

    async def apply(self, config: FederationConfig) -> None:
        """Swap in a new, already validated config: keep each surviving upstream's data,
        restore new upstreams from state, restart syncing, and rebuild every view (a
        following worker: only the config, for the catalogs offered next)."""
        if self.follows:
            self.config, self.builder = config, self.builder.succeeded_by(config)
            return
        await self._stop_tasks()
        old = {feed.name: feed for feed in self.feeds}
        feeds = []
        for settings in config.gateway.upstreams:
            feed = old.get(settings.name)
            if feed is None:
                feed = Feed(settings)
                await feed.restore(config.gateway.state_dir)
            else:
                feed.configure(settings)
            feeds.append(feed)
        self.config, self.feeds = config, feeds
        self._retired = self.builder  # let go of after the next swap (its items serve until then)
        self.builder = self.builder.succeeded_by(config)
        verifier = self.verifier
        if config.mirrors.verify != verifier.settings or sources(config.trust) != verifier.sources:
            self.verifier = Verifier(config.mirrors.verify, self.session, config.trust)
        if config.trust != self.advisories.settings:
            self.advisories = Feeds(config.trust, config.gateway.state_dir, self.session)
            await self.advisories.refresh(force=True)
        self._start_tasks()
        if self.snapshot is not None or self._may_build():
            await self.rebuild_now()

    # -- syncing -----------------------------------------------------------------------------

    async def sync(self, feed: Feed, probe: bool = False) -> bool:
        """One sync of one feed; True when the snapshot needs a rebuild (data or health)."""
        before = (feed.stale(), feed.beyond_max_stale(datetime.now(UTC)), feed.settled)
        attempts, failures = feed.attempts_total, feed.failures_total
        changed = await feed.sync(self.session, self.config.gateway.state_dir, probe)
        if feed.attempts_total != attempts:
            for listener in self.sync_listeners:
                listener(feed, feed.failures_total == failures)
            if self.shared is not None:
                self.shared.note_upstreams(upstream_statuses(self))
        after = (feed.stale(), feed.beyond_max_stale(datetime.now(UTC)), feed.settled)
        if changed or before != after:
            self._ask_build()
            return True
        return False

    async def _sync_loop(self, feed: Feed) -> None:
        while True:
            await self.sync(feed)
            await asyncio.sleep(feed.settings.refresh)

    async def sync_all(self) -> None:
        """Sync every upstream now, concurrently, then rebuild: on return, the served snapshot
        reflects this sync (whatever the background builder did meanwhile)."""
        changed = await asyncio.gather(*(self.sync(feed) for feed in self.feeds))
        if self._may_build():
            await self._rebuild_unless_built(self._asked if any(changed) else self._begun)

    async def sync_now(self, name: str) -> bool:
        """Sync one upstream at once (an operator's request, so a probe even while its
        breaker is open) and serve the result."""
        changed = await self.sync(self.feed(name), probe=True)
        if changed and self._may_build():
            await self._rebuild_unless_built(self._asked)
        return changed

    async def confirm_drop(self, name: str) -> bool:
        """Apply an upstream's held mass drop (an operator's decision)."""
        confirmed = await self.feed(name).confirm_drop(self.config.gateway.state_dir)
        if confirmed:
            await self.rebuild_now()
        return confirmed

    # -- building ----------------------------------------------------------------------------

    async def rebuild_now(self) -> Snapshot:
        async with self._build_lock:  # one build at a time: they share the builder's memory
            return await self._rebuild()

    async def _rebuild(self) -> Snapshot:
        self._begun = number = self._begun + 1  # from here on, every input is read as it is now
        started = time.monotonic()
        now = datetime.now(UTC)
        sources = [Source(f.name, list(f.entries.values()), f.settings.owns) for f in self.feeds]
        origins = {feed.name: feed.origin(now) for feed in self.feeds}
        # A build cancelled (a stop) still runs to its end in its thread: `building` says when.
        self.building = asyncio.ensure_future(asyncio.to_thread(
            self.builder.build, sources, origins, now, self.verifier,
            self.advisories.current,
        ))  # fmt: skip
        snapshot = await asyncio.shield(self.building)
        shared, first = self.shared, self.snapshot is None
        if shared is not None and not first:  # the other workers read it back: all swap it
            await shared.publish(snapshot, self.snapshot)
        await self._swap(snapshot, started, shared if first else None)
        self._served_build = number  # (a build that failed or was cancelled is not)
        for listener in self.built_listeners:
            listener(snapshot)
        return snapshot

    def _prepare(self, snapshot: Snapshot, since: tuple[Order, frozenset[str]] | None) -> Followed:
        return searched(snapshot, self.builder.search, since)

    async def take(self, followed: Followed) -> None:
        """Serve a catalog the building worker offered (read back, see `sharing`)."""
        snapshot, token, order, changed = followed
        self._followed = [token, order, unindexed(self._followed, changed)]
        await self._swap(snapshot, time.monotonic())

    async def _ready(self, snapshot: Snapshot) -> None:
        if snapshot.config != self.builder.fingerprint and self.reread is not None:
            await self.reread()  # built with another: the one on disk, as the builder read it

    async def _swap(
        self, snapshot: Snapshot, started: float, sharing: Shared | None = None
    ) -> None:
        replaced, self.snapshot = self.snapshot, snapshot
        retired, self._retired, self.kept = self._retired, None, None  # disk: not what is served
        self._serving()
        # Millions of long-lived objects without cycles: the cyclic collector walks them no more
        # (pauses of a second at 200k versions); reference counting still frees them.
        gc.freeze()
        duration = time.monotonic() - started
        self.build_durations = [*self.build_durations[-99:], duration]
        # What the new catalog does not share is freed in a worker thread, a slice at a time
        # (`release`: the next build waits for it), once no request still reads its lists.
        if replaced is not None:
            for listener in self.swap_listeners:
                await listener(replaced, snapshot)
        if replaced is not None and not await self.readers.done(replaced, READERS_WAIT):
            replaced = None  # freed by reference counting once its last reader is done
        await asyncio.to_thread(release, replaced, retired)
        log.info(
            "catalog_swapped",
            views={name: len(view) for name, view in snapshot.views.items()},
            stale=list(snapshot.stale),
            duration_ms=round(duration * 1000, 1),
            decided=None if self.follows else self.builder.decided,  # None: every server
        )
        if self.shared is not None and not self.follows:
            self.shared.note_upstreams(upstream_statuses(self))
        self._schedule_cooldown_rebuild(snapshot.next_change)
        if snapshot.pending and self._background:
            self._start_verification(snapshot.pending)
        if sharing is not None:  # the first, served at once: the others answer through this
            await sharing.publish(snapshot)  # worker until they serve it (its index after it)
        if self._background:
            self._unindexed.set()  # searches scan the listings until the index catches up
            self._unkept.set()
        else:
            await self._index()

    async def _index_loop(self) -> None:
        """Bring the search index up to the newest build, off the event loop (one that
        fails: searches scan the listings meanwhile, the next swap is indexed)."""
        await on_each(self._unindexed, lambda: self._index(), "search_index_failed")

    async def _index(self) -> None:
        followed = self._followed
        if followed is not None:
            self._followed = [*followed[:2], frozenset()]  # indexed, unless this fails
            try:
                await asyncio.to_thread(self.builder.search.update, *followed)
            except BaseException:
                if self._followed is not None:
                    self._followed[2] = None  # every server looked at next time
                raise
        else:
            await asyncio.to_thread(self.builder.index)
        snapshot = self.snapshot
        if snapshot is not None and self.config.trust.osv:
            self.advisory_states = await asyncio.to_thread(advisory_states, snapshot)
        # Long-lived like the catalog: frozen, no full collection walks it again (15 ms a time
        # at 200k versions; about once a second under distinct searches).
        gc.freeze()
