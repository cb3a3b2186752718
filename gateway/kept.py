"""The served catalog kept in `state_dir` for a restart (`snapshot.pack`, see `packed`): a
restarted gateway serves it at once, while it loads its upstreams' state and builds, then
swaps in what it built.

It is written when the gateway stops (and, with `keep_catalog_every`, after builds), in a
worker thread, atomically: a crash leaves the last one whole, and its leftovers are removed
at the next start. It is served only by the gateway and config it was
built with (its fingerprint: the version and every setting, secrets as asterisks); with
another it is ignored and logged, and a file that is not a whole packed snapshot is set
aside as `snapshot.pack.corrupt-<time>`, like a corrupt state file. Either way the restart
goes on as without it: state, then a build.
"""

from __future__ import annotations

import mmap
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from gateway.errors import KeptForOther, StateError
from gateway.inplace import in_place
from gateway.pacing import collector_paused
from gateway.pack import write_pack
from gateway.packed import HEADER, Packed, head_length, outline
from gateway.state import set_aside, written
from gateway.unpack import unpack

if TYPE_CHECKING:
    from collections.abc import Callable
    from io import BufferedReader
    from pathlib import Path
    from threading import Event
    from typing import BinaryIO

    from gateway.snapshot import Snapshot

FILE = "snapshot.pack"


def keep(
    state_dir: Path, snapshot: Snapshot, stop: Event | None = None, packed: Path | None = None
) -> int:
    """Write the snapshot to `state_dir`; returns its size in bytes. Blocking, and the
    snapshot must not be released meanwhile (hold it as a reader). Stops, keeping the last
    file, as soon as `stop` is set (`Stopped`). `packed`: a file it is packed in already
    (of `serve --workers N`, see `sharing`), copied instead."""
    state_dir.mkdir(parents=True, exist_ok=True)
    sizes: list[int] = []
    spool = str(state_dir)  # the segments, as they are found (see `write_pack`)

    def write(handle: BinaryIO) -> None:
        if packed is None:
            sizes.append(write_pack(snapshot, handle, stop, spool))
            return
        with packed.open("rb") as source:
            shutil.copyfileobj(source, handle, 1 << 20)
            sizes.append(source.tell())

    written(state_dir / FILE, write)
    return sizes[0]


def restore(state_dir: Path, fingerprint: str) -> Snapshot | None:
    """The kept catalog, if there is one for this config (blocking: a worker thread), served
    in place from the file's bytes (see `inplace`): ready once they are read and checked,
    each item made as it is first read. `KeptForOther` when it is whole but for another
    version or config; `StateError` when it is not whole (the file is set aside first)."""
    for left in state_dir.glob(f".{FILE}.*.tmp"):  # a writer killed before it was done
        left.unlink(missing_ok=True)
    try:
        return _read(state_dir / FILE, fingerprint, serve=True)[0]
    except FileNotFoundError:
        return None


def read(path: Path, fingerprint: str | None = None) -> Snapshot:
    """The packed snapshot in `path` as a live catalog (blocking: a worker thread); with a
    `fingerprint`, only if that config built it (`KeptForOther`). `FileNotFoundError` when
    there is none; `StateError` when it is not whole (the file is set aside first)."""
    return read_changes(path, fingerprint)[0]


def read_changes(
    path: Path, fingerprint: str | None = None
) -> tuple[Snapshot, dict[str, list[str]] | None]:
    """`read`, and the servers it replaces in each view if it is a catalog in part (`deltas`:
    None for a whole one)."""
    return _read(path, fingerprint, serve=False)


def _read(
    path: Path, fingerprint: str | None, *, serve: bool
) -> tuple[Snapshot, dict[str, list[str]] | None]:
    """`read_changes`; `serve`: served in place from the file's bytes, read into memory
    (`inplace`), rather than made whole now (`unpack`)."""
    try:  # never a symlink's target, never waiting on a FIFO
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a symlink, no permission
        raise StateError(str(path), f"cannot be read ({exc.strerror})") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StateError(str(path), "not a regular file")
    with open(fd, "rb") as file:
        if info.st_size == 0:
            reason = "it is empty"
        else:
            try:
                if serve:  # a private copy: a file cut short under a mapping would kill it
                    head = _outlined(file, info.st_size, str(path), fingerprint)
                    read = _whole(file, info.st_size, str(path), head)
                    packed = Packed(read, str(path), digest=False)
                    try:
                        return _checked(packed, fingerprint, str(path), in_place), packed.changes
                    except BaseException:
                        packed.release()  # the buffer goes now, not with the traceback
                        raise
                with (
                    mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as whole,
                    memoryview(whole) as view,
                    Packed(view, str(path), digest=False) as packed,
                ):
                    return _checked(packed, fingerprint, str(path), unpack), packed.changes
            except KeptForOther:
                raise  # whole: left as it is (the config may change back)
            except StateError as exc:
                reason = exc.reason
    aside = set_aside(path)
    raise StateError(str(path), f"{reason}; set aside as {aside.name}")


def _outlined(file: BufferedReader, size: int, source: str, fingerprint: str | None) -> memoryview:
    """Before the whole file is read into memory: that this config built it (`KeptForOther`:
    no need to read the rest) and that it is as long as its contents say (a `StateError`: a
    file grown or cut, or a sparse one of a terabyte, is refused without being read). Its
    header and contents, read so far."""
    head = _whole(file, min(HEADER.size, size), source)
    head = _whole(file, head_length(head, source, size), source, head)
    built_by, length = outline(head, source)
    if fingerprint is not None and built_by != fingerprint:
        raise KeptForOther(source, "kept by another version or config")
    if length != size:
        raise StateError(source, f"it is {size} bytes long, its contents say {length}")
    return head


def _whole(
    file: BufferedReader, size: int, source: str, start: memoryview | None = None
) -> memoryview:
    """The file's first `size` bytes (after those of `start`), read into memory of their own."""
    try:
        buffer = memoryview(bytearray(size))
        read = 0
        if start is not None:
            buffer[: len(start)] = start
            read = len(start)
        while read < size:
            got = file.readinto(buffer[read:])
            if not got:
                raise StateError(source, "it was cut short while it was read")
            read += got
    except MemoryError:
        raise StateError(source, f"{size} bytes do not fit in memory") from None
    except OSError as exc:
        raise StateError(source, f"cannot be read ({exc.strerror or exc})") from exc
    return buffer


def _checked(
    packed: Packed, fingerprint: str | None, path: str, make: Callable[[Packed], Snapshot]
) -> Snapshot:
    """The catalog `make` reads from the buffer, if this config built it and its digest
    holds (hashed on the other core meanwhile: hashing lets go of the GIL)."""
    if fingerprint is not None and packed.fingerprint != fingerprint:
        raise KeptForOther(path, "kept by another version or config")
    with ThreadPoolExecutor(1, "kept-digest") as pool:
        checked = pool.submit(packed.check_digest)
        with collector_paused():  # millions of objects, no cycles (a build's)
            snapshot = make(packed)
        checked.result()
    return snapshot
