"""Search: `search=` finds the servers whose name, title or description contains the text, in
any case (a substring: `eath` finds `weather`), from a trigram index rather than a scan.

The index maps each trigram of a server's texts (its name, and the title and description of
each of its versions, case-folded) to the servers that have it, by id. Ids follow the order
of names, so the servers a query's trigrams share are read in list order, from the page's
cursor on, and reading stops once the page is full: a common text costs about what a rare one
does. A trigram in few servers keeps a list of ids; one in many (`COMMON` or more) keeps a
bitset, and intersecting bitsets is a few C-level operations.

The index may name more servers than match (each item listed is checked), so it is kept up
to date cheaply after each build: a changed server keeps its id and adds its new trigrams, a
gone one is forgotten, a new one takes an id past the ordered ones (the tail, read sorted).
Once the tail, the gone or the changed grow large, the index is built afresh.
"""

from __future__ import annotations

import itertools
import threading
from array import array
from bisect import bisect_left
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING

from gateway.errors import Stopped
from gateway.pacing import Allowance
from gateway.postings import from_bits, from_ids
from gateway.stepping import paced

if TYPE_CHECKING:
    from gateway.build import Order
    from gateway.entry import Entry

Gram = tuple[str, str, str]
COMMON = 256  # a trigram in this many servers or more keeps a bitset instead of a list
MAX_SEARCH = 256  # characters of a `search` value (longer ones are refused, 422)
TAIL = 2048  # new servers past the ordered ones, at least, before the index is built afresh
# Bounds on what upstream data can make the index hold: a server with more distinct trigrams
# than this (texts in an alphabet of thousands of characters), or one that would take the
# index past its number of trigrams, is not indexed but checked by every search.
SERVER_GRAMS = 4096
GRAMS = 1 << 17
CHARS = 1 << 16  # characters remembered (for searches of one or two)
_NARROWING = 99  # bitsets intersected at most (the rarest)
_FEW = 64  # candidates few enough to check each one's texts rather than intersect further


def grams(text: str) -> set[Gram]:
    """The trigrams of a text (as tuples of characters: made at C speed)."""
    return set(zip(text, text[1:], text[2:], strict=False))


def _among(order: Order, names: Collection[str]) -> Order:
    """The servers of an order (in list order) that are among these names."""
    found: Order = []
    for name in sorted(names):
        at = bisect_left(order, name, key=_server)
        if at < len(order) and order[at][0] == name:
            found.append(order[at])
    return found


def _server(row: tuple[str, str, list[Entry]]) -> str:
    return row[0]


def fold(text: str) -> str:
    """What a search compares: case-folded, as the `search` text is."""
    return text.casefold()


class SearchIndex:
    """Trigrams of every served server's texts -> the servers (by id) that have them.

    Updated in a worker thread after each snapshot swap (`update`); a catalog asks it only
    once it covers that catalog's build (`matching`), and scans its listing until then.
    """

    def __init__(self) -> None:
        self._names: list[str | None] = []  # id -> name; None once gone
        self._ordered: list[str] = []  # the names of ids below len(_ordered), in order
        self._tail: list[tuple[str, int]] = []  # (name, id) of the ids past them, sorted
        self._tail_ids: dict[str, int] = {}  # and their ids by name
        # name -> the entries last indexed for it, and their texts (the folded name first),
        # joined by NUL (which no search holds): one `in` checks them all
        self._servers: dict[str, tuple[list[Entry], str]] = {}
        self._lists: dict[Gram, array[int]] = {}
        self._bits: dict[Gram, int] = {}  # a bitset over ids, as one int
        self._counts: dict[Gram, int] = {}  # and how many bits it has
        self._chars: set[str] = set()  # every character any text has (up to CHARS of them)
        self._unindexed: list[str] = []  # servers not indexed: every search checks them (sorted)
        self._stale = 0  # ids gone, or indexing texts a server no longer has
        self._covers = -1  # the build whose servers are all indexed
        self._lock = threading.Lock()  # held by an update; queries meanwhile scan
        self._tokens = itertools.count()
        self._halted = False  # the gateway is stopping: an update ends where it is

    def halt(self) -> None:
        """The gateway is stopping: an update under way ends (`Stopped`), and so does each
        one after; searches scan (no other work waits on an index no one will ask)."""
        self._halted = True

    def next_token(self) -> int:
        """A number for a new build of the catalogs this index serves."""
        return next(self._tokens)

    def covers(self, token: int) -> bool:
        """Whether every server of that build is indexed (its searches use the index)."""
        return self._covers == token

    def size(self) -> dict[str, int]:
        return {"servers": len(self._servers), "trigrams": len(self._lists) + len(self._bits),
                "tail": len(self._tail), "stale": self._stale,
                "unindexed": len(self._unindexed)}  # fmt: skip

    def _id(self, name: str) -> int | None:
        """A name's id: in the ordered ids (found by bisection), else in the tail."""
        at = bisect_left(self._ordered, name)
        if at < len(self._ordered) and self._ordered[at] == name:
            return at
        return self._tail_ids.get(name)

    # -- updating (a worker thread) ------------------------------------------------------------

    def update(self, token: int, order: Order, only: Collection[str] | None = None) -> None:
        """Index the servers of a build (in list order, as `build.order_of` makes them).
        Servers whose entries are the same objects as last time are not looked at again;
        with `only`, no server but those (the rest are known to be as they were)."""
        with self._lock:
            self._covers = -1
            seen: set[str] = set()
            changed: list[tuple[str, list[Entry], str]] = []
            servers = self._servers
            looked = order if only is None else _among(order, only)
            for name, _, entries in paced(looked, 256):
                if self._halted:
                    raise Stopped
                seen.add(name)
                known = servers.get(name)
                if known is not None and known[0] == entries:  # the same Entry objects
                    continue
                texts = _texts(name, entries)
                if known is None or known[1] != texts:
                    changed.append((name, entries, texts))
                else:
                    servers[name] = (entries, texts)  # new entries, the same texts
            if only is None:
                gone = list(servers.keys() - seen)
            else:
                gone = [name for name in only if name in servers and name not in seen]
            live = len(order)
            if (
                not self._names
                or len(self._tail) + len(changed) > max(TAIL, live // 16)
                or self._stale + len(gone) + len(changed) > max(TAIL, live // 4)
            ):
                self._build(order)
            elif gone or changed:
                # Queries may be reading the texts (see `_matching`): change a copy.
                servers = self._servers = dict(servers)
                for name in gone:
                    ident = self._id(name)
                    if ident is not None:
                        self._names[ident] = None
                    del servers[name]
                    self._stale += 1
                for name, entries, texts in paced(changed, 1):
                    if self._halted:
                        raise Stopped
                    self._add(name, entries, texts)
            self._covers = token

    def _build(self, order: Order) -> None:
        """Index every server afresh, ids in name order (the order's)."""
        names: list[str | None] = []
        ordered: list[str] = []
        servers: dict[str, tuple[list[Entry], str]] = {}
        lists: dict[Gram, array[int]] = {}
        building: dict[Gram, bytearray] = {}
        unindexed: list[str] = []
        self._chars = set()
        # A server's trigrams are at most SERVER_GRAMS: a look at the clock each.
        for ident, (name, _, entries) in paced(enumerate(order), 1):
            if self._halted:
                raise Stopped
            texts = _texts(name, entries)
            names.append(name)
            ordered.append(name)
            servers[name] = (entries, texts)
            found = self._grams(texts)
            if self._too_many(found, lists, building):
                unindexed.append(name)  # in name order, as the order is
                continue
            byte, bit = ident >> 3, 1 << (ident & 7)
            for gram in found:
                bits = building.get(gram)
                if bits is not None:
                    bits[byte] |= bit
                    continue
                ids = lists.get(gram)
                if ids is None:
                    lists[gram] = array("I", (ident,))
                elif len(ids) + 1 < COMMON:
                    ids.append(ident)
                else:
                    bits = building[gram] = bytearray((len(order) + 7) >> 3)
                    for other in (*ids, ident):
                        bits[other >> 3] |= 1 << (other & 7)
                    del lists[gram]
        bitsets: dict[Gram, int] = {}
        counts: dict[Gram, int] = {}
        for gram, bits in paced(building.items(), 1):
            whole = bitsets[gram] = int.from_bytes(bits, "little")
            counts[gram] = whole.bit_count()
        self._names, self._ordered, self._servers = names, ordered, servers
        self._tail, self._tail_ids, self._unindexed = [], {}, unindexed
        self._lists, self._bits, self._counts, self._stale = lists, bitsets, counts, 0

    def _grams(self, texts: str) -> set[Gram]:
        found: set[Gram] = set()
        for text in texts.split("\x00"):
            found |= grams(text)
            if len(self._chars) < CHARS:
                self._chars.update(text)
        return found

    @staticmethod
    def _too_many(found: set[Gram], *known: Mapping[Gram, object]) -> bool:
        """Whether a server with these trigrams stays out of the index (see SERVER_GRAMS)."""
        if len(found) > SERVER_GRAMS:
            return True
        held = sum(len(table) for table in known)
        if held + len(found) <= GRAMS:
            return False
        new = sum(1 for gram in found if not any(gram in table for table in known))
        return held + new > GRAMS

    def _add(self, name: str, entries: list[Entry], texts: str) -> None:
        """A new server (an id in the tail, or its old one), or new texts of a known one (its
        old trigrams stay posted: it may be named where it no longer matches, until the next
        build)."""
        ident = self._id(name)
        if ident is None:
            ident = self._tail_ids[name] = len(self._names)
            self._names.append(name)
            tail = self._tail[:]  # queries may be reading the old list: replace, never change
            tail.insert(bisect_left(tail, (name, ident)), (name, ident))
            self._tail = tail
        elif self._names[ident] is None:
            self._names[ident] = name  # back again
        else:
            self._stale += 1
        self._servers[name] = (entries, texts)
        found = self._grams(texts)
        if self._too_many(found, self._lists, self._bits):
            unindexed = self._unindexed[:]  # replace, never change: queries may be reading it
            if name not in unindexed:
                unindexed.insert(bisect_left(unindexed, name), name)
            self._unindexed = unindexed
            return
        for gram in found:
            whole = self._bits.get(gram)
            if whole is not None:
                if not whole >> ident & 1:
                    self._bits[gram] = whole | 1 << ident  # a new int: readers keep theirs
                    self._counts[gram] += 1
                continue
            ids = self._lists.get(gram)
            if ids is None:
                self._lists[gram] = array("I", (ident,))
            elif len(ids) + 1 < COMMON:
                self._lists[gram] = array("I", sorted({*ids, ident}))  # stays ascending
            else:
                promoted = 0
                for other in {*ids, ident}:
                    promoted |= 1 << other
                self._bits[gram], self._counts[gram] = promoted, promoted.bit_count()
                del self._lists[gram]

    # -- asking (the event loop) ---------------------------------------------------------------

    def matching(
        self, needle: str, token: int, allowance: Allowance, after: str = ""
    ) -> Iterator[str] | None:
        """The names of the servers with a text containing a folded needle, from `after` on,
        in order, stepping `allowance` every `postings.STEP` candidates checked. None when the index
        does not cover this build (or is being updated), or the needle is too short for
        trigrams: then scan."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._covers != token:
                return None
            if len(needle) < 3:  # too short for trigrams: scan, unless no text has its letters
                unseen = len(self._chars) < CHARS and not set(needle) <= self._chars
                return iter(()) if unseen and not self._unindexed else None
            return self._matching(needle, after, allowance)
        finally:
            self._lock.release()

    def _matching(self, needle: str, after: str, allowance: Allowance) -> Iterator[str]:
        """Everything the answer needs is taken now, under the lock: the iterator reads
        nothing an update changes."""
        names, servers, ordered = self._names, self._servers, self._ordered
        unindexed = self._unindexed
        always = [(n, -1) for n in unindexed[bisect_left(unindexed, after) :]]
        lists: list[array[int]] = []
        masks: list[tuple[int, int]] = []
        for gram in grams(needle):
            whole = self._bits.get(gram)
            if whole is not None:
                masks.append((self._counts[gram], whole))
                continue
            posted = self._lists.get(gram)
            if posted is None:  # no indexed server has this trigram
                return from_ids([], ordered, always, servers, needle, allowance)
            lists.append(posted)
        start = bisect_left(ordered, after)
        if lists:  # trigrams few servers have: their servers, intersected while many
            lists.sort(key=len)
            found = set(lists[0])
            for posted in lists[1:]:
                if len(found) <= _FEW:
                    break
                found.intersection_update(posted)
            ids = sorted(found)
            count = len(ordered)
            split = bisect_left(ids, count)
            tail = sorted((n, i) for i in ids[split:] if (n := names[i]) and n >= after)
            if always:
                tail = sorted((*tail, *always))
            inside = ids[bisect_left(ids, start, hi=split) : split]
            return from_ids(inside, ordered, tail, servers, needle, allowance)
        masks.sort()  # the rarest first: the intersection shrinks fastest
        narrowed = masks[0][1]
        for _, other in masks[1:]:
            narrowed &= other
        raw = narrowed.to_bytes((narrowed.bit_length() + 7) // 8, "little")
        tail = self._tail[bisect_left(self._tail, (after, -1)) :]
        if always:
            tail = sorted((*tail, *always))
        return from_bits(raw, start, len(ordered), ordered, tail, servers, needle, allowance)


def _texts(name: str, entries: list[Entry]) -> str:
    """A server's distinct texts joined by NUL: its folded name, then its versions' titles
    and descriptions (each `title NUL description` already)."""
    texts = dict.fromkeys(entry.text for entry in entries if entry.text)
    return "\x00".join((fold(name), *texts))
