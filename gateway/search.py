"""Search: `search=` finds the servers whose name, title or description contains the text, in
any case (a substring: `eath` finds `weather`), from a trigram index rather than a scan.

The index maps each trigram of a server's texts (its name, and the title and description of
each of its versions, case-folded) to the servers that have it. A query intersects the
servers of its trigrams and checks each item it lists, so the index may be a superset: it
is kept up to date incrementally. A server whose texts change gets a new id (the old one is
retired), so nothing is ever removed from a posting; retired ids are compacted away once
they outnumber the live ones.

A trigram in few servers keeps a list of their ids; one in many (`COMMON` ids or more) keeps
a bitset over ids, and intersecting bitsets is a few C-level operations. When the candidates
are too many to be worth sorting (`DENSE` or more), the text is common enough that scanning
the listing in order finds a page's matches within a few pages' worth of items.
"""

from __future__ import annotations

import itertools
import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from gateway import gil

if TYPE_CHECKING:
    from gateway.catalog import Item, Order

Gram = tuple[str, str, str]
COMMON = 1024  # a trigram in this many ids or more keeps a bitset instead of a list
DENSE = 2048  # at least this many candidate servers: scan the listing instead
MAX_SEARCH = 256  # characters of a `search` value (longer ones are refused, 422)
COMPACT = 4096  # retired ids kept at least, before the index is compacted
_NONZERO = re.compile(rb"[^\x00]")


def grams(text: str) -> set[Gram]:
    """The trigrams of a text (as tuples of characters: made at C speed)."""
    return set(zip(text, text[1:], text[2:], strict=False))


def fold(text: str) -> str:
    """What a search compares: case-folded, as the `search` text is."""
    return text.casefold()


class SearchIndex:
    """Trigrams of every served server's texts -> the servers (by id) that have them.

    Updated in a worker thread after each snapshot swap (`update`); a catalog asks it only
    once it covers that catalog's build (`covers`), and scans the listing until then.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}  # name -> its current id
        self._names: list[str | None] = []  # id -> name; None once retired
        self._texts: dict[str, tuple[str, ...]] = {}  # name -> the texts its id indexes
        self._lists: dict[Gram, array[int]] = {}
        self._bits: dict[Gram, bytearray] = {}
        self._chars: set[str] = set()  # every character any text has
        self._live = 0
        self._covers = -1  # the build whose servers are all indexed
        self._lock = threading.Lock()  # one update at a time
        self._tokens = itertools.count()

    def next_token(self) -> int:
        """A number for a new build of the catalogs this index serves."""
        return next(self._tokens)

    # -- updating (a worker thread) ------------------------------------------------------------

    def update(self, build: int, order: Order) -> None:
        """Index the servers of a build (names, then versions, as `catalog.order_of` makes
        them): new and changed servers get new ids, the others keep theirs."""
        with self._lock:  # queries meanwhile scan (see `candidates`)
            self._covers = -1
            pacer = gil.Pacer()
            seen: set[str] = set()
            for index, (name, _, entries) in enumerate(order):
                if not index % 64:
                    pacer.tick()
                seen.add(name)
                texts = _texts(name, (entry.text for entry in entries))
                if self._texts.get(name) != texts:
                    self._index(name, texts)
            for name in [name for name in self._ids if name not in seen]:
                pacer.tick()
                self._retire(name)
            if len(self._names) - self._live > max(self._live, COMPACT):
                self._compact(pacer)
            self._covers = build

    def _retire(self, name: str) -> None:
        self._names[self._ids.pop(name)] = None
        del self._texts[name]
        self._live -= 1

    def _index(self, name: str, texts: tuple[str, ...]) -> None:
        if name in self._ids:
            self._retire(name)
        ident = len(self._names)
        self._names.append(name)
        self._ids[name] = ident
        self._texts[name] = texts
        self._live += 1
        found: set[Gram] = set()
        for text in texts:
            found |= grams(text)
            self._chars.update(text)
        byte, bit = ident >> 3, 1 << (ident & 7)
        for gram in found:
            bits = self._bits.get(gram)
            if bits is not None:
                if byte >= len(bits):
                    bits.extend(bytes(byte + 1 - len(bits) + 1024))
                bits[byte] |= bit
                continue
            ids = self._lists.get(gram)
            if ids is None:
                self._lists[gram] = array("I", (ident,))
            elif len(ids) + 1 < COMMON:
                ids.append(ident)
            else:  # promoted: the bitset is in place before the list goes
                promoted = bytearray(byte + 1024)
                for other in (*ids, ident):
                    promoted[other >> 3] |= 1 << (other & 7)
                self._bits[gram] = promoted
                del self._lists[gram]

    def _compact(self, pacer: gil.Pacer) -> None:
        """Index the live servers afresh: retired ids are dropped from every posting."""
        texts = self._texts
        self._ids, self._names, self._texts = {}, [], {}
        self._lists, self._bits, self._live = {}, {}, 0
        for index, (name, known) in enumerate(sorted(texts.items())):
            if not index % 64:
                pacer.tick()
            self._index(name, known)

    # -- asking (the event loop) ---------------------------------------------------------------

    def candidates(self, needle: str, build: int) -> list[str] | None:
        """The names that may match a folded needle, sorted; None when the index does not
        cover this build yet (or is being updated), when the needle is too short for
        trigrams, or when so many names may match that a scan of the listing is cheaper."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._covers != build:
                return None
            return self._candidates(needle)
        finally:
            self._lock.release()

    def _candidates(self, needle: str) -> list[str] | None:
        if len(needle) < 3:
            return None if set(needle) <= self._chars else []
        lists: list[array[int]] = []
        bitsets: list[bytearray] = []
        for gram in grams(needle):
            bits = self._bits.get(gram)
            if bits is not None:
                bitsets.append(bits)
                continue
            ids = self._lists.get(gram)
            if ids is None:
                return []  # no text has this trigram: nothing matches
            lists.append(ids)
        if lists:
            lists.sort(key=len)
            found = set(lists[0])
            for ids in lists[1:]:
                found.intersection_update(ids)
            if bitsets:
                found = {i for i in found if all(_has(bits, i) for bits in bitsets)}
        else:
            mask = int.from_bytes(bitsets[0], "little")
            for bits in bitsets[1:]:
                mask &= int.from_bytes(bits, "little")
            if mask.bit_count() >= DENSE:
                return None
            found = set(_set_bits(mask))
        if len(found) >= DENSE:
            return None
        names = self._names
        return sorted({name for i in found if (name := names[i]) is not None})


def _has(bits: bytearray, ident: int) -> bool:
    byte = ident >> 3
    return byte < len(bits) and bool(bits[byte] >> (ident & 7) & 1)


def _set_bits(mask: int) -> Iterator[int]:
    raw = mask.to_bytes((mask.bit_length() + 7) // 8, "little")
    for found in _NONZERO.finditer(raw):
        at, value = found.start(), raw[found.start()]
        for bit in range(8):
            if value >> bit & 1:
                yield at * 8 + bit


def _texts(name: str, texts: Iterable[str]) -> tuple[str, ...]:
    """A server's distinct texts: its folded name, then its versions' titles and descriptions."""
    return (fold(name), *dict.fromkeys(text for text in texts if text))


# -- pages ---------------------------------------------------------------------------------------


def _name(item: Item) -> str:
    return item.name


def matches(item: Item, needle: str) -> bool:
    return needle in item.name_folded or needle in item.registry_meta.entry.text


def scan(items: Sequence[Item], start: int, needle: str) -> Iterator[Item]:
    """The items from `start` on that match, in list order."""
    for index in range(start, len(items)):
        item = items[index]
        if needle in item.name_folded or needle in item.registry_meta.entry.text:
            yield item


def found(
    items: Sequence[Item], names: list[str], after: tuple[str, str] | None, needle: str
) -> Iterator[Item]:
    """The items of the candidate names (sorted) after `after` that match, in list order."""
    first = bisect_left(names, after[0]) if after is not None else 0
    for name in names[first:]:
        low = bisect_left(items, name, key=_name)
        high = bisect_right(items, name, lo=low, key=_name)
        for index in range(low, high):
            item = items[index]
            if after is not None and (item.name, item.version) <= after:
                continue
            if matches(item, needle):
                yield item
