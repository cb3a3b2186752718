"""A rendered answer: its body, ETag, headers and gzip form, made once and kept by the caches
(`api.Api`); a list page kept in parts, its joined body let go and made again (`Joined`)."""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable

import orjson
from multidict import CIMultiDict

from gateway.served import Part

# What a cached answer holds besides its body and gzip form (its headers, measured: ~1.6 KB),
# as cache budgets count it.
RENDERED_BYTES = 2048
POINTER_BYTES = 8  # a part of a page kept in parts: one pointer in its list


class Rendered:
    """A response body, its ETag and headers, and (made on first demand, then kept) its gzip
    form: everything a cached answer needs, computed once.

    A list page may also keep its body as the parts it was joined from (`parts`: each item's
    bytes, shared with the catalog), so that a cache holds it for a few pointers a part; its
    joined body is then let go when the cache's `Joined` bodies need the room (`drop_body`)
    and joined again on its next request."""

    __slots__ = (
        "_body", "_gzipped", "_parts", "etag", "grew", "gzip_etag", "gzip_headers", "headers",
        "joined", "length", "owned",
    )  # fmt: skip

    def __init__(
        self, body: bytes, etag: str, parts: list[Part] | None = None, owned: int = 0
    ) -> None:
        self._body: bytes | None = body
        self._parts = parts
        self.length = len(body)
        self.owned = owned  # the bytes of the parts that are this page's own (not shared)
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
        self.joined: Callable[[Rendered], bool] | None = None  # asked when joined again

    @property
    def body(self) -> bytes:
        body = self._body
        if body is None:
            assert self._parts is not None  # only a body with parts is ever let go
            body = b"".join(self._parts)
            if self.joined is not None and self.joined(self):
                self._body = body  # kept while there is room (see `Joined.readmit`)
        return body

    @property
    def in_parts(self) -> bool:
        return self._parts is not None

    def gzip_bytes(self) -> int:
        return len(self._gzipped or b"")

    def drop_body(self) -> None:
        """Let the joined body go (it is joined again from its parts when asked for)."""
        if self._parts is not None:
            self._body = None

    def held(self) -> int:
        """The bytes this answer holds besides a joined body it can let go (see `Joined`),
        and what a cache counts for it."""
        kept = len(self._gzipped or b"") + RENDERED_BYTES
        if self._parts is None:
            return kept + self.length
        return kept + POINTER_BYTES * len(self._parts) + self.owned

    def not_modified(self, etag: str) -> dict[str, str]:
        return {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding, Origin",
                "X-Content-Type-Options": "nosniff"}  # fmt: skip

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
            if self.grew is not None:
                self.grew(self)
        return self._gzipped


class Joined:
    """The joined bodies of list pages kept in parts, bounded in bytes: past the budget the
    oldest is let go (`Rendered.drop_body`). A walk through more pages than the budget holds
    then costs a join per page, not a page made anew. (It keeps its answers alive until then,
    the caches' evicted ones too: each counts in full, body and all.) The budget is what
    `room` says is left of the cache's, and never less than `least`."""

    def __init__(self, least: int, room: Callable[[], int]) -> None:
        self.least = least
        self.room = room
        self.bytes = 0
        self._bodies: OrderedDict[Rendered, int] = OrderedDict()

    def admit(self, rendered: Rendered) -> None:
        bodies = self._bodies
        if rendered in bodies:
            return
        cost = bodies[rendered] = rendered.length + rendered.held()
        self.bytes += cost
        budget = max(self.least, self.room())
        while self.bytes > budget and len(bodies) > 1:
            oldest, cost = bodies.popitem(last=False)
            oldest.drop_body()
            self.bytes -= cost

    def readmit(self, rendered: Rendered) -> bool:
        """Whether a body joined again is kept: only where there is room, letting nothing
        go. (A walk through more pages than fit would otherwise let every body go before it
        is asked again; this way the ones kept are answered whole.)"""
        cost = rendered.length + rendered.held()
        if rendered in self._bodies or self.bytes + cost > max(self.least, self.room()):
            return False
        self._bodies[rendered] = cost
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


def rendered_parts(parts: list[Part], owned: int) -> Rendered:
    """A list answer that a cache may keep in parts (see `Rendered`)."""
    body = b"".join(parts)
    return Rendered(body, etag_of(body), parts, owned)
