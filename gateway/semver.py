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
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

# A prerelease identifier sorts numerically when numeric, below any alphanumeric one.
_Identifier = tuple[int, int, str]
SemverKey = tuple[int, int, int, int, tuple[_Identifier, ...]]


@lru_cache(maxsize=65536)
def semver_key(version: str) -> SemverKey | None:
    """A sortable key for a strict semver string, or None when it is not one."""
    match = _SEMVER.match(version)
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
