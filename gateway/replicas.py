"""Replicas that share one catalog through object storage (gateway.yaml `snapshot_store`, see
`store`): one replica holds the lease, syncs every upstream, builds, and puts each catalog it
builds in the store; the others make no upstream request, and serve each catalog it put there.

- At start every replica serves the catalog it kept (`keeper`), then the store's current one if
  this config built it: a new replica during an upstream outage starts from the store, and
  that counts as data for readiness.
- The lease is taken by conditional PUT (If-None-Match: * where there is none, If-Match: the
  expired lease's ETag), held for `lease` and renewed at a third of it; a replica whose holder
  stopped renewing (a crash) takes it over once it has expired.
- A replica that follows falls back to syncing itself when the store cannot be read for
  `stale_after`, or its catalog was built with another config, or cannot be read. It still
  takes the lease when it is free, and then puts its catalogs in the store too; while another
  holds it, it goes back to following once the store has a catalog it can serve.
- The holder that loses its lease (it could not renew in time) goes on syncing itself and
  stops writing to the store until it holds the lease again.
- After a sync, the holder puts the servers that changed since its last catalog first (a
  catalog in part, `deltas`; noted at each swap), then the whole catalog: a replica that
  serves the last one applies the part at once; any other reads the whole one.

Nothing here runs without the option: the gateway is then as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway import deltas, keeper, kept
from gateway.errors import (
    KeptForOther,
    LeaseLost,
    StateError,
    StoreError,
    StoreGarbled,
)
from gateway.sharing import pack_file
from gateway.store import Current, Lease, Store, Whole
from gateway.store_config import catalog_fingerprint
from gateway.unpack import Followed, searched

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.refresher import Refresher
    from gateway.snapshot import Snapshot
    from gateway.store_config import StoreSettings

log = structlog.get_logger("gateway.replicas")


class Replica:
    """One replica's part: the lease, the catalogs it puts in the store or serves from it."""

    def __init__(self, refresher: Refresher, settings: StoreSettings, store: Store) -> None:
        self.refresher, self.settings, self.store = refresher, settings, store
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"[:200]
        self.holding: str | None = None  # the lease's ETag while this replica holds it
        self.held_until = 0.0  # monotonic: when the lease it holds expires
        self.own = False  # syncing itself (holding the lease, or fallen back)
        self.seen: str | None = None  # the ETag of the last current.json read
        self.answered = time.monotonic()  # when the store last answered
        self.reached = False  # whether it ever did
        self.other: str | None = None  # another replica holding the lease, when last asked
        self.refused: str | None = None  # the generation it could not serve, if any
        self._token, self._generations = secrets.token_hex(8), 0
        # Catalogs in part (`deltas`): the servers changed since the last catalog put (None:
        # not known), the generation of that one and the newest whole one in the store; a
        # following replica's generation and catalog served.
        self._changes: dict[str, set[str]] | None = None
        self._put_base: str | None = None
        self._whole: Whole | None = None
        self._served: tuple[str, Followed] | None = None
        self._swept = False  # whether the catalogs holders before it left are removed
        self._noted: Snapshot | None = None  # the last catalog swapped in whose changes are
        self._put: asyncio.Event = asyncio.Event()  # a catalog built, not yet put
        self._task: asyncio.Task[None] | None = None
        self._putting: asyncio.Task[None] | None = None

    async def start(self, background: bool = True) -> None:
        """What `Refresher.start` does, with the store: see the module's docstring."""
        await keeper.restore(self.refresher)
        state_dir = self.refresher.config.gateway.state_dir
        for left in state_dir.glob(".store-*.pack"):  # of a run that ended on its way
            left.unlink(missing_ok=True)
        self.refresher.built_listeners.append(lambda _: self._put.set())
        self.refresher.swap_listeners.append(self._swapped)
        if background:
            self.refresher.index_in_background()  # searches of the catalogs it serves
        await self._follow()
        if await self._take_lease():
            await self._go_own("holds the lease")
            self._put.set()  # what it serves, in the store (a build puts its own again)
        elif not self.reached:  # a store down at start is not waited for
            await self._go_own("the store cannot be reached")
        if background:
            self._task = asyncio.create_task(self._loop(), name="replica")
            self._putting = asyncio.create_task(self._put_loop(), name="replica-put")

    async def stop(self) -> None:
        """Stop; a lease held is given up (expired at once), so another replica takes over
        without waiting for it to run out."""
        for task in (self._task, self._putting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.holding:
            ended = Lease(holder=self.name, expires=datetime.now(UTC) - timedelta(seconds=1))
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.take_lease, ended, self.holding)
                log.info("replica_lease_given_up")
            self.holding = None

    def _stale(self) -> bool:
        return time.monotonic() - self.answered > self.settings.stale_after

    async def _go_own(self, why: str) -> None:
        if self.own:
            return
        self.own = True
        log.info("replica_syncs_itself", why=why, holding=self.holding is not None)
        await self.refresher.start_own(background=True)

    async def _follow_again(self) -> None:
        """A replica syncing itself while another holds the lease goes back to serving the
        store's catalogs, once there is one it can serve (this config's, not one it could
        not read): a store back after an outage, a new config rolled out everywhere."""
        try:
            found = await asyncio.to_thread(self.store.current)
        except StoreError:
            return
        if found is None:
            return
        current = found[0]
        if current.fingerprint != catalog_fingerprint(self.refresher.config):
            return
        if current.generation == self.refused:
            return
        self.own, self.seen = False, None
        log.info("replica_follows_again", holder=self.other, generation=current.generation)
        await self.refresher.stop_own()
        await self._follow()

    async def _loop(self) -> None:
        renew = self.settings.lease / 3
        while True:
            await asyncio.sleep(min(self.settings.poll, renew))
            try:
                if self.holding:
                    if time.monotonic() > self.held_until - 2 * renew:
                        await self._take_lease()
                    continue
                if not self.own:
                    await self._follow()
                if not self.holding and await self._take_lease():
                    await self._go_own("holds the lease")
                    self._put.set()
                elif self.own and self.other is not None:
                    await self._follow_again()
            except Exception:  # the loop goes on: a store down is a store down
                log.exception("replica_step_failed")
            if not self.own and self._stale():
                await self._go_own(f"the store has not answered for {self.settings.stale_after}s")

    # -- the lease -----------------------------------------------------------------------------

    async def _take_lease(self) -> bool:
        """Take or renew the lease if it is free, expired or ours; whether this replica holds
        it now."""
        now = datetime.now(UTC)
        lease = Lease(holder=self.name, expires=now + timedelta(seconds=self.settings.lease))
        try:
            found = await asyncio.to_thread(self.store.lease)
            self.answered, self.reached = time.monotonic(), True
            over = None
            if found is not None:
                held, etag = found
                if held is None:
                    log.warning("replica_lease_garbled")  # taken over, as an expired one
                elif held.holder != self.name and held.expires > now:
                    if self.holding:
                        log.warning("replica_lease_lost", holder=held.holder)
                    self.holding, self.other = None, held.holder
                    return False
                over = etag
            self.other = None
            started = time.monotonic()
            if not self.holding:  # taken anew: another may have put catalogs meanwhile
                self._put_base = self._changes = None
                self._swept = False
            self.holding = await asyncio.to_thread(self.store.take_lease, lease, over)
            self.held_until = started + self.settings.lease
            return True
        except LeaseLost:
            self.holding = None
            return False
        except StoreError as exc:
            log.warning("replica_store_failed", step="lease", error=str(exc))
            if self.holding and time.monotonic() > self.held_until:
                self.holding = None  # it may be someone else's by now
            return self.holding is not None

    # -- following -----------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Serve the store's current catalog if it is new (and this config built it)."""
        try:
            found = await asyncio.to_thread(self.store.current, self.seen)
        except StoreGarbled as exc:  # it answered, and not what it should
            log.error("replica_store_garbled", error=str(exc))
            await self._go_own("the store's current.json is not a catalog's")
            return
        except StoreError as exc:
            log.warning("replica_store_failed", step="current", error=str(exc))
            return
        self.answered, self.reached = time.monotonic(), True
        if found is None:
            return
        current, self.seen = found
        refresher = self.refresher
        if current.fingerprint != catalog_fingerprint(refresher.config):
            log.warning("replica_catalog_other_config", generation=current.generation)
            await self._go_own("the store's catalog was built with another config")
            return
        served = self._served
        if served is not None and refresher.snapshot is not served[1][0]:
            served = None  # it serves a catalog of its own (or kept) since
        on_base = served is not None and current.base == served[0]
        whole = current.whole_catalog()
        if not on_base and served is not None and served[0] == whole.generation:
            return  # it serves that one already
        started = time.monotonic()
        followed = None
        base = None if served is None else served[1][0]
        if served is not None and on_base:
            with refresher.readers.reading(base):  # not let go while the part is put into it
                followed = await self._read(current, served[1])
            if isinstance(followed, Exception):
                log.warning("replica_part_unreadable", generation=current.generation,
                            error=str(followed))  # fmt: skip
                if served[0] == whole.generation:
                    return  # it serves the whole one it names: the next whole one, then
        if followed is None or isinstance(followed, Exception):
            followed = await self._read(whole, None)
        if followed is None:  # replaced meanwhile: the next look finds the new one
            self.seen = None
            return
        if isinstance(followed, Exception):
            log.error("replica_catalog_unreadable", generation=whole.generation,
                      error=str(followed))  # fmt: skip
            self.refused = whole.generation
            await self._go_own("the store's catalog could not be read")
            return
        if followed[3] is not None and refresher.snapshot is not base:
            return  # it swapped in another meanwhile: the next look decides again
        shared = refresher.shared
        if shared is not None and shared.builds:  # this replica's other workers read it too
            await shared.publish(followed[0], refresher.snapshot)
        await refresher.take(followed)
        self._served = (current.generation if followed[3] is not None else whole.generation,
                        followed)  # fmt: skip
        log.info("replica_catalog_served", generation=self._served[0], part=followed[3] is not None,
                 bytes=current.size if followed[3] is not None else whole.size,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip

    async def _read(
        self, catalog: Current | Whole, served: Followed | None
    ) -> Followed | Exception | None:
        """`_fetch` in a worker thread; the error that kept it from being read, or None when
        it was removed meanwhile."""
        try:
            return await asyncio.to_thread(self._fetch, catalog, served)
        except FileNotFoundError:
            return None
        except (StoreError, StateError, KeptForOther, OSError) as exc:
            return exc

    def _fetch(self, catalog: Current | Whole, served: Followed | None) -> Followed:
        """Download and read back a catalog (blocking: a worker thread): whole, or in part
        on the one `served`."""
        path = self._spare()
        try:
            self.store.fetch(catalog, path)
            snapshot, changes = kept.read_changes(path)  # this config's: current.json said
        finally:
            path.unlink(missing_ok=True)
        search = self.refresher.builder.search
        if (served is None) != (changes is None):
            raise StateError(catalog.key, "in part or whole, not as current.json names it")
        if served is None or changes is None:
            return searched(snapshot, search)
        changed = frozenset(name for names in changes.values() for name in names)
        return searched(deltas.applied(served[0], snapshot, changes), search, (served[2], changed))

    def _spare(self) -> Path:
        """A new file in `state_dir` for a catalog on its way (blocking)."""
        state_dir = self.refresher.config.gateway.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=state_dir, prefix=".store-", suffix=".pack")
        os.close(fd)
        return Path(name)

    # -- putting -------------------------------------------------------------------------------

    async def _put_loop(self) -> None:
        """Put each catalog this replica builds in the store while it holds the lease (the
        newest only, when builds come faster than puts)."""
        previous: list[str] = []  # keys put before, the newest last
        while True:
            await self._put.wait()
            self._put.clear()
            snapshot = self.refresher.snapshot
            if not self.holding or snapshot is None:
                continue
            try:
                await self._put_one(snapshot, previous)
            except Exception as exc:  # the next catalog is put; followers keep the last one
                log.error("replica_put_failed", error=repr(exc))

    async def _swapped(self, replaced: Snapshot, snapshot: Snapshot) -> None:
        """Note the servers a swap changed, for the next catalog in part (while holding; else,
        or when most of the catalog changed, the next catalog goes whole only)."""
        found = None
        if self.holding and self._changes is not None:
            found = await asyncio.to_thread(deltas.changes, replaced, snapshot)
        if found is None or self._changes is None:
            self._changes = None
        else:
            for view, names in found.items():
                self._changes.setdefault(view, set()).update(names)
        self._noted = snapshot

    async def _put_one(self, snapshot: Snapshot, previous: list[str]) -> None:
        """Put a catalog in the store: first in part (the servers changed since the last
        one put), if that one is known, then whole."""
        self._generations += 1
        generation = f"{self._token}.{self._generations}"
        # from this one on (a swap to it not yet noted: what changed before it is not known)
        changes = self._changes if snapshot is self._noted else None
        self._changes = {}
        base, self._put_base = self._put_base, None  # until this one is put whole
        started = time.monotonic()
        fingerprint = catalog_fingerprint(self.refresher.config)
        if base is not None and changes is not None and self._whole is not None:
            found = {view: sorted(changes.get(view, ())) for view in snapshot.views}
            key = f"catalogs/{generation}.part.pack"
            size = await self._upload(snapshot, key, found, lambda size: Current(
                generation=generation, key=key, built_at=snapshot.built_at,
                fingerprint=fingerprint, size=size, base=base, whole=self._whole))  # fmt: skip
            if size is None:
                return
            previous.append(key)
            log.info("replica_catalog_put", generation=generation, bytes=size, part=True,
                     duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        key = f"catalogs/{generation}.pack"
        size = await self._upload(snapshot, key, None, lambda size: Current(
            generation=generation, key=key, built_at=snapshot.built_at, fingerprint=fingerprint,
            size=size))  # fmt: skip
        if size is None:
            return
        self._whole = Whole(generation=generation, key=key, size=size)
        self._put_base = generation
        previous.append(key)
        while len(previous) > 4:  # the ones before stay: a replica may be reading them
            with contextlib.suppress(StoreError, FileNotFoundError):
                await asyncio.to_thread(self.store.remove, previous.pop(0))
        if not self._swept:  # what holders before it left (a replica reading one reads anew)
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.sweep, previous)
                self._swept = True
        log.info("replica_catalog_put", generation=generation, bytes=size, part=False,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip

    async def _upload(
        self, snapshot: Snapshot, key: str, changes: deltas.Changes | None,
        current: Callable[[int], Current],
    ) -> int | None:  # fmt: skip
        """Pack a catalog, put it at `key` and name it current (`current`, of its size) while
        the lease is still this replica's; its size (None: the lease was lost)."""
        path = await asyncio.to_thread(self._spare)
        try:
            with self.refresher.readers.reading(snapshot):
                size = await asyncio.to_thread(pack_file, path, snapshot, None, changes)
            if not await self._take_lease():  # still ours, right before it is named
                return None
            await asyncio.to_thread(self.store.put_catalog, path, current(size))
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return size
