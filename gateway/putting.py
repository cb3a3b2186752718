"""The holder's side of replicas sharing a catalog through the store (see `replicas`): each
catalog it builds put there while it holds the lease.

After a sync it puts the servers that changed since its last catalog (a catalog in part,
`deltas`; noted at each swap), named in `current.json` with the parts before it since the
newest whole catalog; the whole catalog as well every `whole_every`, after `MAX_PARTS` parts,
or once the parts add up to half of it (then a replica that starts reads less in parts than
the whole catalog's size). Before, every sync put the whole catalog: 210 MB and 12 s of a core
at 200k versions, for a change of a few MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import TYPE_CHECKING

import structlog

from gateway import deltas
from gateway.errors import LeaseLost, StoreError
from gateway.sharing import pack_file
from gateway.store import MAX_PARTS, PART_KEY, Current, Part, Whole
from gateway.store_config import catalog_fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.replicas import Replica
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.replicas")


class Puts:
    """One replica's catalogs put in the store (while it holds the lease)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.wanted = asyncio.Event()  # a catalog built, not yet put
        self._token, self._generations = secrets.token_hex(8), 0
        # The servers changed since the last catalog put (None: not known), the generation
        # of that one, the newest whole one in the store (and when it was put) and the parts
        # put since.
        self._changes: dict[str, set[str]] | None = None
        self._put_base: str | None = None
        self._whole: Whole | None = None
        self._whole_at = 0.0
        self._parts: list[Part] = []
        self._swept = False  # whether the catalogs holders before it left are removed
        self._epoch = 0  # lease taken anew this many times: a part on the chain before is not put
        self._current: str | None = None  # the ETag of the current.json it wrote last
        self._noted: Snapshot | None = None  # the last catalog swapped in whose changes are

    def taken_anew(self) -> None:
        """The lease taken again: another may have put catalogs meanwhile (the next one goes
        whole, and what earlier holders left is removed after it)."""
        self._put_base = self._changes = self._current = None
        self._parts = []
        self._swept = False
        self._epoch += 1

    async def loop(self) -> None:
        """Put each catalog this replica builds in the store while it holds the lease (the
        newest only, when builds come faster than puts)."""
        previous: list[str] = []  # keys put before, the newest last
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            snapshot = self.replica.refresher.snapshot
            if not self.replica.holding or snapshot is None:
                continue
            try:
                await self.put_one(snapshot, previous)
            except Exception as exc:  # the next catalog is put; followers keep the last one
                log.error("replica_put_failed", error=repr(exc))

    async def swapped(self, replaced: Snapshot, snapshot: Snapshot) -> None:
        """Note the servers a swap changed, for the next catalog in part (while holding; else,
        or when most of the catalog changed, the next catalog goes whole only)."""
        found = None
        if self.replica.holding and self._changes is not None:
            found = await asyncio.to_thread(deltas.changes, replaced, snapshot)
        if found is None or self._changes is None:
            self._changes = None
        else:
            for view, names in found.items():
                self._changes.setdefault(view, set()).update(names)
        self._noted = snapshot

    async def put_one(self, snapshot: Snapshot, previous: list[str]) -> None:
        """Put a catalog in the store: in part (the servers changed since the last one put),
        if that one is known; whole as well when it is due (`_whole_due`)."""
        self._generations += 1
        generation = f"{self._token}.{self._generations}"
        # from this one on (a swap to it not yet noted: what changed before it is not known)
        changes = self._changes if snapshot is self._noted else None
        self._changes = {}
        base, self._put_base = self._put_base, None  # until this one is put
        started = time.monotonic()
        fingerprint = catalog_fingerprint(self.replica.refresher.config)
        whole, parts, epoch = self._whole, self._parts, self._epoch
        if base is not None and changes is not None and whole is not None:
            found = {view: sorted(changes.get(view, ())) for view in snapshot.views}
            key = f"catalogs/{generation}.part.pack"
            size = await self._upload(snapshot, key, found, lambda size: None if (
                self._epoch != epoch) else Current(  # the lease taken anew meanwhile: whole
                generation=generation, key=key, built_at=snapshot.built_at,
                fingerprint=fingerprint, size=size, base=base, whole=whole,
                parts=parts))  # fmt: skip
            if size is None and self._epoch == epoch:
                return  # the lease is lost
            if size is not None and self._epoch != epoch:
                return  # put as the lease was taken anew: the next catalog goes whole
            if size is not None:
                self._parts = [*parts, Part(generation=generation, key=key, size=size, base=base)]
                previous.append(key)
                log.info("replica_catalog_put", generation=generation, bytes=size, part=True,
                         duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
                if not self._whole_due(whole):
                    self._put_base = generation
                    return
        key = f"catalogs/{generation}.pack"
        size = await self._upload(snapshot, key, None, lambda size: Current(
            generation=generation, key=key, built_at=snapshot.built_at, fingerprint=fingerprint,
            size=size))  # fmt: skip
        if size is None:
            return
        self._whole = Whole(generation=generation, key=key, size=size)
        self._whole_at, self._parts = time.monotonic(), []
        self._put_base = generation
        previous.append(key)
        # The whole one before and its parts stay (a replica may be reading them); not older.
        wholes = [at for at, one in enumerate(previous) if not PART_KEY.fullmatch(one)]
        for old in previous[: wholes[-2] if len(wholes) > 1 else 0]:
            with contextlib.suppress(StoreError, FileNotFoundError):
                await asyncio.to_thread(self.replica.store.remove, old)
        del previous[: wholes[-2] if len(wholes) > 1 else 0]
        if not self._swept:  # what holders before it left (a replica reading one reads anew)
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.replica.store.sweep, previous)
                self._swept = True
        log.info("replica_catalog_put", generation=generation, bytes=size, part=False,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip

    def _whole_due(self, whole: Whole) -> bool:
        """Whether the whole catalog is put again after this part: every `whole_every`, and
        when the parts since the last whole one are many or add up to half of it."""
        return (
            time.monotonic() - self._whole_at >= self.replica.settings.whole_every
            or len(self._parts) >= MAX_PARTS
            or 2 * sum(part.size for part in self._parts) >= whole.size
        )

    async def _upload(
        self, snapshot: Snapshot, key: str, changes: deltas.Changes | None,
        current: Callable[[int], Current | None],
    ) -> int | None:  # fmt: skip
        """Pack a catalog, put it at `key` and name it current (`current`, of its size) while
        the lease is still this replica's; its size (None: the lease was lost, or `current`
        said not to)."""
        path = await asyncio.to_thread(self.replica.spare)
        try:
            with self.replica.refresher.readers.reading(snapshot):
                size = await asyncio.to_thread(pack_file, path, snapshot, None, changes)
            if not await self.replica.take_lease():  # still ours, right before it is named
                return None
            note = current(size)
            if note is None:
                return None
            try:
                self._current = await asyncio.to_thread(
                    self.replica.store.put_catalog, path, note, self._current
                )
            except LeaseLost:  # another named its catalog since (it holds the lease now)
                log.warning("replica_lease_lost", holder=None, why="current.json changed")
                self.replica.holding = None
                self.taken_anew()  # if the lease is still its own, its next catalog is whole
                return None
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return size
