"""What the advisory feeds say of a server version: its packages' advisories, read by the
policy's trust keys (`malicious`, `severity`, `advisory`) and by `explain`.

A version's packages are read from its server JSON when a rule first asks (only versions with
a package of a type OSV covers are read), and each package version is looked up in the
current feed (`osv.Judge`). What a version gets:

- `malicious`: True when an advisory affecting one of its packages is known malware; None
  (unknown) when none is but some package could not be told (its type is not covered by a
  feed that loaded, or its version cannot be compared with a range); else False. A version
  with no such package (remote-only, OCI, mcpb) is False: there is nothing to know.
- `severity`: the highest CVSS rating among those advisories ("none" to "critical"); None
  when none affects it or none has a score (`unrated` says whether one has none).
- `advisories`: every advisory affecting one of its packages.

`Trust` is owned by a builder: `use` sets the feed at the start of each build; what it learns
is kept while the feed does not change.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.osv import SEVERITIES, Advisories, Advisory, Finding, Judge
from gateway.registries import ECOSYSTEMS
from gateway.served import Mark

if TYPE_CHECKING:
    from gateway.entry import Entry

log = logging.getLogger("gateway.trust")  # the core imports no asyncio (structlog does)
OSV_TYPES = frozenset(name for name, e in ECOSYSTEMS.items() if e.osv is not None)
_COMPARATOR = re.compile(r"(>=|<=|>|<)?(.+)")


@dataclass(frozen=True, slots=True)
class PackageTrust:
    registry_type: str
    identifier: str
    version: str | None  # None: the package names none (its tool installs the newest)
    finding: Finding


@dataclass(frozen=True, slots=True)
class VersionTrust:
    """What the feeds say of one server version (see the module's docstring)."""

    malicious: bool | None
    severity: str | None
    unrated: bool  # an advisory affecting it has no CVSS score
    advisories: tuple[Advisory, ...]
    packages: tuple[PackageTrust, ...]

    def reasons(self) -> list[str]:
        """The advisories, as a reader wants them named: malware first."""
        ordered = sorted(self.advisories, key=lambda a: (not a.malicious, a.id))
        return [f"{a.id}{f' ({a.severity})' if a.severity else ''}" for a in ordered]


NOTHING = VersionTrust(False, None, False, (), ())


def _packages(entry: Entry) -> list[tuple[str, str, str | None]]:
    """(type, identifier, version) of each package of a type OSV covers. A package that names
    no version as a string has None: its tool installs the newest, whatever the server's own
    version says."""
    try:
        server = orjson.loads(entry.server_json)
    except orjson.JSONDecodeError:  # an entry's bytes were parsed when it was made
        return []
    found = []
    for package in server.get("packages") or () if isinstance(server, dict) else ():
        if not isinstance(package, dict):
            continue
        kind, ident, version = (package.get(k) for k in ("registryType", "identifier", "version"))
        if kind in OSV_TYPES and isinstance(ident, str):
            found.append((kind, ident, version if isinstance(version, str) and version else None))
    return found


UNKNOWN = VersionTrust(None, None, False, (), ())


Package = tuple[str, str]  # (registryType, the name as the feed names it): what it is keyed by


def _named(packages: list[tuple[str, str, str | None]]) -> tuple[Package, ...]:
    """The packages as a feed's records name them (what a refresh compares)."""
    named: list[Package] = []
    for kind, ident, _ in packages:
        ecosystem = ECOSYSTEMS.get(kind)
        if ecosystem is not None and ecosystem.osv is not None:
            named.append((kind, ecosystem.osv_name(ident)))
    return tuple(named)


def judged(
    judge: Judge,
    entry: Entry,
    detail: bool = True,
    packages: list[tuple[str, str, str | None]] | None = None,
) -> VersionTrust:
    """What the judge's feed says of one server version (with each package's finding when
    `detail`: what explain shows; a build needs only the verdict). `packages`: the entry's,
    when already read."""
    if entry.registry_types.isdisjoint(OSV_TYPES):
        return NOTHING
    findings = []
    advisories: list[Advisory] = []
    unknown = False
    for kind, ident, version in _packages(entry) if packages is None else packages:
        finding = judge.finding(kind, ident, version)
        if finding is None:
            continue
        if detail:
            findings.append(PackageTrust(kind, ident, version, finding))
        if finding.state == "unknown":
            unknown = True
        for advisory in finding.advisories:
            if advisory not in advisories:
                advisories.append(advisory)
    if not advisories and not detail:
        return UNKNOWN if unknown else NOTHING  # most versions: shared answers
    malicious = True if any(a.malicious for a in advisories) else None if unknown else False
    rated = [SEVERITIES.index(a.severity) for a in advisories if a.severity is not None]
    severity = SEVERITIES[max(rated)] if rated else None
    unrated = any(a.severity is None for a in advisories)
    return VersionTrust(malicious, severity, unrated, tuple(advisories), tuple(findings))


class Trust:
    """The current feed's view of each version, remembered while the feed stays the same: a
    full rebuild (a policy change) then reads no version's packages again.

    What is remembered holds the entries it was worked out for (so that an id is never
    another entry's); `prune` lets go of those no upstream serves any more. Versions with no
    package of a type OSV covers are not remembered: their answer needs no reading.
    """

    def __init__(self, detail: bool = False) -> None:
        self.detail = detail  # each package's finding too (for explain)
        self._judge = Judge(None)
        self._facts: dict[int, VersionTrust] = {}
        self._held: list[Entry] = []
        # each held entry's packages as feeds name them, by id (what a refresh compares)
        self._named: dict[int, tuple[Package, ...]] = {}
        self._shared: dict[tuple[Package, ...], tuple[Package, ...]] = {}  # one tuple per value
        self._last_entry: Entry | None = None
        self._last_facts = NOTHING
        self._marks: dict[tuple[int, frozenset[str]], Mark] = {}

    @property
    def advisories(self) -> Advisories | None:
        return self._judge.advisories

    def use(self, advisories: Advisories | None) -> None:
        """The feed this build decides with (None: no feed has loaded)."""
        if advisories is not self._judge.advisories:
            self._judge = Judge(advisories)
            self._facts, self._held, self._named, self._shared = {}, [], {}, {}
            self._last_entry, self._last_facts = None, NOTHING
            self._marks = {}

    def refresh(self, advisories: Advisories | None) -> set[str] | None:
        """Use a new feed, keeping what was worked out of every version none of whose
        packages' records changed. The names of the versions it may say otherwise of, or None
        when it may say otherwise of any (no feed before or now, other types or feeds)."""
        before = self._judge.advisories
        if advisories is before:
            return set()
        if (before is None or advisories is None or before.covers != advisories.covers
                or before.feeds != advisories.feeds):  # fmt: skip
            self.use(advisories)
            return None
        old, new = before.packages, advisories.packages
        changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
        self._judge = Judge(advisories)
        self._last_entry, self._last_facts = None, NOTHING
        self._marks = {}
        names: set[str] = set()
        if changed:
            held: list[Entry] = []
            for entry in self._held:
                known = self._named.get(id(entry))
                if known is not None and changed.isdisjoint(known):
                    held.append(entry)
                else:  # its packages' records changed (or what they are is not known)
                    self._facts.pop(id(entry), None)
                    self._named.pop(id(entry), None)
                    names.add(entry.name)
            self._held = held
        return names

    def of(self, entry: Entry) -> VersionTrust:
        if self._last_entry is entry:  # the views decide each entry in turn
            return self._last_facts
        if entry.registry_types.isdisjoint(OSV_TYPES):
            facts = NOTHING
        else:
            known = self._facts.get(id(entry))
            if known is None:
                packages = _packages(entry)
                try:
                    made = judged(self._judge, entry, self.detail, packages)
                except Exception:  # never a reason for a build to fail: it cannot be told
                    log.exception("advisory_judgement_failed: %s %s", entry.name, entry.version)
                    made = UNKNOWN
                known = self._facts[id(entry)] = made
                self._held.append(entry)
                named = _named(packages)
                self._named[id(entry)] = self._shared.setdefault(named, named)
            facts = known
        self._last_entry, self._last_facts = entry, facts
        return facts

    def mark(self, entry: Entry) -> Mark | None:
        """What the served entry says of its advisories (None: it has no package a feed
        could speak for). One tuple per distinct answer, shared by the entries that have it."""
        if entry.registry_types.isdisjoint(OSV_TYPES):
            return None
        facts = self.of(entry)
        key = (id(facts), entry.registry_types)  # facts stay alive while remembered here
        made = self._marks.get(key)
        if made is None:
            made = self._marks[key] = self._made_mark(facts, entry.registry_types)
        return made

    def _made_mark(self, facts: VersionTrust, types: frozenset[str]) -> Mark:
        advisories = self._judge.advisories
        feeds: tuple[str, ...] = ()
        if advisories is not None:
            named = (name for kind in sorted(types & advisories.covers)
                     for name in advisories.feeds.get(kind, ()))  # fmt: skip
            feeds = tuple(dict.fromkeys(named))
        state = (
            "present" if facts.advisories else "absent" if facts.malicious is False else "unknown"
        )
        return (state, facts.malicious, facts.severity, tuple(a.id for a in facts.advisories),
                feeds)  # fmt: skip

    def prune(self, live: set[int]) -> None:
        """Forget the versions whose ids are not in `live` (no upstream serves them now)."""
        held = [entry for entry in self._held if id(entry) in live]
        self._facts = {id(entry): self._facts[id(entry)] for entry in held}
        self._named = {id(e): self._named[id(e)] for e in held if id(e) in self._named}
        self._shared = {known: known for known in self._named.values()}
        self._held = held
        self._last_entry, self._last_facts = None, NOTHING
        self._marks = {}


# -- the policy's trust checks ----------------------------------------------------------------

TrustCheck = Callable[[VersionTrust], bool]


def malicious_check(wanted: bool | str) -> TrustCheck:
    target = None if wanted == "unknown" else wanted
    return lambda facts: facts.malicious is target


def severity_check(values: Sequence[str]) -> TrustCheck:
    """Any of the values: a rating, a comparison with one (on the highest rating), or
    `unknown` (an advisory without a score)."""
    tests: list[Callable[[VersionTrust], bool]] = []
    for value in values:
        if value == "unknown":
            tests.append(lambda facts: facts.unrated)
            continue
        match = _COMPARATOR.fullmatch(value)
        assert match is not None  # the config's own pattern
        op, rank = match.group(1) or "==", SEVERITIES.index(match.group(2))
        compare: Callable[[int, int], bool] = {
            ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            "<": lambda a, b: a < b, "==": lambda a, b: a == b,
        }[op]  # fmt: skip

        def test(facts: VersionTrust, compare: Any = compare, rank: int = rank) -> bool:
            return facts.severity is not None and compare(SEVERITIES.index(facts.severity), rank)

        tests.append(test)
    if len(tests) == 1:  # the usual rule: one value, asked of most versions
        return tests[0]
    return lambda facts: any(test(facts) for test in tests)


def advisory_check(globs: Sequence[str]) -> TrustCheck:
    """Any advisory affecting the version whose id or an alias matches a glob (any case)."""
    pattern = re.compile("|".join(fnmatch.translate(glob.upper()) for glob in globs))
    return lambda facts: any(
        pattern.match(name.upper()) is not None
        for advisory in facts.advisories
        for name in (advisory.id, *advisory.aliases)
    )
