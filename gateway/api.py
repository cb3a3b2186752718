"""The read API: answers assembled from pre-serialized bytes, cached per snapshot (its routes
are in `routes`)."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cachetools import LRUCache

from gateway import __version__
from gateway.catalog import ViewCatalog
from gateway.errors import (
    BadRequest,
    Busy,
    MethodNotAllowed,
    NotFound,
    NotReady,
    OverAllowance,
    UnknownView,
)
from gateway.pacing import ON_LOOP, Allowance
from gateway.query import parse_include_deleted, parse_list_query, select_page
from gateway.rendered import (
    CLOCK,
    Bodies,
    Page,
    Rendered,
    list_body,
    list_tail,
    remade_page,
    render,
    rendered_bytes,
)
from gateway.routes import Route
from gateway.snapshot import Snapshot

READ_METHODS = frozenset({"GET", "HEAD"})
SERVER_NOT_FOUND = "Server not found"


# What a remembered URL holds besides its text, and a cache key besides its parameters' text:
# what cache budgets count (with `Rendered.held`).
URL_BYTES = 384
KEY_BYTES = 512
# How long the answers of the snapshot before are kept after a newer one is served, for
# those that did not change to be carried over (a rebuild after a sync changes few pages).
CARRY_SECONDS = 30.0
T = TypeVar("T")
_CHANCE = random.Random()  # which remembered URLs are forgotten when the room runs out


class Cached:
    """An answer in the cache by query, and the bytes its key holds."""

    __slots__ = ("key_bytes", "rendered")

    def __init__(self, key_bytes: int, rendered: Rendered) -> None:
        self.key_bytes = key_bytes + KEY_BYTES
        self.rendered = rendered

    def held(self) -> int:
        return self.key_bytes + self.rendered.held()


class Api:
    """Answers read requests from the current snapshot, caching rendered pages per snapshot.

    Two caches, each bounded by the bytes it holds (keys, bodies, gzip forms once made, and the
    objects around them), so a client sending distinct long queries cannot grow memory: the
    answers by exact URL for the fast path (no bookkeeping on a hit; when the room runs out,
    a URL chosen at random is forgotten, so a walk larger than the room still finds a good
    share of its pages, where forgetting the oldest or all would find none), and the answers
    by query (least recently used out). List pages are held as their items (a pointer each),
    their bodies in what the caches leave of the budget (`Bodies`) and written again from the
    items when let go: a walk through every page of a large catalog stays in the cache, where
    whole bodies would have emptied it again and again, and a walk that fits is answered from
    whole bodies.
    """

    def __init__(self, cache_bytes: int = 64 * 1024 * 1024, urls: int = 20_000) -> None:
        # One budget: answers by URL up to a half, by query an eighth, bodies the rest
        # (an eighth at least).
        self._budget = cache_bytes
        self._url_bytes = cache_bytes // 2
        self._query_bytes = cache_bytes // 8
        self._urls = urls
        self._cache: LRUCache[object, Cached] = self._new_cache()
        self._by_url: dict[str, tuple[str, Rendered]] = {}
        self._urls_held: list[str] = []  # the same URLs, to choose one at random
        self._slots: dict[str, int] = {}  # and where each is in that list
        self._by_url_bytes = 0
        self._bodies = self._new_bodies()
        self._cached_for: Snapshot | None = None
        # The answers given from the snapshot before, for a while after a newer one is served:
        # where one is still the answer (its page unchanged), it is carried over, not made.
        self._before: tuple[dict[str, tuple[str, Rendered]], LRUCache[object, Cached]] | None
        self._before = None
        self._before_until = 0.0

    def recall(self, snapshot: Snapshot | None, raw: str) -> tuple[str, Rendered] | None:
        """The answer already given to this exact URL from this snapshot, with its endpoint."""
        if snapshot is None or snapshot is not self._cached_for:
            return None
        known = self._by_url.get(raw)
        if known is not None:
            known[1].used = CLOCK.tick()
        return known

    def _new_bodies(self) -> Bodies:
        return Bodies(
            self._budget // 8,
            lambda: self._budget - int(self._cache.currsize) - self._by_url_bytes,
        )

    def _new_cache(self) -> LRUCache[object, Cached]:
        return LRUCache(maxsize=self._query_bytes, getsizeof=Cached.held)

    def held(self) -> int:
        """The bytes both caches and the bodies kept count now."""
        return int(self._cache.currsize) + self._by_url_bytes + self._bodies.bytes

    def answer(
        self,
        snapshot: Snapshot | None,
        route: Route,
        params: Mapping[str, str],
        raw: str | None = None,
    ) -> Rendered | Later:
        """The answer, or (a search longer than the serving loop gives one request) a `Later`
        that finishes it in a worker thread."""
        if route.endpoint == "health":
            return render({"status": "ok"})
        if route.endpoint == "ping":
            return render({"pong": True})
        if route.endpoint == "version_info":
            return render({"version": __version__})
        if snapshot is None:
            raise NotReady([])
        view = snapshot.views.get(route.view)
        if view is None:
            raise UnknownView(route.view)
        if snapshot is not self._cached_for:
            self._turn_over(snapshot)
        if route.endpoint == "list":
            query = parse_list_query(params)
            key: object = ("list", route.view, query)
        else:
            include_deleted = bool(parse_include_deleted(params.get("include_deleted")))
            key = (route.endpoint, route.view, route.name, route.version, include_deleted)
        cached = self._cache.get(key)
        if cached is not None:
            cached.rendered.used = CLOCK.tick()
            self._remember(raw, route.endpoint, cached.rendered)
            return cached.rendered
        # What the key holds: at most the text of the parameters it was parsed from.
        held = sum(len(k) + len(v) for k, v in params.items()) + len(route.name or "")
        held += len(route.version or "")
        if route.endpoint == "list":
            before = self._answered_before(raw, key)
            try:
                rendered = self._list(view, query, Allowance(ON_LOOP), before)
            except OverAllowance:  # a search longer than the loop gives one request
                return Later(self, snapshot, key, held, raw, functools.partial(
                    self._list, view, query, Allowance(None), before
                ))  # fmt: skip
        elif route.endpoint == "versions":
            rendered = self._versions(view, route, include_deleted)
        else:
            rendered = self._version(view, route, include_deleted)
        self.keep(snapshot, key, held, raw, route.endpoint, rendered)
        return rendered

    def _turn_over(self, snapshot: Snapshot) -> None:
        """A newer snapshot is served: empty caches for it, the last ones kept for a while
        (`CARRY_SECONDS`) to carry over what did not change."""
        if self._cached_for is not None:
            self._before = (self._by_url, self._cache)
            self._before_until = time.monotonic() + CARRY_SECONDS
        self._cache = self._new_cache()
        self._by_url, self._urls_held, self._slots, self._by_url_bytes = {}, [], {}, 0
        self._bodies = self._new_bodies()
        self._cached_for = snapshot

    def _answered_before(self, raw: str | None, key: object) -> Rendered | None:
        """This request's answer from the snapshot before this one, if it was cached."""
        if self._before is None:
            return None
        if time.monotonic() > self._before_until:
            self._before = None  # what it held may go
            return None
        by_url, by_query = self._before
        known = by_url.get(raw) if raw is not None else None
        if known is not None:
            return known[1]
        cached = by_query.get(key)
        return cached.rendered if cached is not None else None

    def keep(
        self,
        snapshot: Snapshot,
        key: object,
        held: int,
        raw: str | None,
        endpoint: str,
        rendered: Rendered,
    ) -> None:
        """Remember an answer made from this snapshot (unless a newer one is served now)."""
        if snapshot is not self._cached_for:
            return
        self._cache[key] = Cached(held, rendered)
        rendered.grew = functools.partial(self._grew, key)
        if rendered.remade:
            rendered.kept = self._bodies.readmit
            if rendered.whole:  # (one carried over may have let its body go)
                self._bodies.admit(rendered)
        self._remember(raw, endpoint, rendered)

    def _grew(self, key: object, rendered: Rendered) -> None:
        """An answer's gzip form was made: both caches count it from now on."""
        self._by_url_bytes += rendered.gzip_bytes()
        entry = self._cache.get(key)
        if entry is not None and entry.rendered is rendered:
            self._cache[key] = entry  # counted again, its gzip form included

    def _remember(self, raw: str | None, endpoint: str, rendered: Rendered) -> None:
        if raw is None or raw in self._by_url:
            return
        # Bounded like the cache, in URLs and in bytes (it may keep answers the cache let go:
        # a client walking every page would otherwise keep them all).
        cost = len(raw) + URL_BYTES + rendered.held()
        while self._urls_held and (
            len(self._urls_held) >= self._urls or self._by_url_bytes + cost > self._url_bytes
        ):
            self._forget_one()
        if not self._urls_held:
            self._by_url_bytes = 0  # a gzip form counted for an answer no URL held
        self._by_url[raw] = (endpoint, rendered)
        self._slots[raw] = len(self._urls_held)
        self._urls_held.append(raw)
        self._by_url_bytes += cost

    def _forget_one(self) -> None:
        """Forget a URL chosen at random: a walk through more pages than fit keeps most of
        them (forgetting the oldest, or all, would forget each page before it is asked
        again), and answers nobody asks again make room as surely."""
        held, slots = self._urls_held, self._slots
        at = _CHANCE.randrange(len(held))
        raw, last = held[at], held.pop()
        if last != raw:
            held[at] = last
            slots[last] = at
        del slots[raw]
        _, rendered = self._by_url.pop(raw)
        self._by_url_bytes -= len(raw) + URL_BYTES + rendered.held()  # gzip form included

    @staticmethod
    def _list(
        view: ViewCatalog, query: Any, allowance: Allowance, before: Rendered | None = None
    ) -> Rendered:
        """A list answer; `before`, the same request's answer from the snapshot before, when
        it is still the answer (see `Page.carries`)."""
        items, next_cursor = select_page(view, query, allowance)
        metadata: dict[str, Any] = {"count": len(items)}
        if next_cursor is not None:
            metadata["nextCursor"] = next_cursor
        tail = list_tail(metadata)
        if before is not None:
            page = before.remake
            if isinstance(page, Page) and page.carries(view, items, tail):
                return before
        return remade_page(view, items, tail)

    @staticmethod
    def _versions(view: ViewCatalog, route: Route, include_deleted: bool) -> Rendered:
        assert route.name is not None
        items = view.versions(route.name, include_deleted)
        if not items:
            raise NotFound(SERVER_NOT_FOUND)
        return rendered_bytes(list_body(view, items, {"count": len(items)}))

    @staticmethod
    def _version(view: ViewCatalog, route: Route, include_deleted: bool) -> Rendered:
        assert route.name is not None
        assert route.version is not None
        item = view.lookup(route.name, route.version, include_deleted)
        if item is None:
            raise NotFound(SERVER_NOT_FOUND)
        return rendered_bytes(view.body(item))


# Work past its allowance runs here, one piece at a time: however many long searches clients
# send, the serving loop shares the GIL with one of them, not with a thread per request.
LONG_WORK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="long-work")


MAX_WAITING = 32  # long work queued at once; more is refused (`Busy`), not queued
_waiting = 0


async def elsewhere(work: Callable[[], T]) -> T:
    """`work` (paced: see `pacing.Allowance`) in the thread for long work, after the rest;
    `Busy` when MAX_WAITING pieces wait already (each holds its snapshot while it waits)."""
    global _waiting
    if _waiting >= MAX_WAITING:
        raise Busy()
    _waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(LONG_WORK, work)
    finally:
        _waiting -= 1


class Later:
    """A list answer whose search needs more than the serving loop gives one request: made
    again in a worker thread (where it offers the GIL as it goes), then remembered like any."""

    def __init__(
        self,
        api: Api,
        snapshot: Snapshot,
        key: object,
        held: int,
        raw: str | None,
        make: Callable[[], Rendered],
    ) -> None:
        self._api = api
        self._snapshot = snapshot
        self._key = key
        self._held = held
        self._raw = raw
        self._make = make

    async def finished(self) -> Rendered:
        rendered = await elsewhere(self._make)
        self._api.keep(self._snapshot, self._key, self._held, self._raw, "list", rendered)
        return rendered


def etag_matches(header: str, etags: tuple[str, ...]) -> bool:
    """Whether an `If-None-Match` header names one of these ETags (weak or not), or `*`."""
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or any(etag in candidates for etag in etags)


def check_method(method: str) -> None:
    if method not in READ_METHODS:
        raise MethodNotAllowed("this registry is read-only: it serves discovery data only")


def check_target(raw_path: str) -> None:
    """A request target as HTTP allows it: no NUL byte, no fragment (RFC 9112: a client never
    sends one, and a worker handing the request on would drop it), nothing that is not
    UTF-8."""
    if "\x00" in raw_path or "%00" in raw_path:
        raise BadRequest("NUL bytes are not allowed in the path or query")
    if "#" in raw_path:
        raise BadRequest("a request target has no fragment: '#' is not allowed")
    if not raw_path.isascii():
        try:
            raw_path.encode()
        except UnicodeEncodeError as exc:
            raise BadRequest("the path or query is not UTF-8") from exc
