"""The catalog page's list: what people filter a view's servers by, and pages of it in either
order, forward and back.

Each server's facts (served remotely or locally, its package types, status, what the mirror
said of its packages, which trust signals every signed package has) are read once per view
from its latest version as served, then kept with the view (`ViewCatalog.memo`): a page is a
pass over those facts, not over the served documents. Cursors are keys, not offsets: a page
after or before a server's name (or its latest version's `updatedAt` and name), so a page
stays right while the catalog changes under it.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import orjson

from gateway.catalog import Item, ViewCatalog
from gateway.errors import BadRequest
from gateway.hits import matches
from gateway.pacing import Allowance, stepped

PAGE_SIZE = 50
SORTS = ("name", "updated")
TRANSPORTS = ("remote", "local")
STATUSES = ("active", "deprecated")
MIRROR = ("available", "missing", "unknown")  # worst first: missing, unknown, available
TRUST = ("signature", "provenance", "digest", "scan")
GOOD = {"signature": "verified", "provenance": "verified", "digest": "verified", "scan": "clean"}
_MIRROR_RANK = {"missing": 0, "unknown": 1, "available": 2}
_TYPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_UPDATED_CURSOR = re.compile(r"(-?[0-9]{1,20}) (\S{1,200})")
STEP = 512  # facts checked between two steps of a page's allowance
FACTS_STEP = 128  # facts worked out between two steps
CHECKS_STEP = 16  # served versions read (each rendered, if no one asked for it yet) per step
SORT_PIECE = 2048  # the by-update order is sorted in pieces this long, then merged (paced)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEMO_KEY = "listing"


@dataclass(frozen=True, slots=True)
class Facts:
    """One server as the page filters it: its latest version in the view, as its upstream
    sent it (what the mirrors said of it is in `Checks`, worked out when a page asks)."""

    item: Item
    updated: int  # the latest version's updatedAt, in microseconds: ordering by it is exact
    remote: bool
    local: bool
    types: frozenset[str]  # of its packages
    deprecated: bool

    def order(self, sort: str) -> tuple[int, str]:
        return (-self.updated, self.item.name) if sort == "updated" else (0, self.item.name)


@dataclass(frozen=True, slots=True)
class ViewFacts:
    """A view's servers' facts, in both orders."""

    by_name: list[Facts]
    by_updated: list[Facts]

    def ordered(self, sort: str) -> list[Facts]:
        return self.by_updated if sort == "updated" else self.by_name


T = TypeVar("T")


def paced_sorted(
    values: list[T], key: Callable[[T], tuple[int, str]], allowance: Allowance
) -> list[T]:
    """`sorted(values, key=key)`, in pieces of SORT_PIECE merged a step at a time: one sort of
    60,000 holds the GIL for 40 ms, and the serving loop waits behind it."""
    pieces = []
    for start in range(0, len(values), SORT_PIECE):
        if start:
            allowance.step()
        pieces.append(sorted(values[start : start + SORT_PIECE], key=key))
    if len(pieces) == 1:
        return pieces[0]
    return list(stepped(heapq.merge(*pieces, key=key), allowance, STEP))


def _micros(item: Item) -> int:
    micros: int = (item.updated_at - _EPOCH) // timedelta(microseconds=1)  # before 1970 too
    return micros


def package_facts(checks: object) -> tuple[str | None, frozenset[str]]:
    """The worst mirror answer and the signals at their best on every signed package, from
    the gateway's `_meta.packages` (one object per package served)."""
    mirror: str | None = None
    signed = 0
    counts = dict.fromkeys(TRUST, 0)
    for check in checks if isinstance(checks, list) else ():
        if not isinstance(check, dict):
            continue
        said = check.get("verification")
        if (isinstance(said, str) and said in _MIRROR_RANK
                and (mirror is None or _MIRROR_RANK[said] < _MIRROR_RANK[mirror])):  # fmt: skip
            mirror = said
        signals = check.get("signals")
        if isinstance(signals, dict):
            signed += 1
            for signal, good in GOOD.items():
                found = signals.get(signal)
                if isinstance(found, dict) and found.get("state") == good:
                    counts[signal] += 1
    trust = frozenset(s for s, n in counts.items() if signed and n == signed)
    return mirror, trust


Checked = tuple[str | None, frozenset[str]]  # the worst mirror answer; the signals at best
Checks = dict[str, Checked]  # by server name
_CHECKED: dict[Checked, Checked] = {}  # at most 4 x 2**4 values: one object each, shared


def facts_of(item: Item) -> Facts:
    entry = item.registry_meta.entry
    return Facts(item, _micros(item), entry.has_remotes, entry.has_packages,
                 entry.registry_types, entry.status == "deprecated")  # fmt: skip


def checked_of(body: bytes, namespace: str) -> Checked:
    """What the mirrors said of a served version, from its gateway `_meta`."""
    meta = orjson.loads(body).get("_meta")
    ours = meta.get(namespace) if isinstance(meta, dict) else None
    found = package_facts(ours.get("packages") if isinstance(ours, dict) else None)
    return _CHECKED.setdefault(found, found)


def view_checks(view: ViewCatalog, namespace: str, allowance: Allowance) -> Checks:
    """What the mirrors said of each server's latest version: served JSON read once (the
    first page that filters by it pays for rendering every server), then kept with the view."""
    made = view.memo.get("checks")
    if isinstance(made, dict):
        return made
    items = view.latest.items
    allowance.ensure(len(items) // CHECKS_STEP)
    checks: Checks = {}
    for item in stepped(items, allowance, CHECKS_STEP):
        checks[item.name] = checked_of(view.body(item), namespace)
    view.memo["checks"] = checks
    return checks


def view_facts(view: ViewCatalog, allowance: Allowance) -> ViewFacts:
    """The view's facts: made once (stepping `allowance` as it goes), then kept with it."""
    made = view.memo.get(MEMO_KEY)
    if isinstance(made, ViewFacts):
        return made
    items = view.latest.items
    allowance.ensure(len(items) // FACTS_STEP + len(items) // SORT_PIECE)
    by_name = [facts_of(item) for item in stepped(items, allowance, FACTS_STEP)]
    by_updated = paced_sorted(by_name, lambda facts: (-facts.updated, facts.item.name), allowance)
    made = view.memo[MEMO_KEY] = ViewFacts(by_name, by_updated)
    return made


@dataclass(frozen=True, slots=True)
class Filters:
    """What a catalog page asks for (its query string), checked."""

    search: str = ""
    transport: str = ""
    type: str = ""
    status: str = ""
    mirror: str = ""
    trust: str = ""
    sort: str = "name"

    @classmethod
    def of(cls, query: Mapping[str, str], max_search: int, types: Iterable[str] = ()) -> Filters:
        """The filters a query asks for; `types`: the package types there are (empty: any
        that looks like one)."""

        def chosen(key: str, allowed: Iterable[str]) -> str:
            value = query.get(key, "")
            if value and value not in allowed:
                listed = ", ".join(allowed)
                raise BadRequest(f"{key} must be one of {listed} (or empty), not {value[:40]!r}")
            return value

        kind = query.get("type", "")
        known = tuple(types)
        if kind and (not _TYPE.fullmatch(kind) or (known and kind not in known)):
            listed = ", ".join(known) if known else "npm, pypi, oci and the like"
            raise BadRequest(f"type must be a package type: {listed}")
        return cls(
            search=_printable(query.get("q", "")).strip()[:max_search],
            transport=chosen("transport", TRANSPORTS),
            type=kind,
            status=chosen("status", STATUSES),
            mirror=chosen("mirror", MIRROR),
            trust=chosen("trust", TRUST),
            sort=chosen("sort", SORTS) or "name",
        )

    @property
    def checks(self) -> bool:
        """Whether the filters ask what the mirrors said (`Checks`)."""
        return bool(self.mirror or self.trust)

    def admits(self, facts: Facts, checks: Checks | None = None) -> bool:
        if self.transport == "remote" and not facts.remote:
            return False
        if self.transport == "local" and not facts.local:
            return False
        if self.type and self.type not in facts.types:
            return False
        if self.status and facts.deprecated != (self.status == "deprecated"):
            return False
        if checks is None:
            return True
        mirror, trust = checks.get(facts.item.name, (None, frozenset()))
        if self.mirror and mirror != self.mirror:
            return False
        return not self.trust or self.trust in trust

    @property
    def narrowed(self) -> bool:
        return any((self.search, self.transport, self.type, self.status, self.mirror, self.trust))

    def query(self) -> dict[str, str]:
        """The query string that asks for these filters again (empty ones left out)."""
        asked = {"q": self.search, "transport": self.transport, "type": self.type,
                 "status": self.status, "mirror": self.mirror, "trust": self.trust}  # fmt: skip
        if self.sort != "name":
            asked["sort"] = self.sort
        return {key: value for key, value in asked.items() if value}


def _printable(text: str) -> str:
    """A search without control or format characters: they match nothing a person sees, and
    shown back (a shared link) they would put reversed or hidden text on the page."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf"))


def cursor_of(facts: Facts, sort: str) -> str:
    return f"{facts.updated} {facts.item.name}" if sort == "updated" else facts.item.name


def _key(cursor: str, sort: str, which: str) -> tuple[int, str]:
    if sort != "updated":
        return (0, cursor)
    found = _UPDATED_CURSOR.fullmatch(cursor)
    if found is None:
        raise BadRequest(f"{which} is not a cursor of this page (follow its links)")
    return (-int(found[1]), found[2])


@dataclass(frozen=True, slots=True)
class Page:
    shown: list[Facts]
    matching: int  # servers the filters admit, in all
    previous: str | None  # the cursor for the page before (None: this is the first)
    next: str | None


def _name(item: Item) -> str:
    return item.name


def select_all(view: ViewCatalog, query: Mapping[str, str], size: int = PAGE_SIZE) -> Page:
    """`select` when nothing narrows the list and it is in name order: the page straight from
    the view's items (bisected), facts worked out for the servers shown alone."""
    after, before = query.get("after", ""), query.get("before", "")
    if after and before:
        raise BadRequest("ask for the page after a server or before one, not both")
    items = view.latest.items
    if before:
        start = max(0, bisect_left(items, before, key=_name) - size)
    else:
        start = bisect_right(items, after, key=_name) if after else 0
        if start >= len(items) and items:  # past the last server (a stale link): the last page
            start = max(0, len(items) - size)
    end = min(len(items), start + size)
    shown = [facts_of(item) for item in items[start:end]]
    previous = shown[0].item.name if shown and start > 0 else None
    following = shown[-1].item.name if shown and end < len(items) else None
    return Page(shown, len(items), previous, following)


def select(
    ordered: list[Facts],
    filters: Filters,
    names: set[str] | None,
    query: Mapping[str, str],
    allowance: Allowance,
    size: int = PAGE_SIZE,
    checks: Checks | None = None,
) -> Page:
    """The page after `after` (or before `before`) of the servers the filters admit. A search
    is the API's (case-insensitive, in the name, title and description); `names`, the servers
    the search index found, when it answered, spares checking the others."""
    after, before = query.get("after", ""), query.get("before", "")
    if after and before:
        raise BadRequest("ask for the page after a server or before one, not both")
    needle = filters.search.casefold()
    matched: list[Facts] = []
    for facts in stepped(ordered, allowance, STEP):
        if needle and not (
            (names is None or facts.item.name in names) and matches(facts.item, needle)
        ):
            continue
        if filters.admits(facts, checks):
            matched.append(facts)
    sort = filters.sort
    keys = [facts.order(sort) for facts in matched]
    if before:
        end = bisect_left(keys, _key(before, sort, "before"))
        start = max(0, end - size)
        end = min(len(matched), start + size)  # the first page is a whole one too
    else:
        start = bisect_right(keys, _key(after, sort, "after")) if after else 0
        if start >= len(matched) and matched:  # past the last match (a stale link): the last page
            start = max(0, len(matched) - size)
        end = min(len(matched), start + size)
    shown = matched[start:end]
    previous = cursor_of(shown[0], sort) if shown and start > 0 else None
    following = cursor_of(shown[-1], sort) if shown and end < len(matched) else None
    return Page(shown, len(matched), previous, following)
