"""Allow/deny policy: rules as data, compiled once per snapshot build, decided per entry.

`policy.yaml` applies to every view; `views/<view>.yaml` can only narrow it. In each, the first
matching rule decides, else `default`; `min_age` holds young versions back; `packages.types`
removes package entries of other types. Checks read the facts an entry carries (registry types,
transports, remote hosts); name globs are matched once per name identity (see `names`), so
`deny: {name: "io.github.evil/*"}` also hides `IO.GITHUB.EVIL/x` and every other look-alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import translate
from typing import Protocol

from gateway.config import Match, Rules
from gateway.entry import Entry
from gateway.names import compile_globs, glob_pattern
from gateway.pacing import Pacer
from gateway.semver import VersionRange
from gateway.signals import SIGNABLE, SIGNALS, State
from gateway.stepping import paced
from gateway.trust import (
    NOTHING,
    OSV_TYPES,
    Trust,
    TrustCheck,
    advisory_check,
    malicious_check,
    severity_check,
)


def _pattern(patterns: Sequence[str]) -> re.Pattern[str]:
    """Host globs (remote_host): host names compare case-insensitively."""
    return re.compile("|".join(f"(?:{translate(p.lower())})" for p in patterns))


def _lines_containing(text: str, literal: str) -> set[str]:
    """The lines of `text` that contain `literal`."""
    lines: set[str] = set()
    at = text.find(literal)
    while at >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        lines.add(text[start:end])
        at = text.find(literal, end)
    return lines


_SEEN_MAX = 65536  # remembered host matches per glob


def _glob(patterns: Sequence[str]) -> Callable[[str], bool]:
    compiled = _pattern(patterns)
    seen: dict[str, bool] = {}

    def matches(text: str) -> bool:
        found = seen.get(text)
        if found is None:
            if len(seen) >= _SEEN_MAX:  # hosts come from upstream data: bounded
                seen.clear()
            found = seen[text] = compiled.match(text.lower()) is not None
        return found

    return matches


Check = Callable[[str, Entry], bool]


def _trust_checks(match: Match, trust: Trust) -> list[Check]:
    """The match's trust keys, on what the feeds say of the entry (asked once per build)."""
    tests: list[TrustCheck] = []
    if match.malicious is not None:
        tests.append(malicious_check(match.malicious))
    if match.severity:
        tests.append(severity_check(match.severity))
    if match.advisory:
        tests.append(advisory_check(match.advisory))
    return [_trust_check(test, trust) for test in tests]


def _trust_check(test: TrustCheck, trust: Trust) -> Check:
    nothing = test(NOTHING)  # a version with no package OSV covers: the same answer for all

    def check(_: str, entry: Entry) -> bool:
        if entry.registry_types.isdisjoint(OSV_TYPES):
            return nothing
        return test(trust.of(entry))

    return check


class SignalSource(Protocol):
    """What a view says of an entry's signals at its own mirrors (see `view.ViewPolicy`)."""

    signed_types: frozenset[str]  # the package types some signal is collected for

    def states(self, entry: Entry) -> tuple[State | None, ...]: ...

    def signal_key(self, entry: Entry) -> object:
        """Equal for views whose mirrors give the entry the same signals."""


def _signal_checks(match: Match, policy: Policy) -> list[Check]:
    """The match's signal keys, on the states the deciding view's mirrors give (a signal not
    collected, or a policy with no view: `unknown`)."""
    checks: list[Check] = []
    for index, key in enumerate(SIGNALS):
        wanted = getattr(match, key)
        if not wanted:
            continue
        allowed = frozenset(wanted)
        nothing = "absent" in allowed  # a version with no signed package: absent in every view

        def check(
            _: str,
            entry: Entry,
            index: int = index,
            allowed: frozenset[str] = allowed,
            nothing: bool = nothing,
        ) -> bool:
            source = policy.signal_source
            signed = source.signed_types if source is not None else SIGNABLE
            if signed.isdisjoint(entry.registry_types):
                return nothing
            policy.read_signals = True
            state = source.states(entry)[index] if source is not None else None
            return (state or "unknown") in allowed

        checks.append(check)
    return checks


def _compile_match(match: Match, trust: Trust | None, policy: Policy) -> list[Check]:
    """The checks of a match other than its name globs (see `Policy._candidates`)."""
    checks: list[Check] = []
    if match.upstream:
        upstreams = frozenset(match.upstream)
        checks.append(lambda upstream, _: upstream in upstreams)
    if match.status:
        statuses = frozenset(match.status)
        checks.append(lambda _, entry: entry.status in statuses)
    if match.registry_type:
        types = frozenset(match.registry_type)
        checks.append(lambda _, entry: not types.isdisjoint(entry.registry_types))
    if match.transport:
        wanted = frozenset(match.transport)
        checks.append(lambda _, entry: not wanted.isdisjoint(entry.transports))
    if match.remote_host:
        checks.append(_any_host(_glob(match.remote_host)))
    if match.version:  # then: it parses the version
        checks.append(_any_version([VersionRange(text) for text in match.version]))
    if match.trust_keys():  # last: it reads the packages
        checks.extend(_trust_checks(match, trust if trust is not None else Trust()))
    if match.signal_keys():  # it shapes the entry in the view
        checks.extend(_signal_checks(match, policy))
    return checks


# Loops, not any() over a generator: these run for most entries, most with no remote at all.


def _any_host(matches: Callable[[str], bool]) -> Check:
    def check(_: str, entry: Entry) -> bool:
        for host in entry.remote_hosts:  # noqa: SIM110 (see above)
            if matches(host):
                return True
        return False

    return check


def _any_version(ranges: list[VersionRange]) -> Check:
    def check(_: str, entry: Entry) -> bool:
        for allowed in ranges:  # noqa: SIM110 (see above)
            if allowed.matches(entry.version):
                return True
        return False

    return check


@dataclass(frozen=True, slots=True)
class Verdict:
    """One policy file's answer for one entry."""

    allowed: bool
    rule: str  # "policy.yaml rules[3]" or "policy.yaml default"
    rules: tuple[str, ...] = ()  # (rule,): what a view's decision lists, made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", (self.rule,))


Candidate = tuple["Verdict", tuple[Check, ...]]


class Policy:
    """A compiled policy file: rules, cooldown and package types, ready to decide.

    Name globs are matched once per name identity: each identity remembers the rules that
    can apply to it (most, only the few rules without a name), so deciding an entry runs
    those rules' other checks and nothing else.
    """

    def __init__(self, settings: Rules, source: str, trust: Trust | None = None) -> None:
        self.settings = settings
        self.source = source
        self.trusting = any(
            (rule.allow or rule.deny or Match()).trust_keys() for rule in settings.rules
        )  # it reads trust signals: a new feed is a reason to decide anew
        # It reads the signals a view's mirrors give: the deciding view sets itself as source.
        self.signing = any(
            (rule.allow or rule.deny or Match()).signal_keys() for rule in settings.rules
        )
        self.signal_source: SignalSource | None = None
        self.read_signals = False  # the last decision read them (then they are remembered)
        self.min_age = timedelta(seconds=settings.min_age) if settings.min_age is not None else None
        self.types = frozenset(settings.packages.types) if settings.packages.types else None
        self._rules: list[tuple[re.Pattern[str] | None, Candidate]] = []
        self._literals: list[tuple[int, list[str]]] = []  # rules with name globs
        for index, rule in enumerate(settings.rules):
            allow = rule.allow is not None
            match = rule.allow if rule.allow is not None else rule.deny
            assert match is not None
            verdict = Verdict(allow, f"{source} rules[{index}]")
            name = compile_globs(match.name) if match.name else None
            self._rules.append((name, (verdict, tuple(_compile_match(match, trust, self)))))
            if match.name:
                self._literals.append((index, [glob_pattern(glob)[1] for glob in match.name]))
        self._unnamed = tuple(i for i, (name, _) in enumerate(self._rules) if name is None)
        # Without name globs every rule can apply to every name: nothing to remember per name.
        self._every = None if self._literals else tuple(candidate for _, candidate in self._rules)
        self._default = Verdict(settings.default == "allow", f"{source} default")
        self._by_name: dict[str, tuple[Candidate, ...]] = {}
        self._interned: dict[tuple[int, ...], tuple[Candidate, ...]] = {}
        # The last answer: views decide each entry in turn, so policy.yaml, which every view
        # applies, is asked the same question several times in a row.
        self._last: tuple[Entry | None, str, object, Verdict] = (None, "", None, self._default)

    def _candidates(self, identity: str) -> tuple[Candidate, ...]:
        indices = tuple(
            index
            for index, (pattern, _) in enumerate(self._rules)
            if pattern is None or pattern.fullmatch(identity) is not None
        )
        found = self._by_name[identity] = self._shared(indices)
        return found

    def _shared(self, indices: tuple[int, ...]) -> tuple[Candidate, ...]:
        found = self._interned.get(indices)
        if found is None:  # names matching the same rules share one tuple
            found = self._interned[indices] = tuple(self._rules[i][1] for i in indices)
        return found

    def prepare(self, names: list[str]) -> None:
        """Match the name globs against every identity (`names`) not seen yet, all at once.
        A glob's identities contain its longest literal run: that is searched for in the
        identities joined by newlines (they hold none), and only those found are matched one
        by one."""
        if self._every is not None:
            return
        new = [name for name in names if name not in self._by_name]
        if not new:
            return
        matched: dict[str, list[int]] = {}
        pacer = Pacer()
        if self._literals:
            text = "\n".join(new)
            for index, literals in self._literals:
                pattern = self._rules[index][0]
                assert pattern is not None
                found: set[str] = set()
                for literal in literals:
                    pacer.tick()  # a search of every name takes a millisecond or so
                    found |= _lines_containing(text, literal) if literal else set(new)
                for name in paced(found):
                    if pattern.fullmatch(name) is not None:
                        matched.setdefault(name, []).append(index)
        unnamed = self._shared(self._unnamed)
        for name in paced(new):
            named = matched.get(name)
            self._by_name[name] = (
                unnamed if named is None else self._shared(tuple(sorted((*self._unnamed, *named))))
            )

    def verdict(self, upstream: str, entry: Entry) -> Verdict:
        last, last_upstream, last_key, known = self._last
        source = self.signal_source  # set by the view deciding (its mirrors' signals)
        # the same, unless it read signals and this view's mirrors give others
        if (
            last is entry
            and last_upstream == upstream
            and (last_key is None or (source is not None and source.signal_key(entry) == last_key))
        ):
            return known  # (the view read the signals it was decided on: `signal_key`)
        self.read_signals = False
        candidates = self._every if self._every is not None else self._by_name.get(entry.identity)
        if candidates is None:
            candidates = self._candidates(entry.identity)
        decided = self._default
        for verdict, checks in candidates:
            for check in checks:
                if not check(upstream, entry):
                    break
            else:
                decided = verdict
                break
        key = source.signal_key(entry) if self.read_signals and source is not None else None
        self._last = (entry, upstream, key, decided)
        return decided

    def anew(self) -> None:
        """Forget the last answer (the trust signals it read have changed)."""
        self._last = (None, "", None, self._default)

    def forget(self, live_names: Container[str]) -> None:
        """Forget the identities no upstream serves any more."""
        for name in [name for name in self._by_name if name not in live_names]:
            del self._by_name[name]

    def held_until(self, entry: Entry) -> datetime | None:
        if self.min_age is None:
            return None
        return entry.published_at + self.min_age
