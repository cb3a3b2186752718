"""`serve --workers N` shares one catalog: the first worker syncs every upstream and builds;
every other worker reads back what it built, and they all swap it in together.

The building worker packs each catalog it builds (the kept catalog's format, `packed`) into
a directory of its own that the parent process made for this run, offers it there
(`offered.json`), waits until every other worker has read it back (`loaded.<worker>.json`,
at most `LOAD_WAIT` seconds: a worker that does not answer is not waited for again), names
it current (`current.json`) and swaps; each other worker swaps the moment it reads that.
So the workers serve the same bytes (the same ETags, cursors any of them accepts) and make
the upstream requests of one. Each says when it serves (`serving.<worker>`) and reports
ready only once every living worker has (a lock on `alive.<worker>`, or `ended.<worker>`
from the parent, tells the dead): a ready answer from any means every worker answers. What
only the building worker knows the others read from it: its upstreams' status from
`upstreams.json`, the operator endpoints over its Unix socket (`leader`).

Every file there is read as hostile: a regular file, bounded, of one exact shape, and a
catalog only of this run's generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway import kept
from gateway.bounded import read_bounded
from gateway.errors import Stopped
from gateway.pack import write_pack
from gateway.state import written
from gateway.status import UpstreamStatus

if TYPE_CHECKING:
    from gateway.build import Order
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.sharing")

LOAD_WAIT = 60.0  # seconds the building worker waits for the others to read a catalog
POLL = 0.1  # seconds between looks for a new catalog offered
SWAP_POLL = 0.002  # seconds between looks for the catalog read back to be named current
SWAP_WAIT = 5.0  # seconds the building worker waits for the others to swap a catalog named
MAX_NOTE = 4 << 20  # bytes of any small file here (the upstreams' status is the largest)
SOCKET = "leader.sock"
LOCK = "run.lock"
RUN_PREFIX = ".workers-"
MAX_SOCKET_PATH = 100  # bytes: a Unix socket's path is at most 107 on Linux
_GENERATION = r"[0-9a-f]{16}\.[0-9]{1,12}"
_UPSTREAMS = TypeAdapter(tuple[UpstreamStatus, ...])
Followed = tuple["Snapshot", int, "Order"]  # a catalog read back, and its search index's update


class _Note(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    generation: str = Field(pattern=rf"\A{_GENERATION}\z")


class _Offer(_Note):
    file: str = Field(pattern=rf"\Acatalog\.{_GENERATION}\.pack\z")


class _Loaded(_Note):
    loaded: bool


@dataclass(frozen=True, slots=True)
class Run:
    """What the parent prepares for its workers: a private directory in `state_dir` (a disk:
    catalogs are hundreds of MB), the run's token, and where the building worker's socket is."""

    directory: Path
    token: str
    workers: int
    socket: Path
    lock: int = -1  # held while the run lives (its workers inherit it): see `prepare`

    @classmethod
    def prepare(cls, state_dir: Path, workers: int) -> Run:
        """A private directory for this run's workers (removed by `close`); those of runs
        that ended without removing theirs (a crash: no process holds their lock) go."""
        state_dir.mkdir(parents=True, exist_ok=True)
        for left in state_dir.glob(f"{RUN_PREFIX}*"):
            if left.is_dir() and not left.is_symlink() and not _held(left / LOCK):
                shutil.rmtree(left, ignore_errors=True)
        directory = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=state_dir)).absolute()  # 0700
        lock = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        socket = directory / SOCKET
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:  # too long to bind: a short one
            socket = Path(tempfile.mkdtemp(prefix="mcp-gateway-")) / SOCKET
        return cls(directory, secrets.token_hex(8), workers, socket, lock)

    @property
    def served(self) -> Path:
        """Made once the building worker serves: from then on, its end stops the others."""
        return self.directory / "served"

    def ended(self, worker: int) -> None:
        """Say a worker ended (the parent saw it: one that died before it could say so too)."""
        with contextlib.suppress(OSError):
            (self.directory / f"ended.{worker}").touch()

    def close(self) -> None:
        if self.socket.parent != self.directory:
            shutil.rmtree(self.socket.parent, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.lock >= 0:
            os.close(self.lock)


def _held(path: Path) -> bool:
    """Whether a live process holds this lock (or it cannot be told: then taken as held)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _hold(path: Path) -> int:
    """A lock held on `path` from the moment it exists there (made aside, then moved)."""
    fd, aside = tempfile.mkstemp(prefix=".alive-", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(aside, path)
    except BaseException:
        os.close(fd)
        Path(aside).unlink(missing_ok=True)
        raise
    return fd


class Shared:
    """One worker's side of the run: the first builds and offers, the others follow."""

    def __init__(self, run: Run, worker: int) -> None:
        self.run = run
        self.worker = worker
        self._generations = 0
        self._gone: set[int] = set()  # workers that did not read a catalog in time
        self.published: Path | None = None  # the file of the catalog served, when offered
        self._upstreams: tuple[int, tuple[UpstreamStatus, ...]] | None = None
        self._alive = _hold(self._path(f"alive.{worker}"))
        self._everyone_serves = False
        self._said_serving = False

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
            _write(self._path(f"serving.{self.worker}"), b"")
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

    def _ended(self, worker: int) -> bool:
        if self._path(f"ended.{worker}").exists():  # the parent saw it end
            return True
        alive = self._path(f"alive.{worker}")
        return alive.is_file() and not alive.is_symlink() and not _held(alive)

    # -- the building worker -------------------------------------------------------------------

    async def publish(self, snapshot: Snapshot) -> None:
        """Offer a catalog just built, and return once every other worker has read it back
        (or `LOAD_WAIT` passed): the caller swaps it in then, as the others do."""
        self._generations += 1
        generation = f"{self.run.token}.{self._generations}"
        path = self._path(f"catalog.{generation}.pack")
        started = time.monotonic()
        stop = threading.Event()
        writing = asyncio.ensure_future(asyncio.to_thread(pack_file, path, snapshot, stop))
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
            return
        packed = time.monotonic() - started
        _note(self._path("offered.json"), _Offer(generation=generation, file=path.name))
        others = set(range(1, self.run.workers)) - self._gone
        waiting, deadline = others, time.monotonic() + LOAD_WAIT
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(SWAP_POLL)
            waiting = {w for w in waiting if self._loaded(w, generation) is None}
        if waiting:
            self._gone |= waiting
            log.error("shared_catalog_not_read", workers=sorted(waiting), waited_s=LOAD_WAIT)
        unread = sorted(w for w in others - waiting if not self._loaded(w, generation))
        if unread:  # they serve the catalog before until one they can read
            log.error("shared_catalog_unreadable", workers=unread)
        _note(self._path("current.json"), _Note(generation=generation))
        # Answered (a sync, a reload) once every worker serves it: they swap within moments.
        swapping = {w for w in others - waiting if self._loaded(w, generation)}
        deadline = time.monotonic() + SWAP_WAIT
        while swapping and time.monotonic() < deadline:
            await asyncio.sleep(SWAP_POLL)
            swapping = {w for w in swapping if not self._swapped(w, generation)}
        self._forget_published()
        self.published = path
        log.info("shared_catalog_offered", bytes=size, packed_ms=round(packed * 1000, 1),
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip

    def _forget_published(self) -> None:
        if self.published is not None:
            self.published.unlink(missing_ok=True)  # a worker still reading it keeps it open
            self.published = None

    def _swapped(self, worker: int, generation: str) -> bool:
        swapped = _read(self._path(f"swapped.{worker}.json"), _Loaded)
        return swapped is not None and swapped.generation == generation

    def _loaded(self, worker: int, generation: str) -> bool | None:
        """Whether a worker read a generation back (None: it has not said yet)."""
        loaded = _read(self._path(f"loaded.{worker}.json"), _Loaded)
        return loaded.loaded if loaded is not None and loaded.generation == generation else None

    def note_upstreams(self, upstreams: tuple[UpstreamStatus, ...]) -> None:
        """Tell the other workers how the upstreams fare (after each sync and build)."""
        try:
            _write(self._path("upstreams.json"), _UPSTREAMS.dump_json(upstreams))
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
        data = _read_bytes(path)
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
        prepare: Callable[[Snapshot], Followed],
        take: Callable[[Followed], Awaitable[None]],
        ready: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        """Read back each catalog offered (then `prepare` it, in the same thread, and make
        `ready` for it), say so, `take` it once it is named current, and say so."""
        seen: str | None = None
        while True:
            offer = _read(self._path("offered.json"), _Offer)
            if offer is not None and offer.generation != seen and self._ours(offer.generation):
                seen = offer.generation
                followed = await self._load(offer, prepare, ready)
                try:
                    if followed is not None and await self._named(offer.generation):
                        await take(followed)
                        _note(self._path(f"swapped.{self.worker}.json"),
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
        prepare: Callable[[Snapshot], Followed],
        ready: Callable[[Snapshot], Awaitable[None]] | None,
    ) -> Followed | None:
        path = self._path(offer.file)
        try:
            followed: Followed | None = await asyncio.to_thread(lambda: prepare(kept.read(path)))
            if followed is not None and ready is not None:
                await ready(followed[0])
        except Exception as exc:  # not whole, or not ours to serve: the one before stays
            log.error("shared_catalog_unreadable", path=str(path), error=repr(exc))
            followed = None
        _note(self._path(f"loaded.{self.worker}.json"),
              _Loaded(generation=offer.generation, loaded=followed is not None))  # fmt: skip
        return followed

    async def _named(self, generation: str) -> bool:
        """Whether `generation` is named current (False: another was offered meanwhile)."""
        deadline = time.monotonic() + 2 * LOAD_WAIT
        while time.monotonic() < deadline:
            current = _read(self._path("current.json"), _Note)
            if current is not None and current.generation == generation:
                return True
            offer = _read(self._path("offered.json"), _Offer)
            if offer is not None and offer.generation != generation:
                return False
            await asyncio.sleep(SWAP_POLL)
        return False


def pack_file(path: Path, snapshot: Snapshot, stop: threading.Event | None = None) -> int:
    """Write the snapshot packed to `path` (replaced whole; not flushed to disk: it lives as
    long as the run, or until it is uploaded)."""
    sizes: list[int] = []
    spool = str(path.parent)
    written(path, lambda out: sizes.append(write_pack(snapshot, out, stop, spool)), durable=False)
    return sizes[0]


def _write(path: Path, data: bytes) -> None:
    def write(out: BinaryIO) -> None:
        out.write(data)

    written(path, write, durable=False)


def _note(path: Path, note: _Note) -> None:
    _write(path, note.model_dump_json().encode())


def _read_bytes(path: Path) -> bytes | None:
    """A small regular file's bytes (None: absent, a symlink, not a regular file, too large)."""
    try:
        return read_bounded(path, MAX_NOTE, follow=False)
    except OSError:
        return None


N = TypeVar("N", bound=_Note)


def _read(path: Path, shape: type[N]) -> N | None:
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        return shape.model_validate_json(data)
    except ValidationError:
        return None
