"""Read-endpoint parameters: validation with the registry's errors, and list paging.

Pure functions over a `ViewCatalog`; the handlers only parse the URL and write bytes.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.catalog import Item, Listing, ViewCatalog
from gateway.cursor import Cursor, Walk, decode_cursor, encode_cursor
from gateway.entry import parse_timestamp
from gateway.errors import BadRequest, CursorMismatch, FieldError, ValidationFailed
from gateway.hits import found, scan
from gateway.pacing import Allowance
from gateway.search import MAX_SEARCH, fold

_INTEGER = re.compile(r"[+-]?[0-9]+")
DEFAULT_LIMIT = 30
MAX_LIMIT = 100
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
UPDATED_SINCE_HELP = (
    "Invalid updated_since format: expected RFC3339 timestamp (e.g., 2025-08-07T13:15:04.280Z)"
)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated list request: the walk's filters, page size and where to continue."""

    walk: Walk
    limit: int
    after: tuple[str, str] | None
    since: datetime | None


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _INTEGER.fullmatch(raw):  # int() would also take "1_0", " 5" and non-ASCII digits
        raise ValidationFailed([FieldError("expected integer", "query.limit", raw)])
    limit = int(raw)
    # Echo the value as a number, as the registry does, unless JSON consumers could not read it.
    shown: int | str = limit if abs(limit) < 2**53 else raw
    if limit < 1:
        raise ValidationFailed([FieldError("expected number >= 1", "query.limit", shown)])
    if limit > MAX_LIMIT:
        raise ValidationFailed([FieldError("expected number <= 100", "query.limit", shown)])
    return limit


def parse_include_deleted(raw: str | None) -> bool | None:
    """True/False when given, None when absent; 422 for anything but a boolean."""
    if raw is None or raw == "":
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    error = FieldError("expected boolean", "query.include_deleted", raw)
    raise ValidationFailed([error])


def _parse_since(raw: str) -> datetime:
    # An unencoded `+01:00` offset arrives as a space after form decoding.
    text = raw.replace(" ", "+")
    try:
        return parse_timestamp(text)
    except ValueError:
        raise BadRequest(UPDATED_SINCE_HELP) from None


def _merge(name: str, given: str | None, carried: str | None) -> str | None:
    if given is None or given == carried:
        return carried
    raise CursorMismatch(name)


def parse_search(raw: str | None) -> str | None:
    """The search text, if any; 422 past MAX_SEARCH characters, or with a NUL (which
    separates the texts a search looks in: a needle holding one would match across them)."""
    if not raw:
        return None
    if len(raw) > MAX_SEARCH:
        message = f"expected length <= {MAX_SEARCH}"
        raise ValidationFailed([FieldError(message, "query.search", raw[:32] + "...")])
    if "\x00" in raw:
        raise ValidationFailed([FieldError("NUL is not allowed", "query.search", raw[:32])])
    return raw


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Validate list parameters; a cursor's filters apply when the request leaves them out."""
    limit = parse_limit(params.get("limit"))
    include_deleted = parse_include_deleted(params.get("include_deleted"))
    updated_since = params.get("updated_since") or None
    since = _parse_since(updated_since) if updated_since is not None else None
    if since is not None and include_deleted is False:
        raise BadRequest(
            "include_deleted=false cannot be combined with updated_since: an incremental sync "
            "needs deleted entries to learn of removals"
        )
    walk = Walk(
        search=parse_search(params.get("search")),
        version=params.get("version") or None,
        updated_since=updated_since,
        include_deleted=bool(include_deleted) or since is not None,
    )
    after = None
    raw_cursor = params.get("cursor")
    if raw_cursor:
        cursor = decode_cursor(raw_cursor)
        carried = cursor.walk
        # A cursor's checksum is not a signature (any replica must read any other's): what it
        # carries is checked like the request's own parameters.
        walk = Walk(
            search=parse_search(_merge("search", walk.search, carried.search)),
            version=_merge("version", walk.version, carried.version),
            updated_since=_merge("updated_since", walk.updated_since, carried.updated_since),
            include_deleted=(
                carried.include_deleted if include_deleted is None else bool(include_deleted)
            )
            or carried.updated_since is not None,
        )
        if walk.updated_since is not None and since is None:
            since = _parse_since(walk.updated_since)
        after = (cursor.name, cursor.version)
    return ListQuery(walk=walk, limit=limit, after=after, since=since)


def _listing(view: ViewCatalog, walk: Walk) -> Listing:
    if walk.version == "latest":
        return view.latest
    return view.every if walk.include_deleted else view.active


def _key(item: Item) -> tuple[str, str]:
    return (item.name, item.version)


def _matches(item: Item, walk: Walk, since: datetime | None) -> bool:
    if walk.version is not None and walk.version != "latest" and item.version != walk.version:
        return False
    return since is None or item.updated_at > since


def _items(view: ViewCatalog, query: ListQuery, allowance: Allowance) -> Iterator[Item]:
    """The listing's items after the cursor that match the walk's search, in list order: from
    the search index where it covers this catalog and the text is rare, else by a scan."""
    listing = _listing(view, query.walk)
    search = query.walk.search
    if not search:
        return listing.after(query.after)
    needle = fold(search)
    items = listing.items
    after = query.after[0] if query.after is not None else ""
    index = view.search
    names = index.matching(needle, view.token, allowance, after) if index is not None else None
    if names is not None:
        return found(items, names, query.after, needle)
    start = 0 if query.after is None else bisect_right(items, query.after, key=_key)
    return scan(items, start, needle, allowance)


def select_page(
    view: ViewCatalog, query: ListQuery, allowance: Allowance
) -> tuple[list[Item], str | None]:
    """The page's items and the cursor for the next page (None when no match follows).
    A search steps `allowance` as it goes (`OverAllowance` past it)."""
    walk = query.walk
    plain = query.since is None and walk.version in (None, "latest")
    page: list[Item] = []
    more = False
    for item in _items(view, query, allowance):
        if not plain and not _matches(item, walk, query.since):
            continue
        if len(page) == query.limit:
            more = True
            break
        page.append(item)
    if not more:
        return page, None
    last = page[-1]
    return page, encode_cursor(Cursor(last.name, last.version, walk))
