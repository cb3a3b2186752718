"""Reads up to a size: answers from other hosts (upstream registries, package mirrors) and
files (config, file upstreams). What holds more than it may is never read in full, and a file
that is not a regular file (a FIFO, a device such as `/dev/zero`, a directory) is refused
without waiting on it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.errors import FileRefused


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What tells a changed file from an unchanged one without reading it."""

    mtime_ns: int
    size: int


def read_bounded(path: Path, limit: int, *, follow: bool = True) -> bytes:
    """A regular file's bytes, at most `limit` of them (a larger file is refused); with
    `follow=False` a symlink is refused too."""
    data, _ = read_file_bounded(path, limit, follow=follow)
    assert data is not None
    return data


def read_file_bounded(
    path: Path, limit: int, unless: FileStamp | None = None, *, follow: bool = True
) -> tuple[bytes | None, FileStamp]:
    """A regular file's bytes (None when its stamp is `unless`: unchanged), and its stamp.
    Blocking: a hung mount blocks it (see `detached`)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags if follow else flags | os.O_NOFOLLOW)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefused("not a regular file")
        stamp = FileStamp(status.st_mtime_ns, status.st_size)
        if stamp == unless:
            return None, stamp
        if status.st_size > limit:
            raise FileRefused(f"larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(f"larger than {limit} bytes")
    return data, stamp


async def read_body(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The response's body, or None when it is larger than `cap` bytes (announced or sent)."""
    if (response.content_length or 0) > cap:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
