"""Version order as the registry defines "latest".

Both versions strict semver (optional `v`, three numbers, optional prerelease and build) ->
semver precedence, prereleases below their release; neither semver -> later `publishedAt`
wins; mixed -> the semver one wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TypeVar

from gateway.entry import Entry

_SEMVER = re.compile(
    r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)

# A prerelease identifier sorts numerically when numeric, below any alphanumeric one.
_Identifier = tuple[int, int, str]
SemverKey = tuple[int, int, int, int, tuple[_Identifier, ...]]


@lru_cache(maxsize=65536)
def semver_key(version: str) -> SemverKey | None:
    """A sortable key for a strict semver string, or None when it is not one."""
    match = _SEMVER.fullmatch(version)
    if not match:
        return None
    major, minor, patch, prerelease = (
        int(match.group(1)),
        int(match.group(2)),
        int(match.group(3)),
        match.group(4),
    )
    if prerelease is None:
        return (major, minor, patch, 1, ())
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split(".")
    )
    return (major, minor, patch, 0, identifiers)


E = TypeVar("E", bound=Entry)


def pick_latest(entries: Iterable[E]) -> E | None:
    """The entry that is `isLatest` among these versions of one server."""
    best: E | None = None
    best_key: SemverKey | None = None
    for entry in entries:
        key = semver_key(entry.version)
        if best is None:
            best, best_key = entry, key
        elif key is not None and best_key is not None:
            if key > best_key or (key == best_key and entry.published_at > best.published_at):
                best, best_key = entry, key
        elif key is not None or (best_key is None and entry.published_at > best.published_at):
            best, best_key = entry, key  # semver beats non-semver; else later publishedAt
    return best


_COMPARATOR = re.compile(
    r"[ \t]*(>=|<=|>|<|==|=|!=)?[ \t]*v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?"
    r"(-[0-9A-Za-z.-]+)?[ \t]*"
)


def _bound(text: str) -> tuple[str, SemverKey] | None:
    match = _COMPARATOR.fullmatch(text)
    if not match:
        return None
    operator = match.group(1) or "=="
    version = f"{match.group(2)}.{match.group(3) or 0}.{match.group(4) or 0}{match.group(5) or ''}"
    key = semver_key(version)
    if key is None:
        return None
    return ("==" if operator == "=" else operator, key)


class VersionRange:
    """A version constraint: comparators joined by commas (`>=1.2,<2`), or one exact version.

    Comparators compare in semver order (a missing minor or patch is 0). A version that is not
    strict semver only ever matches an exact constraint equal to it.
    """

    __slots__ = ("bounds", "exact", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        stripped = text.strip()
        if not stripped:
            raise ValueError("an empty version constraint")
        self.exact: str | None = None
        self.bounds: list[tuple[str, SemverKey]] = []
        if not any(symbol in stripped for symbol in "<>=!,"):
            self.exact = stripped  # an exact version, semver or not
            return
        for part in stripped.split(","):
            bound = _bound(part)
            if bound is None:
                raise ValueError(
                    f"{text!r} is not a version range: use comparators like >=1.2,<2 "
                    "or an exact version"
                )
            self.bounds.append(bound)

    def matches(self, version: str) -> bool:
        if self.exact is not None:
            if version == self.exact:
                return True
            mine, theirs = semver_key(self.exact), semver_key(version)
            return mine is not None and mine == theirs
        key = semver_key(version)
        if key is None:
            return False
        for operator, bound in self.bounds:
            if operator == "==" and key != bound:
                return False
            if operator == "!=" and key == bound:
                return False
            if operator == ">=" and key < bound:
                return False
            if operator == ">" and key <= bound:
                return False
            if operator == "<=" and key > bound:
                return False
            if operator == "<" and key >= bound:
                return False
        return True
