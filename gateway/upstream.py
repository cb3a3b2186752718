"""Reading upstreams: MCP registries over HTTP (full walks and incremental polls) and files.

aiohttp and timeout errors are caught here, at the boundary, and re-raised as the gateway's own:
`UpstreamUnavailable` (retried, one request at a time) or `UpstreamInvalid` (not retried).
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base
from yarl import URL

from gateway.bounded import FileStamp, read_body, read_file_bounded
from gateway.config import RetrySettings, UpstreamSettings, redact_url
from gateway.detached import detached
from gateway.entry import Entry, parse_item
from gateway.errors import (
    EntryRejected,
    RedirectRefused,
    StillBlocked,
    UpstreamInvalid,
    UpstreamUnavailable,
)
from gateway.fetching import REDIRECTS, confined
from gateway.names import identity_matches
from gateway.page import Raw, read_page
from gateway.stepping import paced

SKIPPED_EXAMPLES = 5  # names (or reasons) of skipped items kept for the log
MIN_REJECTED = 10  # a page with at least this many bad items, and more bad than good, fails
OVER_CAP = "entry is over max_entry_bytes"


@dataclass(slots=True)
class Batch:
    """What one sync read: accepted entries, items left out (counted by reason, the first few
    named), and how many pages it took."""

    entries: list[Entry] = field(default_factory=list)
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    pages: int = 0
    texts: dict[str, str] = field(default_factory=dict)  # search texts, one string each

    def skip(self, reason: str, name: str | None) -> None:
        self.skipped += 1
        self.reasons[reason] += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(f"{name}: {reason}" if name else reason)


def _parsed(item: Any, cap: int) -> Any:
    """An item as parsed JSON: `Raw` items (of a split page) are parsed here, one by one,
    unless far over the size cap (then they are not worth parsing)."""
    if not isinstance(item, Raw):
        return item
    if len(item.json) > 4 * cap:
        raise EntryRejected(OVER_CAP)
    try:
        return orjson.loads(item.json)
    except orjson.JSONDecodeError:
        raise EntryRejected("entry is not JSON") from None


def _size(item: Any, parsed: Any, cap: int) -> int:
    """An entry's size as compact JSON (a `Raw` item within the cap is within it compact)."""
    if isinstance(item, Raw) and len(item.json) <= cap:
        return len(item.json)
    return len(orjson.dumps(parsed))


def ingest(
    items: list[Any], settings: UpstreamSettings, seen_at: datetime, batch: Batch, where: str
) -> None:
    """Parse raw items into the batch, one by one: a bad item is skipped, the rest is kept,
    unless more than half of them (and at least MIN_REJECTED) are bad: then the page is
    invalid, and the sync fails. Applies the upstream's include/exclude globs and its size
    cap per entry. Blocking: call it off the event loop."""
    cap = settings.max_entry_bytes
    include = None if settings.include == ["*"] else settings.include  # the default: all
    exclude = settings.exclude
    rejected = 0
    for item in paced(items, 64):
        try:
            parsed = _parsed(item, cap)
            entry = parse_item(parsed, seen_at=seen_at, shared=batch.texts)
            if _size(item, parsed, cap) > cap:
                raise EntryRejected(OVER_CAP, entry.name)
        except EntryRejected as exc:
            rejected += 1
            batch.skip(exc.reason, exc.name)
            continue
        if include is not None and not identity_matches(entry.identity, include):
            continue
        if exclude and identity_matches(entry.identity, exclude):
            continue
        batch.entries.append(entry)
    if rejected >= MIN_REJECTED and rejected * 2 > len(items):
        common = batch.reasons.most_common(3)
        reasons = ", ".join(f"{reason} ({count})" for reason, count in common)
        raise UpstreamInvalid(
            settings.name, f"{rejected} of the {len(items)} items of {where} are invalid: {reasons}"
        )


def read_items(
    body: bytes,
    settings: UpstreamSettings,
    seen_at: datetime,
    batch: Batch,
    where: str,
    limit: int | None,
) -> tuple[int, str | None]:
    """One page (or file) into the batch; returns how many items it had, and its cursor.
    Blocking, and long for a hostile page: call it in a worker thread (see `page`)."""
    items, cursor = read_page(body, settings.name, limit)
    ingest(items, settings, seen_at, batch, where)
    return len(items), cursor


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


class _Backoff(wait_base):
    """Exponential backoff, except that an upstream's Retry-After decides when it gives one."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, UpstreamUnavailable) and exc.retry_after is not None:
            return exc.retry_after
        wait: float = self.settings.initial_wait * 2 ** (retry_state.attempt_number - 1)
        return min(wait, self.settings.max_wait)


class RegistryClient:
    """Reads one MCP registry's list endpoint; retries each request, never a whole sync."""

    def __init__(self, settings: UpstreamSettings, session: aiohttp.ClientSession) -> None:
        assert settings.url is not None
        self.settings = settings
        self.session = session
        self.list_url = f"{settings.url}/{settings.api}/servers"
        self.shown_url = redact_url(self.list_url)  # for errors: no user:password in logs
        self.headers = {k: v.get_secret_value() for k, v in settings.headers.items()}

    async def _get_once(self, params: dict[str, str]) -> bytes:
        name = self.settings.name
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        url = URL(self.list_url).update_query(params)
        assert self.settings.url is not None
        # Redirects only under the upstream's own URL, its headers along (see `fetching`).
        under = redact_url(self.settings.url).rstrip("/") + "/"
        try:
            _, body, _ = await confined(
                self.session, "GET", url, under, lambda _: self.headers, timeout, self._read_ok
            )
            return body
        except RedirectRefused as exc:
            raise UpstreamInvalid(name, str(exc), url=self.shown_url) from None
        except ValueError:  # a Location that is not a URL
            raise UpstreamInvalid(name, "a redirect to no URL", url=self.shown_url) from None
        except TimeoutError:
            raise UpstreamUnavailable(name, "timed out", url=self.shown_url) from None
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}".replace(self.list_url, self.shown_url)
            raise UpstreamUnavailable(name, reason, url=self.shown_url) from None

    async def _read_ok(self, response: aiohttp.ClientResponse) -> bytes:
        """A page's body, or the error its status says (429 and 5xx are retried)."""
        name = self.settings.name
        if response.status == 429 or response.status >= 500:
            cap = self.settings.retry.max_wait
            raise UpstreamUnavailable(
                name,
                f"HTTP {response.status}",
                url=self.shown_url,
                retry_after=_retry_after(response.headers.get("Retry-After"), cap),
            )
        if response.status in REDIRECTS:  # a redirect without a Location
            raise UpstreamInvalid(name, f"HTTP {response.status}", url=self.shown_url)
        if response.status != 200:
            raise UpstreamInvalid(name, f"HTTP {response.status}", url=self.shown_url)
        return await self._read_capped(response)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        body = await read_body(response, self.settings.max_page_bytes)
        if body is None:
            cap = self.settings.max_page_bytes
            message = f"page larger than max_page_bytes ({cap})"
            raise UpstreamInvalid(self.settings.name, message, url=self.shown_url)
        return body

    async def get_page(self, params: dict[str, str]) -> bytes:
        """One list page's body, with the configured retries around this single request."""
        retry = self.settings.retry
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(UpstreamUnavailable),
            stop=stop_after_attempt(retry.attempts),
            wait=_Backoff(retry),
            reraise=True,
        ):
            with attempt:
                return await self._get_once(params)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def walk(self, updated_since: str | None = None) -> Batch:
        """Every page of the list, or of the changes since a timestamp, following nextCursor."""
        batch = Batch()
        seen_cursors: set[str] = set()
        cursor: str | None = None
        now = datetime.now(UTC)
        while True:
            # Deleted entries are asked for too: downstream consumers syncing incrementally
            # from this gateway must learn of deletions (updated_since implies them).
            params = {"limit": str(self.settings.page_size), "include_deleted": "true"}
            if updated_since is not None:
                params["updated_since"] = updated_since
            if cursor is not None:
                params["cursor"] = cursor
            body = await self.get_page(params)
            batch.pages += 1
            # Parsing and checking a page is CPU work on bytes from a stranger: in a worker
            # thread, in steps that give the GIL up (see `page`).
            count, cursor = await asyncio.to_thread(
                read_items, body, self.settings, now, batch, f"page {batch.pages}",
                self.settings.page_size,
            )  # fmt: skip
            if not count or cursor is None:
                return batch
            if cursor in seen_cursors:
                raise UpstreamInvalid(self.settings.name, f"cursor loop at page {batch.pages}")
            if batch.pages >= self.settings.max_pages:
                limit = self.settings.max_pages
                raise UpstreamInvalid(self.settings.name, f"more than max_pages ({limit}) pages")
            seen_cursors.add(cursor)


def read_file(settings: UpstreamSettings, raw: bytes, stamp: FileStamp) -> Batch:
    """A file upstream's entries from its bytes (a file is one page: `max_page_bytes`); an
    entry without timestamps takes the file's modification time."""
    assert settings.file is not None
    batch = Batch(pages=1)
    modified = datetime.fromtimestamp(stamp.mtime_ns / 1e9, UTC)
    read_items(raw, settings, modified, batch, str(settings.file), None)
    return batch


async def read_changed_file(
    settings: UpstreamSettings, known: FileStamp | None
) -> tuple[bytes | None, FileStamp]:
    """A file upstream's bytes, or None when its stamp is still `known`; and its stamp. Only a
    regular file is read; a read that blocks (a hung mount) fails after `timeout`, and
    neither the event loop nor shutdown waits on it."""
    path, name = settings.file, settings.name
    assert path is not None
    try:
        return await detached(
            functools.partial(read_file_bounded, path, settings.max_page_bytes, known),
            settings.timeout,
            f"read-{name}",
        )
    except StillBlocked:
        raise UpstreamUnavailable(
            name, f"reading {path} did not finish within {settings.timeout:g} s"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UpstreamUnavailable(name, f"cannot read {path}: {reason}") from None
