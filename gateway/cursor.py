"""Opaque, URL-safe list cursors that carry the filters of the walk they belong to.

VS Code pastes the cursor into the URL without encoding it and drops `search` from page 2 on,
so the cursor is base64url and remembers the walk's filters. It is keyset-based (continue after
this name and version), so swapping the catalog between pages never repeats or skips an entry.
A checksum turns any corruption or tampering into a clean 400 instead of a confusing page.
Every replica computes the same cursor for the same walk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import orjson

from gateway.errors import BadRequest

_FORMAT = 1
_CHECK_BYTES = 6
_PERSON = b"mcpgw-cursor"


@dataclass(frozen=True, slots=True)
class Walk:
    """The filters of one list walk; a cursor must keep them from page to page."""

    search: str | None = None
    version: str | None = None
    updated_since: str | None = None
    include_deleted: bool = False


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a walk stopped (the last item's name and version) and what it filters."""

    name: str
    version: str
    walk: Walk


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_BYTES, person=_PERSON).digest()


def encode_cursor(cursor: Cursor) -> str:
    walk = cursor.walk
    payload = orjson.dumps(
        [
            _FORMAT,
            cursor.name,
            cursor.version,
            walk.search,
            walk.version,
            walk.updated_since,
            walk.include_deleted,
        ]
    )
    return base64.urlsafe_b64encode(payload + _check(payload)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    """The cursor behind `text`; BadRequest when it is not one this gateway issued."""
    invalid = BadRequest(
        "invalid cursor: pass metadata.nextCursor from the previous page unchanged"
    )
    if not text or len(text) > 4096:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    payload, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if len(raw) <= _CHECK_BYTES or _check(payload) != check:
        raise invalid
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise invalid from None
    if not (isinstance(fields, list) and len(fields) == 7 and fields[0] == _FORMAT):
        raise invalid
    _, name, version, search, version_filter, updated_since, include_deleted = fields
    optional = (search, version_filter, updated_since)
    if not (
        isinstance(name, str)
        and isinstance(version, str)
        and all(value is None or isinstance(value, str) for value in optional)
        and isinstance(include_deleted, bool)
    ):
        raise invalid
    return Cursor(name, version, Walk(search, version_filter, updated_since, include_deleted))
