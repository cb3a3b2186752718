"""Allow/deny policy: rules as data, compiled once per snapshot build, decided per entry.

`policy.yaml` applies to every view; `views/<view>.yaml` can only narrow it. In each, the first
matching rule decides, else `default`; `min_age` holds young versions back; `packages.types`
removes package entries of other types. Checks read the facts an entry carries (registry types,
transports, remote hosts), and name globs are remembered per name: a catalog has about three
versions per server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import translate

from gateway.config import Match, PolicySettings
from gateway.entry import Entry
from gateway.semver import VersionRange


def _glob(patterns: Sequence[str]) -> Callable[[str], bool]:
    compiled = re.compile("|".join(f"(?:{translate(p)})" for p in patterns))
    seen: dict[str, bool] = {}

    def matches(text: str) -> bool:
        found = seen.get(text)
        if found is None:
            found = seen[text] = compiled.match(text) is not None
        return found

    return matches


Check = Callable[[str, Entry], bool]


def _compile_match(match: Match) -> list[Check]:
    checks: list[Check] = []
    if match.name:
        name_matches = _glob(match.name)
        checks.append(lambda _, entry: name_matches(entry.name))
    if match.upstream:
        upstreams = frozenset(match.upstream)
        checks.append(lambda upstream, _: upstream in upstreams)
    if match.status:
        statuses = frozenset(match.status)
        checks.append(lambda _, entry: entry.status in statuses)
    if match.version:
        ranges = [VersionRange(text) for text in match.version]
        checks.append(lambda _, entry: any(r.matches(entry.version) for r in ranges))
    if match.registry_type:
        types = frozenset(match.registry_type)
        checks.append(lambda _, entry: not types.isdisjoint(entry.registry_types))
    if match.transport:
        wanted = frozenset(match.transport)
        checks.append(lambda _, entry: not wanted.isdisjoint(entry.transports))
    if match.remote_host:
        host_matches = _glob(match.remote_host)
        checks.append(lambda _, entry: any(host_matches(h) for h in entry.remote_hosts))
    return checks


@dataclass(frozen=True, slots=True)
class Verdict:
    """One policy file's answer for one entry."""

    allowed: bool
    rule: str  # "policy.yaml rules[3]" or "policy.yaml default"
    rules: tuple[str, ...] = ()  # (rule,): what a view's decision lists, made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", (self.rule,))


class Policy:
    """A compiled policy file: rules, cooldown and package types, ready to decide.

    Verdicts are remembered per entry, so views sharing policy.yaml decide it once.
    """

    def __init__(self, settings: PolicySettings, source: str) -> None:
        self.settings = settings
        self.source = source
        self.min_age = timedelta(seconds=settings.min_age) if settings.min_age is not None else None
        self.types = frozenset(settings.packages.types) if settings.packages.types else None
        self._rules: list[tuple[Verdict, list[Check]]] = []
        for index, rule in enumerate(settings.rules):
            allow = rule.allow is not None
            match = rule.allow if rule.allow is not None else rule.deny
            assert match is not None
            verdict = Verdict(allow, f"{source} rules[{index}]")
            self._rules.append((verdict, _compile_match(match)))
        self._default = Verdict(settings.default == "allow", f"{source} default")
        # id(entry) -> (entry, upstream, verdict): the entry is kept, so its id is not reused
        self._memo: dict[int, tuple[Entry, str, Verdict]] = {}

    def verdict(self, upstream: str, entry: Entry) -> Verdict:
        known = self._memo.get(id(entry))
        if known is not None and known[0] is entry and known[1] == upstream:
            return known[2]
        decided = self._default
        for verdict, checks in self._rules:
            for check in checks:
                if not check(upstream, entry):
                    break
            else:
                decided = verdict
                break
        self._memo[id(entry)] = (entry, upstream, decided)
        return decided

    def forget(self, live: set[int]) -> None:
        """Verdicts are remembered for one build (views share them); the next starts afresh."""
        self._memo = {}

    def held_until(self, entry: Entry) -> datetime | None:
        if self.min_age is None:
            return None
        return entry.published_at + self.min_age
