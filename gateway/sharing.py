"""`serve --workers N` shares one catalog: the first worker syncs every upstream and builds;
every other worker reads back what it built, and they all swap it in together.

The building worker packs each catalog it builds (the kept catalog's format, `packed`) into
a directory of its own that the parent process made for this run, offers it there
(`offered.json`), waits until every other worker has read it back (`loaded.<worker>.json`,
at most `LOAD_WAIT` seconds: a worker that does not answer is not waited for again), names
it current (`current.json`) and swaps; each other worker swaps the moment it reads that.
So the workers serve the same bytes (the same ETags, cursors any of them accepts) and make
the upstream requests of one. A catalog after a sync goes in part when every other worker
serves the one before it: only the servers that changed (`deltas`), put into the catalog
each serves; a worker that does not serve that one says so, and the whole catalog follows.
The first catalog is the exception: the building worker serves it at once and offers it
after, and until a worker serves a catalog of its own it hands every request to the building
worker (see `forwarding`), so the first catalog is served by all of them as soon as it is
built. Each says when it answers (`serving.<worker>`: the building worker once it serves,
the others as they start following) and reports ready only once every living worker has (a
lock on `alive.<worker>`, or `ended.<worker>` from the parent, tells the dead): a ready
answer from any means every worker answers. What only the building worker knows the others
read from it: its upstreams' status from `upstreams.json`, the operator endpoints over its
Unix socket (`leader`).

Every file there is read as hostile: a regular file, bounded, of one exact shape, and a
catalog only of this run's generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway import deltas, kept
from gateway.errors import StateError, Stopped
from gateway.pack import write_pack
from gateway.rundir import Run, held, hold, read_note, read_small, write_note, write_small
from gateway.state import written
from gateway.status import UpstreamStatus

if TYPE_CHECKING:
    from gateway.build import Order
    from gateway.snapshot import Snapshot
    from gateway.unpack import Followed

Prepare = Callable[["Snapshot", "tuple[Order, frozenset[str]] | None"], "Followed"]

log = structlog.get_logger("gateway.sharing")

LOAD_WAIT = 60.0  # seconds the building worker waits for the others to read a catalog
POLL = 0.1  # seconds between looks for a new catalog offered
SWAP_POLL = 0.002  # seconds between looks for the catalog read back to be named current
SWAP_WAIT = 5.0  # seconds the building worker waits for the others to swap a catalog named
_GENERATION = r"[0-9a-f]{16}\.[0-9]{1,12}"
_UPSTREAMS = TypeAdapter(tuple[UpstreamStatus, ...])


class _Note(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    generation: str = Field(pattern=rf"\A{_GENERATION}\z")


class _Offer(_Note):
    file: str = Field(pattern=rf"\Acatalog\.{_GENERATION}\.pack\z")
    # in part: the generation whose catalog it changes (the servers it replaces are in it)
    base: str | None = Field(None, pattern=rf"\A{_GENERATION}\z")


class _Loaded(_Note):
    loaded: bool


class Shared:
    """One worker's side of the run: the first builds and offers, the others follow."""

    def __init__(self, run: Run, worker: int) -> None:
        self.run = run
        self.worker = worker
        self._generations = 0
        self._gone: set[int] = set()  # workers that did not read a catalog in time
        self.published: Path | None = None  # the file of the catalog served, when offered
        self._upstreams: tuple[int, tuple[UpstreamStatus, ...]] | None = None
        self._alive = hold(self._path(f"alive.{worker}"))
        self._everyone_serves = False
        self._said_serving = False
        # the building worker's last catalog that every other worker serves, and its generation
        self._last: tuple[str, Snapshot] | None = None
        self._taken: tuple[str, Followed] | None = None  # a following worker's, likewise

    def close(self) -> None:
        """Let go of this worker's lock (it is let go of when its process ends, too)."""
        if self._alive >= 0:
            os.close(self._alive)
            self._alive = -1

    @property
    def builds(self) -> bool:
        return self.worker == 0

    def _path(self, name: str) -> Path:
        return self.run.directory / name

    # -- every worker ---------------------------------------------------------------------------

    def note_serving(self) -> None:
        """Say this worker serves a catalog (once: it serves one from then on)."""
        if self._said_serving:
            return
        try:
            write_small(self._path(f"serving.{self.worker}"), b"")
        except OSError as exc:  # said again at the next swap
            log.warning("shared_status_failed", error=str(exc))
            return
        self._said_serving = True

    def not_serving(self) -> list[int]:
        """The workers that do not serve a catalog yet: not started, or started and alive
        (one whose lock is let go of has ended). Empty once all have served: it stays so."""
        if self._everyone_serves:
            return []
        waiting = [
            worker for worker in range(self.run.workers)
            if not self._path(f"serving.{worker}").is_file() and not self._ended(worker)
        ]  # fmt: skip
        self._everyone_serves = not waiting
        return waiting

    def note_tallies(self, data: bytes) -> bool:
        """Write what this worker counted, for the others' scrapes (see `metrics`); whether
        it was written."""
        try:
            write_small(self._path(f"metrics.{self.worker}.json"), data)
        except OSError as exc:  # tried again within a second
            log.warning("shared_status_failed", error=str(exc))
            return False
        return True

    def tallies(self) -> list[tuple[int, bytes]]:
        """The other workers' counts as they last wrote them (absent ones left out)."""
        found = []
        for worker in range(self.run.workers):
            if worker != self.worker:
                data = read_small(self._path(f"metrics.{worker}.json"))
                if data is not None:
                    found.append((worker, data))
        return found

    def _ended(self, worker: int) -> bool:
        if self._path(f"ended.{worker}").exists():  # the parent saw it end
            return True
        alive = self._path(f"alive.{worker}")
        return alive.is_file() and not alive.is_symlink() and not held(alive)

    # -- the building worker -------------------------------------------------------------------

    async def publish(self, snapshot: Snapshot, before: Snapshot | None = None) -> None:
        """Offer a catalog just built, and return once every other worker has read it back
        (or `LOAD_WAIT` passed): the caller swaps it in then, as the others do. With the
        catalog `before` it (served now), only what changed, if every other worker serves
        that one; one that cannot use it is offered the whole catalog at once."""
        found = None
        last = self._last
        if before is not None and last is not None and last[1] is before and not self._gone:
            found = await asyncio.to_thread(deltas.changes, before, snapshot)
        self._last = None
        if found is not None and last is not None:
            if await self._offer(snapshot, (last[0], found)):
                return
            log.warning("shared_catalog_in_part_refused")  # the whole catalog follows
        await self._offer(snapshot, None)

    async def _offer(self, snapshot: Snapshot, delta: tuple[str, deltas.Changes] | None) -> bool:
        """Offer the catalog (`delta`: in part, on the generation before) and name it current
        once the others have read it; False, and not named, for a part one could not use."""
        self._generations += 1
        generation = f"{self.run.token}.{self._generations}"
        path = self._path(f"catalog.{generation}.pack")
        started = time.monotonic()
        stop = threading.Event()
        changes = None if delta is None else delta[1]
        writing = asyncio.ensure_future(asyncio.to_thread(pack_file, path, snapshot, stop, changes))
        try:
            size = await asyncio.shield(writing)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Stopped, OSError):
                await writing
            raise
        except OSError as exc:  # the others stay on the catalog they have
            log.error("shared_catalog_failed", error=str(exc))
            self._forget_published()
            return True
        packed = time.monotonic() - started
        base = None if delta is None else delta[0]
        write_note(self._path("offered.json"), _Offer(generation=generation, file=path.name,
                                                     base=base))  # fmt: skip
        others = set(range(1, self.run.workers)) - self._gone
        waiting, deadline = others, time.monotonic() + LOAD_WAIT
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(SWAP_POLL)
            waiting = {w for w in waiting if self._loaded(w, generation) is None}
        if waiting:
            self._gone |= waiting
            log.error("shared_catalog_not_read", workers=sorted(waiting), waited_s=LOAD_WAIT)
        unread = sorted(w for w in others - waiting if not self._loaded(w, generation))
        if unread and delta is not None:
            path.unlink(missing_ok=True)
            return False
        if unread:  # they serve the catalog before until one they can read
            log.error("shared_catalog_unreadable", workers=unread)
        write_note(self._path("current.json"), _Note(generation=generation))
        # Answered (a sync, a reload) once every worker serves it: they swap within moments.
        swapping = {w for w in others - waiting if self._loaded(w, generation)}
        deadline = time.monotonic() + SWAP_WAIT
        while swapping and time.monotonic() < deadline:
            await asyncio.sleep(SWAP_POLL)
            swapping = {w for w in swapping if not self._swapped(w, generation)}
        self._forget_published()
        if delta is None:
            self.published = path  # whole: what a stop keeps, copied
        else:
            path.unlink(missing_ok=True)
        if not (waiting or unread or swapping):  # every other worker serves it
            self._last = (generation, snapshot)
        servers = None if delta is None else len(set().union(*delta[1].values()))
        log.info("shared_catalog_offered", bytes=size, packed_ms=round(packed * 1000, 1),
                 duration_ms=round((time.monotonic() - started) * 1000, 1),
                 servers=servers)  # fmt: skip
        return True

    def _forget_published(self) -> None:
        if self.published is not None:
            self.published.unlink(missing_ok=True)  # a worker still reading it keeps it open
            self.published = None

    def _swapped(self, worker: int, generation: str) -> bool:
        swapped = read_note(self._path(f"swapped.{worker}.json"), _Loaded)
        return swapped is not None and swapped.generation == generation

    def _loaded(self, worker: int, generation: str) -> bool | None:
        """Whether a worker read a generation back (None: it has not said yet)."""
        loaded = read_note(self._path(f"loaded.{worker}.json"), _Loaded)
        return loaded.loaded if loaded is not None and loaded.generation == generation else None

    def note_upstreams(self, upstreams: tuple[UpstreamStatus, ...]) -> None:
        """Tell the other workers how the upstreams fare (after each sync and build)."""
        try:
            write_small(self._path("upstreams.json"), _UPSTREAMS.dump_json(upstreams))
        except OSError as exc:
            log.warning("shared_status_failed", error=str(exc))

    # -- the other workers ---------------------------------------------------------------------

    def upstreams(self) -> tuple[UpstreamStatus, ...] | None:
        """The building worker's upstreams as it last told them (None: not yet)."""
        path = self._path("upstreams.json")
        try:
            changed = path.lstat().st_mtime_ns
        except OSError:
            return None
        if self._upstreams is not None and self._upstreams[0] == changed:
            return self._upstreams[1]
        data = read_small(path)
        if data is None:
            return None
        try:
            upstreams = _UPSTREAMS.validate_json(data)
        except ValidationError:
            log.error("shared_status_invalid", path=str(path))
            return None
        self._upstreams = (changed, upstreams)
        return upstreams

    async def follow(
        self,
        prepare: Prepare,
        take: Callable[[Followed], Awaitable[None]],
        ready: Callable[[Snapshot], Awaitable[None]] | None = None,
        current: Callable[[], Snapshot | None] = lambda: None,
    ) -> None:
        """Read back each catalog offered (then `prepare` it, in the same thread, and make
        `ready` for it), say so, `take` it once it is named current, and say so. One offered
        in part is put into the catalog served (`current`) if it is the one it changes."""
        self.note_serving()  # it answers: through the building worker until it serves one
        seen: str | None = None
        while True:
            offer = read_note(self._path("offered.json"), _Offer)
            if offer is not None and offer.generation != seen and self._ours(offer.generation):
                seen = offer.generation
                followed = await self._load(offer, prepare, ready, current)
                try:
                    if followed is not None and await self._named(offer.generation):
                        await take(followed)
                        self._taken = (offer.generation, followed)
                        write_note(self._path(f"swapped.{self.worker}.json"),
                              _Loaded(generation=offer.generation, loaded=True))  # fmt: skip
                except Exception:  # the catalog before stays served; the next one is read
                    log.exception("shared_catalog_not_served", generation=offer.generation)
                del followed
            await asyncio.sleep(POLL)

    def _ours(self, generation: str) -> bool:
        return generation.startswith(f"{self.run.token}.")

    async def _load(
        self,
        offer: _Offer,
        prepare: Prepare,
        ready: Callable[[Snapshot], Awaitable[None]] | None,
        current: Callable[[], Snapshot | None],
    ) -> Followed | None:
        path = self._path(offer.file)
        taken, base = self._taken, None
        if offer.base is not None and taken is not None and taken[0] == offer.base:
            base = taken[1] if current() is taken[1][0] else None

        def read() -> Followed:
            snapshot, changes = kept.read_changes(path)
            if (offer.base is None) != (changes is None):
                raise StateError(str(path), "in part or whole, not as offered")
            if changes is None:
                return prepare(snapshot, None)
            if base is None:
                raise StateError(str(path), "in part, on a catalog this worker does not serve")
            changed = frozenset(name for names in changes.values() for name in names)
            return prepare(deltas.applied(base[0], snapshot, changes), (base[2], changed))

        try:
            followed: Followed | None = await asyncio.to_thread(read)
            if followed is not None and ready is not None:
                await ready(followed[0])
        except Exception as exc:  # not whole, or not ours to serve: the one before stays
            log.error("shared_catalog_unreadable", path=str(path), error=repr(exc))
            followed = None
        write_note(self._path(f"loaded.{self.worker}.json"),
              _Loaded(generation=offer.generation, loaded=followed is not None))  # fmt: skip
        return followed

    async def _named(self, generation: str) -> bool:
        """Whether `generation` is named current (False: another was offered meanwhile)."""
        deadline = time.monotonic() + 2 * LOAD_WAIT
        while time.monotonic() < deadline:
            current = read_note(self._path("current.json"), _Note)
            if current is not None and current.generation == generation:
                return True
            offer = read_note(self._path("offered.json"), _Offer)
            if offer is not None and offer.generation != generation:
                return False
            await asyncio.sleep(SWAP_POLL)
        return False


def pack_file(
    path: Path, snapshot: Snapshot, stop: threading.Event | None = None,
    changes: deltas.Changes | None = None,
) -> int:  # fmt: skip
    """Write the snapshot packed to `path` (replaced whole; not flushed to disk: it lives as
    long as the run, or until it is uploaded); with `changes`, only those servers' items
    (`deltas.part`)."""
    if changes is not None:
        snapshot = deltas.part(snapshot, changes)
    sizes: list[int] = []
    spool = str(path.parent)
    written(path, lambda out: sizes.append(write_pack(snapshot, out, stop, spool, changes)),
            durable=False)  # fmt: skip
    return sizes[0]
