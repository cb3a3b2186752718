"""Merge upstreams by precedence: a name belongs to the first upstream that has it.

Names are compared by identity (see `names`): a lower upstream's look-alike of a name that a
higher upstream has (`COM.EXAMPLE/Tool` beside `com.example/tool`) is shadowed like the name
itself. `owns` reserves names for one upstream even before it lists them: no other upstream
can fill them. Lower upstreams' versions of a name that belongs elsewhere are shadowed, in
every view. Two spellings of one identity from the same upstream are both served, and noted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.entry import Entry
from gateway.names import identity_matches
from gateway.stepping import paced


@dataclass(frozen=True, slots=True)
class Source:
    """One upstream's current entries, in the shape the merge needs."""

    upstream: str
    entries: Sequence[Entry]
    owns: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Shadow:
    """A name an upstream offered that another upstream has, or owns."""

    upstream: str  # the upstream whose versions are hidden
    name: str  # as that upstream spelled it
    by: str  # the upstream the name belongs to
    reserved: bool  # by that upstream's `owns`, rather than by having the name
    spelled: str | None = None  # how the owner spells it, where that differs (a look-alike)


@dataclass(frozen=True, slots=True)
class Merged:
    """The merge's result: each name's owning upstream and versions, and who was shadowed."""

    servers: dict[str, tuple[str, list[Entry]]] = field(default_factory=dict)  # by name
    owners: dict[str, str] = field(default_factory=dict)  # identity -> its upstream
    shadowed: dict[str, list[Shadow]] = field(default_factory=dict)  # by identity
    spelled: dict[str, str] = field(default_factory=dict)  # identity -> the first name served
    others: dict[str, list[str]] = field(default_factory=dict)  # identity -> more names served

    def entry_count(self) -> int:
        return sum(len(entries) for _, entries in self.servers.values())

    def lookalikes(self, identity: str) -> list[str]:
        """The names served for this identity, when one upstream serves more than one."""
        others = self.others.get(identity)
        return [self.spelled[identity], *others] if others else []


def owner_by_reservation(identity: str, sources: Sequence[Source]) -> str | None:
    """The first upstream whose `owns` globs reserve this identity, if any."""
    for source in sources:
        if source.owns and identity_matches(identity, source.owns):
            return source.upstream
    return None


def merge(sources: Sequence[Source]) -> Merged:
    """Apply precedence and reservations; sources are in the configured upstream order."""
    result = Merged()
    reserved: dict[str, str | None] = {}
    any_owns = any(source.owns for source in sources)
    for source in sources:
        grouped: dict[str, list[Entry]] = {}
        for entry in paced(source.entries):
            grouped.setdefault(entry.name, []).append(entry)
        for name, entries in paced(grouped.items(), 256):
            identity = entries[0].identity
            if any_owns:
                if identity not in reserved:
                    reserved[identity] = owner_by_reservation(identity, sources)
                owner = reserved[identity]
                if owner is not None and owner != source.upstream:
                    _shadow(result, source.upstream, name, identity, owner, reserved=True)
                    continue
            holder = result.owners.get(identity)
            if holder is not None and holder != source.upstream:
                _shadow(result, source.upstream, name, identity, holder, reserved=False)
                continue
            result.owners[identity] = source.upstream
            result.servers[name] = (source.upstream, entries)
            if holder is None:
                result.spelled[identity] = name
            else:  # a look-alike from the same upstream: both served
                result.others.setdefault(identity, []).append(name)
    return result


def _shadow(
    result: Merged, upstream: str, name: str, identity: str, by: str, *, reserved: bool
) -> None:
    first = result.spelled.get(identity)
    served = (first, *result.others.get(identity, ())) if first is not None else ()
    spelled = None if name in served else first
    shadow = Shadow(upstream, name, by, reserved, spelled)
    result.shadowed.setdefault(identity, []).append(shadow)
