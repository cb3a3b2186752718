"""Advisory feeds (trust.yaml's `osv`): read each file, keep it current, keep the last good.

A feed is a zip of OSV records, a directory of them (`*.json`, at any depth), or one JSON
file (a record or a list of them). It is read in the helper process (`isolated`): hundreds of
thousands of records are seconds of parsing that would otherwise hold the serving loop. What
comes back is the compact index (`osv.Advisories`).

Reading is bounded: `max_bytes` of records in all (uncompressed: a zip's declared sizes are
not trusted, each member is read up to its bound), `max_records`, a record at most
`osv.MAX_RECORD_BYTES`; links and special files in a directory are not followed. A feed that
cannot be read, or is mostly malformed, is refused (`FeedInvalid`) and the last good one is
kept: advisories never turn unknown because a refresh failed. Until a feed has loaded once,
the package types it speaks for are unknown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import structlog

from gateway import isolated
from gateway.config import redact_url
from gateway.errors import FeedInvalid, RedirectRefused
from gateway.fetching import confined
from gateway.locations import origin
from gateway.osv import MAX_RECORD_BYTES, Advisories, Affected, read_feed
from gateway.trust_config import OsvFeed, TrustSettings

log = structlog.get_logger("gateway.advisories")


class _Budget:
    def __init__(self, feed: OsvFeed) -> None:
        self.bytes = feed.max_bytes
        self.records = feed.max_records

    def take(self, size: int) -> None:
        self.bytes -= size
        self.records -= 1
        if self.bytes < 0:
            raise FeedInvalid("its records are larger than max_bytes")
        if self.records < 0:
            raise FeedInvalid("it has more records than max_records")


def _from_zip(path: Path, budget: _Budget) -> Iterator[bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise FeedInvalid(f"{path} does not exist") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise FeedInvalid(f"{path.name} is not a readable zip: {exc}") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and m.filename.endswith(".json")]
        if len(members) > budget.records:
            raise FeedInvalid("it has more records than max_records")
        for member in members:
            try:
                with archive.open(member) as stream:
                    data = stream.read(MAX_RECORD_BYTES + 1)
            except Exception as exc:  # a damaged member: zlib, lzma, bz2 and zipfile each raise
                raise FeedInvalid(f"{member.filename!r} cannot be read: {exc!r}") from exc
            budget.take(len(data))
            yield data  # a record over the bound is read no further, and skipped as malformed


def _regular(path: Path) -> os.stat_result | None:
    """The file's status when it is a regular file, not a link (None otherwise)."""
    info = path.lstat()
    return info if stat.S_ISREG(info.st_mode) else None


def _from_directory(path: Path, budget: _Budget) -> Iterator[bytes]:
    for found in sorted(path.rglob("*.json")):
        info = _regular(found)
        if info is None:
            continue
        with found.open("rb") as stream:
            data = stream.read(MAX_RECORD_BYTES + 1)
        budget.take(len(data))
        yield data


def documents(feed: OsvFeed, path: Path) -> Iterator[bytes]:
    """The records of the feed's file at `path` as bytes, within its bounds (`FeedInvalid`
    past them)."""
    budget = _Budget(feed)
    try:
        if path.is_dir() and not path.is_symlink():
            yield from _from_directory(path, budget)
        elif path.suffix == ".zip":
            yield from _from_zip(path, budget)
        else:
            info = _regular(path)
            if info is None:
                raise FeedInvalid(f"{path} is not a regular file")
            if info.st_size > feed.max_bytes:
                raise FeedInvalid("it is larger than max_bytes")
            yield path.read_bytes()[: feed.max_bytes + 1]
    except FileNotFoundError as exc:
        raise FeedInvalid(f"{path} does not exist") from exc
    except OSError as exc:
        raise FeedInvalid(f"{path} cannot be read: {exc}") from exc


def read(feed: OsvFeed, path: Path) -> Advisories:
    """One feed's file, read and indexed (in the helper process: see the module's docstring).
    Records are read one at a time, never all held at once."""
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for data in documents(feed, path):
            digest.update(len(data).to_bytes(8, "little") + data)
            yield data

    advisories = read_feed(hashed(), frozenset(feed.ecosystems))
    advisories = dataclasses.replace(advisories, digest=digest.hexdigest())
    advisories.feeds.update((kind, (feed.name,)) for kind in feed.ecosystems)
    if advisories.records > feed.max_records:  # one file may hold a list of records
        raise FeedInvalid("it has more records than max_records")
    if good(advisories) == 0:  # an error page, an empty file or directory: not "no advisories"
        raise FeedInvalid("it has no OSV record", advisories.skipped)
    return advisories


def good(advisories: Advisories) -> int:
    """The records of a feed that were read, not skipped."""
    return advisories.records - sum(advisories.skipped.values())


def signature(path: Path) -> tuple[int, int, int]:
    """What changes when a feed's files do: (files, total size, newest mtime)."""
    try:
        if path.is_dir() and not path.is_symlink():
            infos = [info for p in path.rglob("*.json") if (info := _regular(p)) is not None]
        else:
            infos = [path.stat()]
    except OSError:
        return (-1, -1, -1)
    return (
        len(infos),
        sum(i.st_size for i in infos),
        max((i.st_mtime_ns for i in infos), default=0),
    )


def read_all(settings: TrustSettings, state_dir: Path) -> tuple[Advisories | None, list[str]]:
    """Every feed read now, in this process, from its file (a URL feed's last download in
    `state_dir`: the commands that work offline fetch nothing): what they say together, and
    why a feed could not be read."""
    states, errors = [], []
    for feed in settings.osv:
        state = FeedState(feed)
        try:
            state.advisories = read(feed, feed.path(state_dir))
        except FeedInvalid as exc:
            errors.append(f"advisory feed {feed.name!r}: {exc}")
        states.append(state)
    return merged(states), errors


@dataclass(slots=True)
class FeedState:
    """One feed's last good data and how its reads went (for status and logs)."""

    settings: OsvFeed
    advisories: Advisories | None = None
    loaded_at: datetime | None = None  # when the data in use was read
    checked_at: datetime | None = None
    last_error: str | None = None
    failing_since: datetime | None = None
    signature: tuple[int, int, int] | None = None  # of the files last read
    skipped: dict[str, int] = field(default_factory=dict)
    validators: dict[str, str] = field(default_factory=dict)  # a URL's ETag, Last-Modified


def merged(states: list[FeedState]) -> Advisories | None:
    """Every loaded feed as one index (None when none has loaded); a type some feed that has
    not loaded speaks for is not covered (unknown)."""
    loaded = [s.advisories for s in states if s.advisories is not None]
    if not loaded:
        return None
    waiting = {kind for s in states if s.advisories is None for kind in s.settings.ecosystems}
    if len(loaded) == 1 and not waiting:
        return loaded[0]
    packages: dict[tuple[str, str], tuple[Affected, ...]] = {}
    for one in loaded:
        for key, found in one.packages.items():
            packages[key] = packages.get(key, ()) + found
    covers = frozenset().union(*(one.covers for one in loaded)) - waiting
    digest = hashlib.sha256("".join(one.digest for one in loaded).encode()).hexdigest()
    newest = max((one.newest for one in loaded if one.newest), default=None)
    feeds: dict[str, tuple[str, ...]] = {}
    for one in loaded:
        for kind, names in one.feeds.items():
            feeds[kind] = feeds.get(kind, ()) + names
    records = sum(one.records for one in loaded)
    return Advisories(packages, covers, records, {}, digest, newest, feeds)


class Feeds:
    """trust.yaml's advisory feeds for one gateway: downloaded (URL feeds, into `state_dir`),
    read, refreshed, merged."""

    def __init__(
        self,
        settings: TrustSettings,
        state_dir: Path,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.session = session
        self.states = [FeedState(feed) for feed in settings.osv]
        self.current: Advisories | None = None

    async def refresh(self, force: bool = False) -> bool:
        """Download what changed at each URL, read every feed whose file changed (all, with
        `force`); True when what the feeds say changed."""
        changed = False
        before = self.pending()
        for state in self.states:
            changed = await self._refresh(state, force) or changed
        changed = changed or self.pending() != before
        if changed:
            self.current = merged(self.states)
        return changed

    def pending(self) -> frozenset[str]:
        """The types some feed speaks for that has not loaded yet: unknown whatever the
        others say (a malware feed down must not make a vulnerability feed's silence count)."""
        return frozenset(
            kind for s in self.states if s.advisories is None for kind in s.settings.ecosystems
        )

    async def _refresh(self, state: FeedState, force: bool) -> bool:
        now = datetime.now(UTC)
        state.checked_at = now
        feed = state.settings
        path = feed.path(self.state_dir)
        fetched = True
        if feed.url is not None and self.session is not None:
            try:
                await download(feed, self.session, path, state.validators)
            except FeedInvalid as exc:
                fetched = False
                self._failed(state, now, exc)
                # The last good feed is kept; after a restart, the last download is read.
                if state.advisories is not None or not await asyncio.to_thread(path.exists):
                    return False
        seen = await asyncio.to_thread(signature, path)
        if not force and seen == state.signature and state.last_error is None:
            return False
        started = time.monotonic()
        try:
            advisories = await isolated.run(read, feed, path)
            last = state.advisories
            if last is not None and good(advisories) * 2 < good(last):
                raise FeedInvalid(  # a truncated or half-written feed, most likely
                    f"it has {good(advisories)} good records where the last good feed had "
                    f"{good(last)}: fewer than half", advisories.skipped
                )  # fmt: skip
        except Exception as exc:  # FeedInvalid, HelperFailed, or what a damaged file raised
            state.signature = seen
            self._failed(state, now, exc)
            return False
        state.signature = seen
        if fetched:
            state.last_error, state.failing_since = None, None
        state.skipped = dict(advisories.skipped)
        if state.advisories is not None and state.advisories.digest == advisories.digest:
            return False
        state.advisories, state.loaded_at = advisories, now
        log.info("advisory_feed_loaded", feed=feed.name, records=advisories.records,
                 packages=len(advisories.packages), skipped=advisories.skipped,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        return True

    def _failed(self, state: FeedState, now: datetime, exc: Exception) -> None:
        state.last_error = str(exc)
        state.failing_since = state.failing_since or now
        skipped = exc.skipped if isinstance(exc, FeedInvalid) else {}
        log.warning("advisory_feed_refused", feed=state.settings.name, error=str(exc),
                    skipped=skipped, keeping=state.loaded_at is not None)  # fmt: skip

    def interval(self) -> float:
        return min((feed.refresh for feed in self.settings.osv), default=300.0)


# -- a feed by URL ------------------------------------------------------------------------------

_WRITE_BYTES = 1 << 20  # written to disk (in a worker thread) a megabyte at a time


async def download(
    feed: OsvFeed, session: aiohttp.ClientSession, path: Path, validators: dict[str, str]
) -> bool:
    """Fetch the feed's URL into `path` (True) unless it is unchanged (a 304 to the last
    validators): redirects only on the URL's own host, `max_bytes` at most, written to a
    temporary file and renamed, so a reader never sees half of it. `FeedInvalid` otherwise."""
    assert feed.url is not None
    shown = redact_url(feed.url)
    headers = {key: value.get_secret_value() for key, value in feed.headers.items()}
    if await asyncio.to_thread(path.exists):
        if "etag" in validators:
            headers["If-None-Match"] = validators["etag"]
        if "modified" in validators:
            headers["If-Modified-Since"] = validators["modified"]
    partial = path.with_name(path.name + ".part")

    async def save(response: aiohttp.ClientResponse) -> bool:
        if response.status == 304:
            return False
        if response.status != 200:
            raise FeedInvalid(f"HTTP {response.status} from {shown}")
        if (response.content_length or 0) > feed.max_bytes:
            raise FeedInvalid(f"{shown} is larger than max_bytes")
        await asyncio.to_thread(partial.parent.mkdir, parents=True, exist_ok=True)
        size, pending = 0, bytearray()
        with partial.open("wb") as out:
            async for chunk in response.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > feed.max_bytes:
                    raise FeedInvalid(f"{shown} is larger than max_bytes")
                pending += chunk
                if len(pending) >= _WRITE_BYTES:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(out.write, bytes(pending))
        return True

    timeout = aiohttp.ClientTimeout(total=feed.timeout)
    try:
        _, fresh, answered = await confined(
            session, "GET", feed.url, origin(feed.url), lambda _: headers, timeout, save
        )
    except BaseException as exc:
        await asyncio.to_thread(_replace_or_drop, partial, path, False)
        if isinstance(exc, RedirectRefused):
            raise FeedInvalid(f"{shown}: {exc}") from None
        if isinstance(exc, (TimeoutError, aiohttp.ClientError, ValueError, OSError)):
            raise FeedInvalid(f"{shown} could not be fetched: {type(exc).__name__}") from None
        raise
    if fresh:
        await asyncio.to_thread(_replace_or_drop, partial, path, True)
        validators.clear()
        if "ETag" in answered:
            validators["etag"] = answered["ETag"]
        if "Last-Modified" in answered:
            validators["modified"] = answered["Last-Modified"]
    return fresh


def _replace_or_drop(partial: Path, path: Path, keep: bool) -> None:
    if keep and partial.exists():
        partial.replace(path)
    else:
        partial.unlink(missing_ok=True)
