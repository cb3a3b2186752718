"""Merge upstreams by precedence: a name belongs to the first upstream that has it.

`owns` reserves names for one upstream even before it lists them: no other upstream can fill
them. Lower upstreams' versions of a name that belongs elsewhere are shadowed, in every view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway import gil
from gateway.entry import Entry


def matches_any(name: str, globs: Sequence[str]) -> bool:
    """Case-sensitive glob match of a server name against any of the patterns."""
    return any(fnmatchcase(name, glob) for glob in globs)


@dataclass(frozen=True, slots=True)
class Source:
    """One upstream's current entries, in the shape the merge needs."""

    upstream: str
    entries: Sequence[Entry]
    owns: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Merged:
    """The merge's result: each name's owning upstream and versions, and who was shadowed."""

    servers: dict[str, tuple[str, list[Entry]]] = field(default_factory=dict)
    shadowed: dict[str, list[str]] = field(default_factory=dict)  # name -> hidden upstreams

    def entry_count(self) -> int:
        return sum(len(entries) for _, entries in self.servers.values())


def owner_by_reservation(name: str, sources: Sequence[Source]) -> str | None:
    """The first upstream whose `owns` globs reserve this name, if any."""
    for source in sources:
        if source.owns and matches_any(name, source.owns):
            return source.upstream
    return None


def merge(sources: Sequence[Source]) -> Merged:
    """Apply precedence and reservations; sources are in the configured upstream order."""
    result = Merged()
    reserved: dict[str, str | None] = {}
    any_owns = any(source.owns for source in sources)
    pacer = gil.Pacer()
    for source in sources:
        grouped: dict[str, list[Entry]] = {}
        for index, entry in enumerate(source.entries):
            if not index % 1024:
                pacer.tick()
            grouped.setdefault(entry.name, []).append(entry)
        for name, entries in grouped.items():
            if any_owns:
                if name not in reserved:
                    reserved[name] = owner_by_reservation(name, sources)
                owner = reserved[name]
                if owner is not None and owner != source.upstream:
                    result.shadowed.setdefault(name, []).append(source.upstream)
                    continue
            if name in result.servers:
                result.shadowed.setdefault(name, []).append(source.upstream)
                continue
            result.servers[name] = (source.upstream, entries)
    return result
