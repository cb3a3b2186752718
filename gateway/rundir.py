"""The directory a run of `serve --workers N` shares: made private by the parent, its locks,
and its small files, each written whole and read as hostile (a regular file, bounded, of one
exact shape). What the workers say to each other through it is `sharing`'s."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.bounded import read_bounded
from gateway.state import written

MAX_NOTE = 4 << 20  # bytes of any small file here (the upstreams' status is the largest)
SOCKET = "leader.sock"
LOCK = "run.lock"
RUN_PREFIX = ".workers-"
MAX_SOCKET_PATH = 100  # bytes: a Unix socket's path is at most 107 on Linux


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
            if left.is_dir() and not left.is_symlink() and not held(left / LOCK):
                shutil.rmtree(left, ignore_errors=True)
        directory = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=state_dir)).absolute()  # 0700
        lock = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        socket = directory / SOCKET
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:  # too long to bind: a short one
            socket = Path(tempfile.mkdtemp(prefix="mcp-gateway-")) / SOCKET
        return cls(directory, secrets.token_hex(8), workers, socket, lock)

    @property
    def listening(self) -> Path:
        """Made once the building worker listens (one that cannot, such as on an address in
        use, leaves the others to fail alike): from then on, its end stops the others."""
        return self.directory / "listening"

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


def held(path: Path) -> bool:
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


def hold(path: Path) -> int:
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


def write_small(path: Path, data: bytes) -> None:
    def write(out: BinaryIO) -> None:
        out.write(data)

    written(path, write, durable=False)


def write_note(path: Path, model: BaseModel) -> None:
    write_small(path, model.model_dump_json().encode())


def read_small(path: Path) -> bytes | None:
    """A small regular file's bytes (None: absent, a symlink, not a regular file, too large)."""
    try:
        return read_bounded(path, MAX_NOTE, follow=False)
    except OSError:
        return None


N = TypeVar("N", bound=BaseModel)


def read_note(path: Path, shape: type[N]) -> N | None:
    data = read_small(path)
    if data is None:
        return None
    try:
        return shape.model_validate_json(data)
    except ValidationError:
        return None
