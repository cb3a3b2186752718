"""One upstream page (or catalog file), read so that no step holds the GIL for long, whatever
its bytes are: the event loop keeps answering while a hostile page is read in a worker thread.

orjson parses a whole document in one C call that holds the GIL. For a page of 100 real
entries that is well under a millisecond; for 16 MB of `[[],[],...]` it is seconds. So a page
is parsed whole only when its bytes allow few JSON values (`FAST_VALUES`, a few milliseconds
of parsing at worst). Any other page has its `servers` array split into items by a small
scanner that gives the GIL up as it goes and stops as soon as the page holds more items than
were asked for; each item is then parsed alone (items are bounded by `max_entry_bytes`), and
what the page holds besides its items is bounded by `MAX_OTHER_BYTES`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.errors import UpstreamInvalid
from gateway.pacing import Pacer

FAST_VALUES = 50_000  # parsed whole below this: ~20 ms at worst (a value costs up to ~0.4 µs)
MAX_OTHER_BYTES = 64 * 1024  # of a page besides its items: metadata and keys nobody reads

_STRUCTURE = re.compile(rb'["\[\]{},:]')  # a string's start, or structure
# The rest of a string, matched only where one starts (never searched for: a body that
# opens a string it never closes would be scanned to its end from every quote).
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SPACE = re.compile(rb"[ \t\r\n]*")
_OPENS = {ord("{"): ord("}"), ord("["): ord("]")}
_QUOTE = ord('"')


def value_bound(body: bytes) -> int:
    """At least as many as the JSON values (keys included) in `body`: each value but the
    first follows a `,` or a `:`, or opens a container."""
    return body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{") + 1


class Raw:
    """One item of a split page: its JSON text, parsed on its own (see `upstream.ingest`)."""

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json


def items_of(document: Any, upstream: str) -> tuple[list[Any], str | None]:
    """The items and next cursor of a parsed API-shaped list, or of a plain server.json array."""
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict) and isinstance(document.get("servers"), list):
        return document["servers"], _cursor(document.get("metadata"), upstream)
    raise UpstreamInvalid(upstream, 'not a server list: expected {"servers": [...]} or an array')


def _cursor(metadata: Any, upstream: str) -> str | None:
    cursor = metadata.get("nextCursor") if isinstance(metadata, dict) else None
    if cursor is not None and not isinstance(cursor, str):
        raise UpstreamInvalid(upstream, "metadata.nextCursor is not a string")
    return cursor or None


def read_page(body: bytes, upstream: str, limit: int | None) -> tuple[list[Any], str | None]:
    """A page's items (parsed objects, or `Raw` JSON to parse one by one) and next cursor.
    A page with more than `limit` items (when given) is invalid. Blocking, and long for a
    hostile page: call it in a worker thread."""
    if len(body) <= 2 * FAST_VALUES or value_bound(body) <= FAST_VALUES:  # a value takes 2 bytes
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamInvalid(upstream, f"body is not JSON: {exc}") from None
        items, cursor = items_of(document, upstream)
    else:
        items, cursor = _Splitter(body, upstream, limit).page()
    if limit is not None and len(items) > limit:
        raise UpstreamInvalid(upstream, _too_many(len(items), limit))
    return items, cursor


def _too_many(count: int, limit: int) -> str:
    return f"the page has {count} items, more than the {limit} asked for"


class _Splitter:
    """Finds the items of a page's `servers` array (or of a plain array) by their brackets,
    without parsing them."""

    def __init__(self, body: bytes, upstream: str, limit: int | None) -> None:
        self.body = body
        self.upstream = upstream
        self.limit = limit
        self.pacer = Pacer()

    def invalid(self, reason: str) -> UpstreamInvalid:
        return UpstreamInvalid(self.upstream, f"body is not a valid server list: {reason}")

    def _space(self, at: int) -> int:
        found = _SPACE.match(self.body, at)
        assert found is not None  # matches the empty string anywhere
        return found.end()

    def _token(self, at: int, expected: bytes) -> int:
        """The end of the next token, which must be one of `expected`, after only space."""
        at = self._space(at)
        if at >= len(self.body) or self.body[at] not in expected:
            raise self.invalid(f"expected one of {expected.decode()!r} at byte {at}")
        return at + 1

    def _value_end(self, start: int, stop: int | None = None) -> int:
        """Where the JSON value starting at `start` ends (containers by their brackets,
        strings by their quotes, anything else at the next structural character); invalid
        when it would end past `stop`."""
        token = _STRUCTURE.search(self.body, start)
        if token is None or token.start() > start:  # a number, true, false or null
            end = token.start() if token is not None else len(self.body)
            return start + len(self.body[start:end].rstrip())
        opened = self.body[start]
        if opened == _QUOTE:
            return self._string_end(start)
        if opened not in _OPENS:
            raise self.invalid(f"unexpected {chr(opened)!r} at byte {start}")
        stack = [_OPENS[opened]]
        at = start + 1
        while stack:
            self.pacer.tick()
            token = _STRUCTURE.search(self.body, at)
            if token is None:
                raise self.invalid("it ends inside a value")
            at = token.start()
            char = self.body[at]
            if char == _QUOTE:
                at = self._string_end(at)
            else:
                if char in _OPENS:
                    stack.append(_OPENS[char])
                elif char in (ord("]"), ord("}")) and stack.pop() != char:
                    raise self.invalid(f"mismatched {chr(char)!r} at byte {at}")
                at += 1
            if stop is not None and at > stop:
                raise self.invalid(f"over {MAX_OTHER_BYTES} bytes besides its servers")
        return at

    def _string_end(self, start: int) -> int:
        """Where the string opening at `start` ends (one pass, from its start only)."""
        rest = _STRING_REST.match(self.body, start + 1)
        if rest is None:
            raise self.invalid(f"a string at byte {start} never ends")
        return rest.end()

    def _items(self, start: int) -> tuple[list[Any], int]:
        """The items of the array opening at `start`, and where it ends."""
        at = self._token(start, b"[")
        items: list[Any] = []
        first = self._space(at)
        if self.body[first : first + 1] == b"]":
            return items, first + 1
        while True:
            begin = self._space(at)
            end = self._value_end(begin)
            items.append(Raw(self.body[begin:end]))
            if self.limit is not None and len(items) > self.limit:
                raise UpstreamInvalid(self.upstream, _too_many(len(items), self.limit))
            at = self._token(end, b",]")
            if self.body[at - 1] == ord("]"):
                return items, at

    def page(self) -> tuple[list[Any], str | None]:
        start = self._space(0)
        if self.body[start : start + 1] == b"[":
            items, end = self._items(start)
            cursor = None
        else:
            items, cursor, end = self._object(start)
        if self._space(end) != len(self.body):
            raise self.invalid(f"unexpected bytes after the list, at byte {self._space(end)}")
        return items, cursor

    def _object(self, start: int) -> tuple[list[Any], str | None, int]:
        at = self._token(start, b"{")
        items: list[Any] | None = None
        metadata: Any = None
        other = 0
        first = self._space(at)
        if self.body[first : first + 1] == b"}":
            raise self.invalid('no "servers" list')
        while True:
            key_start = self._space(at)
            key_end = self._value_end(key_start)
            try:
                key = orjson.loads(self.body[key_start:key_end])
            except orjson.JSONDecodeError:
                key = None
            if not isinstance(key, str):
                raise self.invalid(f"expected a key at byte {key_start}")
            value_start = self._space(self._token(key_end, b":"))
            if key == "servers":
                if items is not None:
                    raise self.invalid('"servers" twice')
                items, value_end = self._items(value_start)
            else:
                value_end = self._value_end(value_start, value_start + MAX_OTHER_BYTES - other)
                other += value_end - value_start
                if other > MAX_OTHER_BYTES:
                    raise self.invalid(f"over {MAX_OTHER_BYTES} bytes besides its servers")
                try:
                    value = orjson.loads(self.body[value_start:value_end])
                except orjson.JSONDecodeError as exc:
                    raise self.invalid(f"{key!r}: {exc}") from None
                if key == "metadata":
                    metadata = value
            at = self._token(value_end, b",}")
            if self.body[at - 1] == ord("}"):
                break
        if items is None:
            raise self.invalid('no "servers" list')
        return items, _cursor(metadata, self.upstream), at
