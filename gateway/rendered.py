"""A rendered answer: its body, ETag, headers and gzip form, made once and kept by the caches
(`api.Api`); a list page's body let go and made again from its items (`Page`, `Bodies`), and
carried over to a newer snapshot where its page did not change (`Page.carries`)."""

from __future__ import annotations

import gzip
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from multidict import CIMultiDict

if TYPE_CHECKING:
    from gateway.catalog import Item, ViewCatalog

# What a cached answer holds besides its body and gzip form (its headers, measured: ~1.6 KB),
# as cache budgets count it.
RENDERED_BYTES = 2048
# How hard answers are gzip-compressed: level 1, nginx's default. On a page of 50 servers
# (50 KB) it takes 0.18 ms where level 6 took 0.48, for a tenth of the size instead of
# 7.7 % (measured): an answer not cached yet costs its compression, a LAN a few bytes.
GZIP_LEVEL = 1
# And a page that can be remade: the list of its items (a pointer each), the call that
# remakes it, and the bytes objects around its metadata.
PAGE_BYTES = 256
POINTER_BYTES = 8


class Rendered:
    """A response body, its ETag and headers, and (made on first demand, then kept) its gzip
    form: everything a cached answer needs, computed once.

    A list page also knows how to make its body again (`remake`: from its items, kept by the
    catalog), so that a cache holds it for a pointer an item; its body is then let go when
    the cache's `Bodies` need the room (`drop_body`) and made again, byte for byte,
    on its next request."""

    __slots__ = (
        "_body", "_gzipped", "_remake", "etag", "grew", "gzip_etag", "gzip_headers", "headers",
        "kept", "length", "owned", "used",
    )  # fmt: skip

    def __init__(
        self, body: bytes, etag: str, remake: Callable[[], bytes] | None = None, owned: int = 0
    ) -> None:
        self._body: bytes | None = body
        self._remake = remake
        self.length = len(body)
        self.owned = owned  # what the page holds besides its body, when it can be remade
        self.etag = etag
        self.gzip_etag = etag[:-1] + '-gz"'
        common = {
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
            "Vary": "Accept-Encoding, Origin",
            "X-Content-Type-Options": "nosniff",
        }
        # Copied into every response: from a CIMultiDict that is one C call.
        self.headers = CIMultiDict({**common, "ETag": etag})
        self.gzip_headers = CIMultiDict(
            {**common, "ETag": self.gzip_etag, "Content-Encoding": "gzip"}
        )
        self._gzipped: bytes | None = None
        self.grew: Callable[[Rendered], None] | None = None  # told when its gzip form is made
        self.kept: Callable[[Rendered], bool] | None = None  # asked when made again
        self.used = 0  # when a cache last answered with it (see `Clock`); 0: never

    @property
    def body(self) -> bytes:
        body = self._body
        if body is None:
            assert self._remake is not None  # only a body that can be remade is let go
            body = self._remake()
            if self.kept is not None and self.kept(self):
                self._body = body  # kept where there is room (see `Bodies.readmit`)
        return body

    @property
    def remade(self) -> bool:
        """Whether its body may be let go (and made again when asked for)."""
        return self._remake is not None

    @property
    def remake(self) -> Callable[[], bytes] | None:
        """What makes its body again (None: it is never let go)."""
        return self._remake

    @property
    def whole(self) -> bool:
        """Whether it holds its body now."""
        return self._body is not None

    def gzip_bytes(self) -> int:
        return len(self._gzipped or b"")

    def drop_body(self) -> None:
        """Let the body go (it is made again when asked for)."""
        if self._remake is not None:
            self._body = None

    def held(self) -> int:
        """The bytes this answer holds besides a body it can let go (see `Bodies`), and what
        a cache counts for it."""
        kept = len(self._gzipped or b"") + RENDERED_BYTES
        return kept + (self.length if self._remake is None else self.owned)

    def not_modified(self, etag: str) -> dict[str, str]:
        return {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding, Origin",
                "X-Content-Type-Options": "nosniff"}  # fmt: skip

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=GZIP_LEVEL, mtime=0)
            if self.grew is not None:
                self.grew(self)
        return self._gzipped


class Clock:
    """Answers given from the caches, counted: when each was last given (`Rendered.used`)."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0

    def tick(self) -> int:
        self.now += 1
        return self.now


CLOCK = Clock()


class Bodies:
    """The bodies of list pages that can be remade, bounded in bytes: past the budget one is
    let go (`Rendered.drop_body`), and made again from its items when asked for. A walk
    through more pages than the budget holds then costs writing a page's items again, not
    its search, ETag or caching. (It keeps its answers alive until let go, the caches'
    evicted ones too: each counts in full, body and all.) The budget is what `room` says is
    left of the cache's, and never less than `least`.

    Which goes: the oldest not answered from the cache lately (in the last `RECENT` times as
    many cached answers as there are bodies kept; one answered lately is looked at again
    later). A body made again is kept only by letting such ones go (of the first
    `LOOKED_AT`): pages asked for again and again stay whole, whether among one-off answers
    (a stream of new searches, never answered from the cache) or as the part of a walk that
    fits, which the rest of the walk cannot push out while a round of it is shorter than
    `RECENT` times what is kept."""

    LOOKED_AT = 16  # bodies a body made again may look at for ones to let go
    RECENT = 4

    def __init__(self, least: int, room: Callable[[], int]) -> None:
        self.least = least
        self.room = room
        self.bytes = 0
        self._bodies: OrderedDict[Rendered, int] = OrderedDict()

    def _lately(self) -> int:
        """Answers given from the cache after this were given lately (0: one never given
        from the cache never was)."""
        return max(0, CLOCK.now - self.RECENT * len(self._bodies))

    def admit(self, rendered: Rendered) -> None:
        """A new answer's body: kept, the oldest not answered lately let go to make room
        (the oldest of all when every one was)."""
        bodies = self._bodies
        if rendered in bodies:
            return
        cost = bodies[rendered] = rendered.length + rendered.held()
        self.bytes += cost
        budget = max(self.least, self.room())
        lately, spared = self._lately(), 0
        while self.bytes > budget and len(bodies) > 1:
            oldest, cost = bodies.popitem(last=False)
            if oldest.used > lately and spared < len(bodies) and oldest is not rendered:
                bodies[oldest] = cost  # answered lately: looked at again after the others
                spared += 1
                continue
            oldest.drop_body()
            self.bytes -= cost

    def readmit(self, rendered: Rendered) -> bool:
        """Whether a body made again is kept: where there is room, or can be made by letting
        go of bodies not answered lately (of the first `LOOKED_AT`), never others."""
        bodies = self._bodies
        if rendered in bodies:
            return False
        cost = rendered.length + rendered.held()
        budget = max(self.least, self.room())
        if self.bytes + cost > budget:
            lately = self._lately()
            looked = list(itertools.islice(bodies, self.LOOKED_AT))
            stale = [one for one in looked if one.used <= lately]
            if self.bytes - sum(bodies[one] for one in stale) + cost > budget:
                for one in looked:  # answered lately or not, looked at after the others
                    bodies.move_to_end(one)
                return False
            for one in stale:
                if self.bytes + cost <= budget:
                    break
                self.bytes -= bodies.pop(one)
                one.drop_body()
        bodies[rendered] = cost
        self.bytes += cost
        return True


def render(document: object) -> Rendered:
    return rendered_bytes(orjson.dumps(document))


def etag_of(body: bytes) -> str:
    # SHA-256 runs in the CPU's own instructions where it has them (OpenSSL): about twice
    # blake2b's speed on a page, which every answer not yet cached hashes once.
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def rendered_bytes(body: bytes) -> Rendered:
    return Rendered(body, etag_of(body))


def list_tail(metadata: dict[str, Any]) -> bytes:
    """A list body's end: its metadata, as one bytes object of its own length (orjson's hold
    4 KiB however short: see `entry.compact_json`)."""
    return b'],"metadata":' + orjson.dumps(metadata) + b"}"


def list_body(view: ViewCatalog, items: list[Item], metadata: dict[str, Any]) -> bytes:
    return view.page(items, list_tail(metadata))


class Page:
    """What makes a list page's body again: its items (kept by the catalog: a pointer each)
    and its end, written by the view they came from. It also tells whether a newer
    snapshot's page is this one, byte for byte (`carries`)."""

    __slots__ = ("items", "tail", "view")

    def __init__(self, view: ViewCatalog, items: list[Item], tail: bytes) -> None:
        self.view = view
        self.items = items
        self.tail = tail

    def __call__(self) -> bytes:
        return self.view.page(self.items, self.tail)

    def carries(self, view: ViewCatalog, items: list[Item], tail: bytes) -> bool:
        """Whether `view` writes these items and this end as this page's body: the same item
        objects (a build keeps those of unchanged servers), whose suffixes (`isLatest`, the
        gateway's `_meta`: in each build's table) are the same bytes, and the same end. If so
        the page makes its body from `view` from now on (the older view may go)."""
        if tail != self.tail or len(items) != len(self.items):
            return False
        before, now = self.view.suffixes, view.suffixes
        for was, item in zip(self.items, items, strict=True):
            if was is not item:
                return False
            suffix, written = before[was.suffix], now[item.suffix]
            if suffix is not written and suffix != written:
                return False
        self.view, self.items = view, items
        return True


def remade_page(view: ViewCatalog, items: list[Item], tail: bytes) -> Rendered:
    """A list answer whose body a cache may let go: it is made again from the same items."""
    page = Page(view, items, tail)
    body = page()
    owned = PAGE_BYTES + POINTER_BYTES * len(items) + len(tail)
    return Rendered(body, etag_of(body), page, owned)
