"""One view's decisions in one build, server by server, and what a build learns across its
views: hidden versions by reason, versions held back until they come of age, mirror checks
to run, packages verified, and signals (see `build.Admitter`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.catalog import Origin
from gateway.entry import Entry
from gateway.registries.base import Check
from gateway.shaping import Lookup
from gateway.signals import SIGNALS
from gateway.view import Admission, Decision, ViewPolicy


@dataclass(slots=True)
class Totals:
    """What one build learns across its views."""

    hidden: dict[str, dict[str, int]] = field(default_factory=dict)  # view -> reason -> count
    held: list[datetime] = field(default_factory=list)
    pending: set[Check] = field(default_factory=set)
    verification: dict[str, int] = field(default_factory=dict)
    signals: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():  # most servers hide nothing: no loop at all
        into[key] = into.get(key, 0) + count


_NONE: dict[str, int] = {}


class ViewAdmitter:
    """One view's decisions in one build, server by server (see `catalog.Admitter`)."""

    def __init__(
        self,
        policy: ViewPolicy,
        origins: dict[str, Origin],
        now: datetime,
        lookup: Lookup,
        totals: Totals,
    ) -> None:
        self.policy = policy
        self.origins = origins
        self.now = now
        self.lookup = lookup
        self.totals = totals
        self.hidden: dict[str, int] = {}
        # Items that waited on a clock or on mirror answers are decided again every build.
        self._keepable = policy.keeps
        self._reusable = True
        self._tally: dict[str, int] = {}
        self._verified: dict[str, int] = {}
        self._states: dict[tuple[str | None, ...], int] = {}  # served versions by states
        self._unsigned = 0  # served versions with no signed package

    def begin(self) -> None:
        self._reusable = self._keepable
        self._tally = {}
        self._verified = {}

    def __call__(self, upstream: str, entry: Entry) -> Admission | None:
        if self.origins[upstream].hidden:
            self._tally["stale"] = self._tally.get("stale", 0) + 1
            self._reusable = False
            return None
        decision = self.policy.admit(upstream, entry, self.now, self.lookup)
        if not isinstance(decision, Decision):
            if self.policy.signing:
                self._signed(entry)
            return decision  # served, its rewrite made when first written
        if decision.pending:
            self.totals.pending.update(decision.pending)
        elif not decision.served and self.policy.read_of is entry:  # hidden by what it read
            self.totals.pending.update(self.policy.signal_pending(entry))
        if not decision.served:
            self._tally[decision.reason] = self._tally.get(decision.reason, 0) + 1
            if decision.held_until is not None:
                self.totals.held.append(decision.held_until)
                self._reusable = False
            return None
        if self.policy.signing:
            self._count(decision.signals)
        for package in decision.packages:
            if "verification" in package:
                result = package["verification"]
                self._verified[result] = self._verified.get(result, 0) + 1
        assert decision.server_json is not None
        return decision.server_json, decision.rules, decision.packages_json

    def _signed(self, entry: Entry) -> None:
        """Count a served entry's signals, and what its mirrors must still be asked."""
        policy = self.policy
        if policy.signed_types.isdisjoint(entry.registry_types):
            self._unsigned += 1  # nothing to sign: absent (counted at the end)
            return
        if policy.rewriter.as_received(entry):
            self._count(policy.states(entry))  # nothing asked
            return
        facts = policy.signal_facts(entry)
        if facts.pending:
            self.totals.pending.update(facts.pending)
        self._count(facts.states)

    def _count(self, states: tuple[str | None, ...]) -> None:
        self._states[states] = self._states.get(states, 0) + 1

    @property
    def signals(self) -> dict[tuple[str, str], int]:
        """Served versions by (signal, state)."""
        counts: dict[tuple[str, str], int] = {}
        states_of = dict(self._states)
        if self._unsigned:
            nothing = self.policy.states_of_unsigned
            states_of[nothing] = states_of.get(nothing, 0) + self._unsigned
        for states, count in states_of.items():
            for signal, state in zip(SIGNALS, states, strict=True):
                if state is not None:
                    counts[(signal, state)] = counts.get((signal, state), 0) + count
        return counts

    def end(self) -> tuple[bool, dict[str, int], dict[str, int]]:
        self.tally(self._tally, self._verified)
        # Most servers hide nothing: their kept figures share one empty dict (never written).
        return self._reusable, self._tally or _NONE, self._verified or _NONE

    def tally(self, hidden: dict[str, int], verification: dict[str, int]) -> None:
        if hidden:  # most servers hide nothing and have no mirror checks
            _add(self.hidden, hidden)
        if verification:
            _add(self.totals.verification, verification)
