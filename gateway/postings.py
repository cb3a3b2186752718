"""A search's candidates read from the index (`gateway.search`), in name order: the ids of a
posting list, or the bits of an intersected bitset, then the servers past the ordered ids (the
tail); each is checked against its texts before its name is given. A query's candidates come
through one generator frame, which steps the request's allowance every `STEP` candidates: a
search that checks many gives the serving loop back (see `pacing.Allowance`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.pacing import Allowance

if TYPE_CHECKING:
    from gateway.entry import Entry

STEP = 256  # candidates checked between two steps of a search's allowance
_NONZERO = re.compile(rb"[^\x00]")

_BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))


def _bit(raw: bytes, ident: int) -> bool:
    byte = ident >> 3
    return byte < len(raw) and bool(raw[byte] >> (ident & 7) & 1)


Servers = dict[str, tuple[list["Entry"], str]]  # name -> (entries, texts joined by NUL)


def _has(servers: Servers, name: str, needle: str) -> bool:
    known = servers.get(name)
    return known is not None and needle in known[1]


class _Steps:
    """Candidates checked, counted: the allowance stepped every `STEP` of them."""

    __slots__ = ("_allowance", "_left")

    def __init__(self, allowance: Allowance) -> None:
        self._allowance = allowance
        self._left = STEP

    def check(self) -> None:
        self._left -= 1
        if not self._left:
            self._left = STEP
            self._allowance.step()


def from_ids(
    ids: list[int],
    ordered: list[str],
    tail: list[tuple[str, int]],
    servers: Servers,
    needle: str,
    allowance: Allowance,
) -> Iterator[str]:
    """The names of these ids (ascending: in name order) and of the tail's (sorted) whose
    texts contain the needle, in order."""
    at = 0
    steps = _Steps(allowance)
    for ident in ids:
        steps.check()
        name = ordered[ident]
        while at < len(tail) and tail[at][0] < name:
            if _has(servers, tail[at][0], needle):
                yield tail[at][0]
            at += 1
        if _has(servers, name, needle):
            yield name
    for other, _ in tail[at:]:
        steps.check()
        if _has(servers, other, needle):
            yield other


def from_bits(
    raw: bytes,
    start: int,
    end: int,
    ordered: list[str],
    tail: list[tuple[str, int]],
    servers: Servers,
    needle: str,
    allowance: Allowance,
) -> Iterator[str]:
    """The names whose bits are set (ids start..end, then the tail's, merged in order) and
    whose texts contain the needle, in order."""
    at = 0
    steps = _Steps(allowance)
    for found in _NONZERO.finditer(raw, start >> 3, (end + 7) >> 3):
        base = found.start() * 8
        for bit in _BITS[raw[found.start()]]:
            ident = base + bit
            if ident < start or ident >= end:
                continue
            steps.check()
            name = ordered[ident]
            while at < len(tail) and tail[at][0] < name:
                other, other_id = tail[at]
                at += 1
                if (other_id < 0 or _bit(raw, other_id)) and _has(servers, other, needle):
                    yield other
            if _has(servers, name, needle):
                yield name
    for other, other_id in tail[at:]:
        steps.check()
        if (other_id < 0 or _bit(raw, other_id)) and _has(servers, other, needle):
            yield other
