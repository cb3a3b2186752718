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
- After a sync, the holder puts the servers that changed since its last catalog (a catalog in
  part, `deltas`; noted at each swap); the whole catalog as well every `whole_every`, after
  `MAX_PARTS` parts, or once the parts add up to half of it. A replica serving a catalog of
  that chain applies the parts after it; any other reads the whole one and applies them all.

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
from gateway.putting import Puts
from gateway.store import Current, Lease, Part, Store, Whole
from gateway.store_config import catalog_fingerprint
from gateway.unpack import Followed, searched

if TYPE_CHECKING:
    from gateway.refresher import Refresher
    from gateway.snapshot import Snapshot
    from gateway.store_config import StoreSettings

log = structlog.get_logger("gateway.replicas")

# What keeps a catalog in the store from being read (a removed one, FileNotFoundError, is an
# OSError: looked for again once current.json names another).
_UNREADABLE = (StoreError, StateError, KeptForOther, OSError)


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
        self.refused: str | None = None  # the whole catalog it could not read, if any
        self._broken: str | None = None  # the whole catalog after which a part cannot be read
        self._served: tuple[str, Followed] | None = None  # a following replica's: generation
        self.puts = Puts(self)  # and catalog
        self._leasing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._putting: asyncio.Task[None] | None = None

    async def start(self, background: bool = True) -> None:
        """What `Refresher.start` does, with the store: see the module's docstring."""
        await keeper.restore(self.refresher)
        state_dir = self.refresher.config.gateway.state_dir
        for left in state_dir.glob(".store-*.pack"):  # of a run that ended on its way
            left.unlink(missing_ok=True)
        self.refresher.built_listeners.append(lambda _: self.puts.wanted.set())
        self.refresher.swap_listeners.append(self.puts.swapped)
        if background:
            self.refresher.index_in_background()  # searches of the catalogs it serves
        await self._follow()
        if await self.take_lease():
            await self._go_own("holds the lease")
            self.puts.wanted.set()  # what it serves, in the store (a build puts its own again)
        elif not self.reached:  # a store down at start is not waited for
            await self._go_own("the store cannot be reached")
        if background:
            self._task = asyncio.create_task(self._loop(), name="replica")
            self._putting = asyncio.create_task(self.puts.loop(), name="replica-put")

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
        if current.whole_catalog().generation == self.refused:
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
                        await self.take_lease()
                    continue
                if not self.own:
                    await self._follow()
                if not self.holding and await self.take_lease():
                    await self._go_own("holds the lease")
                    self.puts.wanted.set()
                elif self.own and self.other is not None:
                    await self._follow_again()
            except Exception:  # the loop goes on: a store down is a store down
                log.exception("replica_step_failed")
            if not self.own and self._stale():
                await self._go_own(f"the store has not answered for {self.settings.stale_after}s")

    # -- the lease -----------------------------------------------------------------------------

    async def take_lease(self) -> bool:
        """Take or renew the lease if it is free, expired or ours; whether this replica holds
        it now. One at a time: two renewals on the same ETag would lose it to each other."""
        async with self._leasing:
            return await self._take_lease()

    async def _take_lease(self) -> bool:
        now = datetime.now(UTC)
        lease = Lease(holder=self.name, expires=now + timedelta(seconds=self.settings.lease))
        try:
            found = await asyncio.to_thread(self.store.lease)
            self.answered, self.reached = time.monotonic(), True
            over, ours = None, False
            if found is not None:
                held, etag = found
                ours = held is not None and held.holder == self.name
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
            if not ours:  # anew: another may have put catalogs since (a lease that names
                self.puts.taken_anew()  # this one was last written by it, whatever it knew)
            self.holding = await asyncio.to_thread(self.store.take_lease, lease, over)
            self.held_until = started + self.settings.lease
            return True
        except LeaseLost:  # written meanwhile: by another, or by a retried request of its own
            if self.holding:
                log.warning("replica_lease_lost", holder=None)
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
        parts = None if served is None else current.parts_after(served[0])
        if parts == []:
            return  # it serves that one already
        started = time.monotonic()
        base = None if served is None else served[1][0]
        read = None
        whole = current.whole_catalog().generation
        if served is not None and parts:
            with refresher.readers.reading(base):  # not let go while the parts go into it
                read = await self._read(current, parts, served)
            if refresher.snapshot is not base:
                self.seen = None  # it swapped in another meanwhile: the next look decides
                return
            if not isinstance(read, tuple):  # not one part applied: the whole one and all,
                log.warning("replica_part_unreadable", generation=current.generation,
                            error=str(read or "removed"))  # fmt: skip
                if self._broken == whole:  # once per whole catalog: the same part stops it
                    return
                read = None
        if read is None:
            read = await self._read(current, None, None)
        if read is None:  # replaced meanwhile: the next look finds the new one
            self.seen = None
            return
        if isinstance(read, Exception):
            log.error("replica_catalog_unreadable", generation=whole, error=str(read))
            self.refused = whole  # tried again once another whole catalog is current
            await self._go_own("the store's catalog could not be read")
            return
        followed, reached, failed = read
        if failed is not None and followed[3] is None:  # the whole one and the parts it could
            self._broken = whole
        tried = [part.generation for part in (parts if followed[3] is not None and parts
                                              else current.chain())]  # fmt: skip
        applied = tried.index(reached) + 1 if reached in tried else 0
        if failed is not None:  # it serves the catalog before that part; the next current
            log.warning("replica_part_unreadable", generation=current.generation,  # tries again
                        reached=reached, error=str(failed))  # fmt: skip
        shared = refresher.shared if refresher.shared and refresher.shared.builds else None
        first = refresher.snapshot is None  # served at once, as a first build is (`sharing`)
        if shared is not None and not first:  # this replica's other workers read it too
            await shared.publish(followed[0], refresher.snapshot)
        await refresher.take(followed)
        self._served = (reached, followed)
        log.info("replica_catalog_served", generation=reached, part=followed[3] is not None,
                 parts=applied,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        if shared is not None and first:
            await shared.publish(followed[0])

    async def _read(
        self, current: Current, parts: list[Part] | None, served: tuple[str, Followed] | None
    ) -> tuple[Followed, str, Exception | None] | Exception | None:
        """`_fetch` in a worker thread; the error that kept it from being read, or None when
        a catalog was removed meanwhile."""
        try:
            return await asyncio.to_thread(self._fetch, current, parts, served)
        except FileNotFoundError:
            return None
        except _UNREADABLE as exc:
            return exc

    def _fetch(
        self, current: Current, parts: list[Part] | None, served: tuple[str, Followed] | None
    ) -> tuple[Followed, str, Exception | None]:
        """Download and read back the catalog `current` names (blocking: a worker thread):
        `parts` applied to the one `served`, or its whole one and every part after it. As
        many parts as can be applied are: the catalog made, its generation, and the error
        that stopped it at a part, if one did (raised when none could be applied)."""
        search = self.refresher.builder.search
        if served is None:
            whole = current.whole_catalog()
            snapshot, reached = self._one(whole, whole=True)[0], whole.generation
            parts = current.chain()
        else:
            assert parts is not None
            snapshot, reached = served[1][0], served[0]
        changed: set[str] = set()
        failed: Exception | None = None
        for part in parts:
            try:
                delta, changes = self._one(part, whole=False)
                assert changes is not None  # `_one` checked it
                snapshot = deltas.applied(snapshot, delta, changes)
            except _UNREADABLE as exc:
                failed = exc
                break
            changed.update(name for names in changes.values() for name in names)
            reached = part.generation
        if served is None:
            return searched(snapshot, search), reached, failed
        if failed is not None and reached == served[0]:
            raise failed
        return searched(snapshot, search, (served[1][2], frozenset(changed))), reached, failed

    def _one(self, catalog: Whole, whole: bool) -> tuple[Snapshot, dict[str, list[str]] | None]:
        """One catalog downloaded and read back, whole or in part (blocking)."""
        path = self.spare()
        try:
            self.store.fetch(catalog, path)
            found = kept.read_changes(path)  # this config's: current.json said so
        finally:
            path.unlink(missing_ok=True)
        if whole != (found[1] is None):
            raise StateError(catalog.key, "in part or whole, not as current.json names it")
        return found

    def spare(self) -> Path:
        """A new file in `state_dir` for a catalog on its way (blocking)."""
        state_dir = self.refresher.config.gateway.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=state_dir, prefix=".store-", suffix=".pack")
        os.close(fd)
        return Path(name)
