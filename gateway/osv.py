"""Known vulnerabilities and malware from OSV records: which advisories affect a package version.

An OSV record (https://ossf.github.io/osv-schema/) names packages by ecosystem and name, and
the versions each advisory affects: `ranges` of events (`introduced`, `fixed`,
`last_affected`, `limit`) and a list of `versions`. Records come from a feed the operator
names (see `advisories`), and are hostile input like any other: each is checked field by
field, a bad one is skipped and counted, and a feed of mostly bad records is refused.

Versions compare in each ecosystem's own order (`registries`: SemVer for npm and cargo,
PEP 440 for PyPI, NuGet's, Go's, Maven's); a `SEMVER` range in SemVer 2.0 whatever the
ecosystem, without Go's `v`. A range of another type (`GIT`) cannot be evaluated: a version it
might cover is `unknown`, unless the record's `versions` list it. Withdrawn records are
skipped. An advisory whose id or alias starts with `MAL-` is known malware (OpenSSF). Its
severity is the highest CVSS v3 or v4 base score given, as its rating (none, low, medium,
high, critical); a record without one has no severity (`None`), which no `>=` matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from gateway.errors import FeedInvalid
from gateway.registries import ECOSYSTEMS
from gateway.registries.base import MAX_VERSION, SEMVER, Ecosystem, version_class

if TYPE_CHECKING:
    from univers.versions import Version

State = Literal["present", "absent", "unknown"]
SEVERITIES = ("none", "low", "medium", "high", "critical")
BY_OSV: dict[str, Ecosystem] = {e.osv: e for e in ECOSYSTEMS.values() if e.osv is not None}
MAX_RECORD_BYTES = 1024 * 1024
MAX_LIST = 10_000  # aliases, affected packages, ranges, events or versions in one record
EVENTS = ("introduced", "fixed", "last_affected", "limit")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")
_CACHED = 1 << 16  # version orders remembered per evaluation (versions come from upstreams)


def rating(score: float) -> str:
    """CVSS v3/v4 qualitative rating of a base score."""
    if score == 0.0:
        return "none"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    return "high" if score < 9.0 else "critical"


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    malicious: bool
    severity: str | None  # a rating of SEVERITIES, or None: no CVSS v3/v4 score given


Event = tuple[str, str]  # (kind, version) of a range


@dataclass(frozen=True, slots=True)
class Affected:
    """One advisory's account of one package: the versions it affects."""

    advisory: Advisory
    semver: tuple[tuple[Event, ...], ...]  # SEMVER ranges
    ecosystem: tuple[tuple[Event, ...], ...]  # ECOSYSTEM ranges
    versions: frozenset[str]
    opaque: bool  # it has a range that cannot be evaluated (GIT)


@dataclass(frozen=True, slots=True)
class Advisories:
    """Every advisory of a feed by package: (registryType, the name as OSV matches it) ->
    what affects it. Immutable once read; `covers` lists the registry types it speaks for
    (for others, nothing is known)."""

    packages: dict[tuple[str, str], tuple[Affected, ...]]
    covers: frozenset[str]
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records skipped
    digest: str = ""  # identifies the feed's content: a rebuild decides anew when it changes
    newest: str | None = None  # the newest record's `modified`: how current the data is
    feeds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type -> feeds for it


@dataclass(frozen=True, slots=True)
class Finding:
    """What a feed says of one package version."""

    state: State
    advisories: tuple[Advisory, ...] = ()


ABSENT = Finding("absent")
UNKNOWN = Finding("unknown")


# -- reading records ----------------------------------------------------------------------------


class _Skip(Exception):
    """A record skipped, and why (internal to reading a feed)."""


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _Skip(f"{what} is not a string of 1 to {limit} characters")
    if not value.isprintable():
        raise _Skip(f"{what} has characters that cannot be printed")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise _Skip(f"{what} is not a list of at most {MAX_LIST}")
    return value


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Skip(f"{what} is not an object")
    return value


def _severity(entries: object) -> float | None:
    from cvss import CVSS3, CVSS4  # read where feeds are read (the helper process), only

    best: float | None = None
    for entry in _list(entries, "severity"):
        entry = _object(entry, "severity[]")
        kind, score = entry.get("type"), entry.get("score")
        if kind not in ("CVSS_V3", "CVSS_V4") or not isinstance(score, str) or len(score) > 512:
            continue
        try:
            value = float((CVSS3 if kind == "CVSS_V3" else CVSS4)(score).base_score)
        except Exception:  # an unreadable vector is no score (each version raises its own)
            continue
        best = value if best is None else max(best, value)
    return best


def _ranges(ranges: object) -> tuple[list[tuple[Event, ...]], list[tuple[Event, ...]], bool]:
    semver: list[tuple[Event, ...]] = []
    ecosystem: list[tuple[Event, ...]] = []
    opaque = False
    for one in _list(ranges, "ranges"):
        one = _object(one, "ranges[]")
        kind = one.get("type")
        if kind not in ("SEMVER", "ECOSYSTEM"):
            opaque = True  # GIT, or a type this reader does not know
            continue
        events: list[Event] = []
        for event in _list(one.get("events"), "events"):
            event = _object(event, "events[]")
            named = [key for key in EVENTS if key in event]
            if len(named) != 1:
                raise _Skip("an event names none or more than one of " + ", ".join(EVENTS))
            events.append((named[0], _text(event[named[0]], "an event's version", MAX_VERSION)))
        (semver if kind == "SEMVER" else ecosystem).append(tuple(events))
    return semver, ecosystem, opaque


def read_record(document: object, covers: frozenset[str]) -> list[tuple[tuple[str, str], Affected]]:
    """One OSV record's advisory for each package of an ecosystem the feed covers (nothing
    for a withdrawn record); `_Skip` when the record is malformed."""
    record = _object(document, "the record")
    if record.get("withdrawn") is not None:
        return []
    ident = _text(record.get("id"), "id", 128)
    aliases = tuple(
        _text(alias, "an alias", 128) for alias in _list(record.get("aliases"), "aliases")
    )
    malicious = any(name.startswith("MAL-") for name in (ident, *aliases))
    score = _severity(record.get("severity"))
    found: list[tuple[tuple[str, str], Affected]] = []
    for affected in _list(record.get("affected"), "affected"):
        affected = _object(affected, "affected[]")
        package = _object(affected.get("package"), "affected[].package")
        ecosystem = BY_OSV.get(str(package.get("ecosystem")))
        if ecosystem is None or ecosystem.name not in covers:
            continue  # another ecosystem, or one the operator did not name for this feed
        name = _text(package.get("name"), "a package name", 512)
        own = _severity(affected.get("severity"))
        best = own if score is None else score if own is None else max(score, own)
        advisory = Advisory(ident, aliases, malicious, None if best is None else rating(best))
        semver, ordered, opaque = _ranges(affected.get("ranges"))
        versions = frozenset(
            _text(v, "a version", MAX_VERSION) for v in _list(affected.get("versions"), "versions")
        )
        key = (ecosystem.name, ecosystem.osv_name(name))
        found.append((key, Affected(advisory, tuple(semver), tuple(ordered), versions, opaque)))
    return found


def read_feed(documents: Iterable[bytes], covers: frozenset[str], digest: str = "") -> Advisories:
    """Every record of a feed (each document one record, or a list of them). A feed where
    more than half of the records (and at least 10) are malformed is refused: `FeedInvalid`."""
    packages: dict[tuple[str, str], list[Affected]] = {}
    records = 0
    skipped: dict[str, int] = {}
    newest: str | None = None
    for document in documents:
        try:
            parsed = orjson.loads(document)
        except orjson.JSONDecodeError:
            parsed = None
            skipped["not JSON"] = skipped.get("not JSON", 0) + 1
            records += 1
            continue
        for record in parsed if isinstance(parsed, list) else [parsed]:
            records += 1
            modified = record.get("modified") if isinstance(record, dict) else None
            if isinstance(modified, str) and _MOMENT.fullmatch(modified):
                newest = modified if newest is None or modified > newest else newest
            try:
                for key, affected in read_record(record, covers):
                    packages.setdefault(key, []).append(affected)
            except _Skip as skip:
                skipped[str(skip)] = skipped.get(str(skip), 0) + 1
    bad = sum(skipped.values())
    if bad >= 10 and bad * 2 > records:
        raise FeedInvalid(f"{bad} of its {records} records are malformed", skipped)
    kept = {key: tuple(found) for key, found in packages.items()}
    return Advisories(kept, covers, records, skipped, digest, newest)


# -- evaluating ----------------------------------------------------------------------------------


def _semver(version: str) -> Version | None:
    text = version.removeprefix("v")
    if len(text) > MAX_VERSION or SEMVER.fullmatch(text) is None:
        return None
    try:
        return version_class("SemverVersion")(text)
    except Exception:  # not a SemVer version
        return None


class Judge:
    """Evaluates advisories for package versions, remembering version orders (one per build
    thread: not shared between threads)."""

    def __init__(self, advisories: Advisories | None) -> None:
        self.advisories = advisories
        self._orders: dict[tuple[str, str, str], Version | None] = {}

    def _order(self, kind: str, ecosystem: Ecosystem, version: str) -> Version | None:
        key = (kind, ecosystem.name, version)
        if key not in self._orders:
            if len(self._orders) >= _CACHED:
                self._orders.clear()
            made = _semver(version) if kind == "SEMVER" else ecosystem.order(version)
            self._orders[key] = made
        return self._orders[key]

    @staticmethod
    def _every(events: tuple[Event, ...]) -> bool:
        """A range of every version: introduced at "0", nothing after (or a limit of "*")."""
        return bool(events) and all(
            (k == "introduced" and v == "0") or (k == "limit" and v == "*") for k, v in events
        )

    def _affects(self, ecosystem: Ecosystem, kind: str, events: tuple[Event, ...],
                 version: str | None) -> bool | None:  # fmt: skip
        """Whether one range covers the version (None: it cannot be told). A version its
        order cannot read, or no version at all (the newest is installed), is covered only by
        a range of every version. Versions that cannot be compared are not compared."""
        if self._every(events):
            return True
        mine = self._order(kind, ecosystem, version) if version is not None else None
        if mine is None:
            return None
        try:
            return self._within(kind, ecosystem, events, mine)
        except Exception:  # orders of one library that still do not compare: cannot tell
            return None

    def _within(self, kind: str, ecosystem: Ecosystem, events: tuple[Event, ...],
                mine: Version) -> bool | None:  # fmt: skip
        affected = False
        ordered: list[tuple[Version, str]] = []
        limits: list[Version] = []
        unlimited = False
        for event_kind, text in events:
            if event_kind == "introduced" and text == "0":
                affected = True  # "0": before every version, so the first event in order
                continue
            if event_kind == "limit" and text == "*":
                unlimited = True
                continue
            order = self._order(kind, ecosystem, text)
            if order is None:
                return None
            if event_kind == "limit":  # the schema's BeforeLimits: below any of them
                limits.append(order)
            else:
                ordered.append((order, event_kind))
        ordered.sort(key=lambda pair: pair[0])
        for order, event_kind in ordered:
            if event_kind == "introduced":
                affected = affected or mine >= order
            elif mine > order or (mine == order and event_kind == "fixed"):
                affected = False  # fixed at or below it, last_affected below it
        if limits and not unlimited:
            affected = affected and any(mine < limit for limit in limits)
        return affected

    def _listed(self, ecosystem: Ecosystem, listed: frozenset[str], version: str | None) -> bool:
        """Whether the version is one of `versions`, as its tool reads both (`1.0` is `1.0.0`
        to pip; go's `v1.0.0` is OSV's `1.0.0`)."""
        if version is None or not listed:
            return False
        if version in listed:
            return True
        mine = self._order("ECOSYSTEM", ecosystem, version)
        if mine is None:
            return False
        for text in listed:
            other = self._order("ECOSYSTEM", ecosystem, text)
            try:
                if other is not None and other == mine:
                    return True
            except Exception:  # not comparable: not the same version
                continue
        return False

    def finding(self, registry_type: str, identifier: str, version: str | None) -> Finding | None:
        """What the feed says of one package version (`version` None: the package names none,
        so its tool installs the newest); None when OSV has no ecosystem for its type
        (nothing to know, nothing unknown)."""
        ecosystem = ECOSYSTEMS.get(registry_type)
        if ecosystem is None or ecosystem.osv is None:
            return None
        advisories = self.advisories
        if advisories is None or registry_type not in advisories.covers:
            return UNKNOWN
        found = advisories.packages.get((registry_type, ecosystem.osv_name(identifier)))
        if not found:
            return ABSENT
        hits: list[Advisory] = []
        unsure = False
        for affected in found:
            verdict = self._listed(ecosystem, affected.versions, version)
            if not verdict:
                kinds = (("SEMVER", affected.semver), ("ECOSYSTEM", affected.ecosystem))
                for kind, ranges in kinds:
                    for events in ranges:
                        one = self._affects(ecosystem, kind, events, version)
                        if one:
                            verdict = True
                            break
                        if one is None:
                            unsure = True
                    if verdict:
                        break
                # a GIT range, or a version not named: what it covers cannot be told
                unsure = unsure or (not verdict and (affected.opaque or version is None))
            if verdict and affected.advisory not in hits:
                hits.append(affected.advisory)
        if hits:
            return Finding("present", tuple(hits))
        return UNKNOWN if unsure else ABSENT
