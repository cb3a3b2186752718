"""A view's decision for one entry: policy.yaml, then the view's own file, which only narrows;
then the view's mirrors rewrite package locations, and verification results apply."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from gateway.config import DEFAULT_VIEW as DEFAULT_VIEW
from gateway.config import MirrorSettings, Rules, ViewSettings
from gateway.entry import Entry, ServerJson, json_bytes
from gateway.mirrors import Mirrors
from gateway.policy import Policy
from gateway.registries import KNOWN
from gateway.registries.base import Check
from gateway.served import CLOSE, Deferred
from gateway.shapes import Shapes
from gateway.shaping import (
    AS_RECEIVED,
    NO_FACTS,
    NOT_INSTALLABLE,
    Answered,
    Lookup,
    Rewriter,
    Shape,
    SignalFacts,
    no_lookup,
    registry_type,
)
from gateway.signals import NO_SIGNALS, NO_STATES, Signing, State
from gateway.trust import Trust


def _dump(value: object) -> object:
    """Mirror settings as JSON, for telling views' settings apart."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(type(value).__name__)


# Decisions, shapes and items are made hundreds of thousands of times per build: plain slotted
# classes (never mutated) build several times faster than frozen dataclasses.


@dataclass(slots=True)
class Decision:
    """Whether a view serves an entry, why, and the server object as it would be served."""

    served: bool
    reason: str  # served | denied | cooldown | unmirrored | missing from mirror | not installable
    rules: tuple[str, ...]  # the deciding rule of each policy file consulted, in order
    held_until: datetime | None = None
    removed_types: tuple[str, ...] = ()  # by packages.types, unmirrored or enforce
    server_json: ServerJson | None = None  # the server object as served
    packages: tuple[dict[str, Any], ...] = ()  # gateway _meta per package
    packages_json: bytes = CLOSE  # the same, as the end of the gateway's `_meta` JSON
    pending: tuple[Check, ...] = ()  # mirror checks not known yet, or out of date
    signals: tuple[State | None, ...] = NO_STATES  # each of SIGNALS (if collected)

    @property
    def server(self) -> dict[str, Any] | None:
        if self.server_json is None:
            return None
        value: dict[str, Any] = orjson.loads(json_bytes(self.server_json))
        return value


# What a view serves of an entry: the server JSON (packages possibly filtered or rewritten, or to
# be rewritten when first written), the rules that admitted it, and the end of the gateway's
# `_meta`: `}}}`, or its `packages` (the original locations and mirror checks) then `}}}`.
Admission = tuple[ServerJson | Deferred, tuple[str, ...], bytes]


_MIRRORED_KINDS = frozenset(KNOWN)  # the keys of mirrors.yaml by type
_SHAPINGS: dict[object, int] = {}  # what shapes an entry -> its number (few: views x types)


class ViewPolicy:
    """What one view applies: policy.yaml, the view's own file, and the view's mirrors.

    One decision path: `admit` is what a build asks of every entry; `decide` (what `explain`
    shows) is `admit`'s answer with the served object made and its details filled in."""

    def __init__(
        self,
        name: str,
        policies: list[Policy],
        mirrors: MirrorSettings | None = None,
        signing: Signing = NO_SIGNALS,
    ) -> None:
        self.name = name
        self.policies = policies
        self._aging = [p for p in policies if p.min_age is not None]
        types = [p.types for p in policies if p.types is not None]
        self.types: frozenset[str] | None = frozenset.intersection(*types) if types else None
        self.mirrors = Mirrors(mirrors or MirrorSettings())
        self.rewriter = Rewriter(self.types, self.mirrors, signing)
        self.verify_mode = self.mirrors.settings.verify.mode
        # signals are collected at the view's mirrors: what it serves says them, and its
        # rules may read them (with the lookup of the decision being made)
        self.signing = signing != NO_SIGNALS
        self.signed_types = signing.types
        self._lookup: Lookup = no_lookup
        self._generation: object = None
        self._now = 0.0
        self.read_of: Entry | None = None  # the last entry whose signals a rule read
        self._last_facts: tuple[Entry | None, SignalFacts] = (None, NO_FACTS)
        self._last_states: tuple[Entry | None, tuple[State | None, ...]] = (None, ())
        # the signals of a version with no signed package: nothing to sign, in every view
        self.states_of_unsigned: tuple[State | None, ...] = tuple(
            "absent" if on else None for on in signing.flags
        )
        self._signing_policies = [policy for policy in policies if policy.signing]
        # Whether an entry's rewrite can wait until it is written (see served.Deferred):
        # nothing a build counts or hides depends on it (signals are read on their own).
        self._defers = self.verify_mode == "off" and self.mirrors.settings.unmirrored == "keep"
        self.shapes = Shapes()  # replaced by one store shared by every view of a config
        self._keys: dict[frozenset[str], int] = {}  # registry types -> shaping key

    @property
    def keeps(self) -> bool:
        """Whether a server's items can be kept from one build to the next: not when they wait
        on mirror answers or signals (they are decided again every build)."""
        return self.verify_mode == "off" and not self.signing

    @classmethod
    def of(
        cls,
        name: str,
        base: Rules | Policy,
        own: ViewSettings | None,
        mirrors: MirrorSettings | None = None,
        trust: Trust | None = None,
        signing: Signing = NO_SIGNALS,
    ) -> ViewPolicy:
        policies = [base if isinstance(base, Policy) else Policy(base, "policy.yaml", trust)]
        if own is not None:
            policies.append(Policy(own, f"views/{name}.yaml", trust))
        view_mirrors = own.mirrors if own is not None else None
        settings = (mirrors or MirrorSettings()).overridden_by(view_mirrors)
        return cls(name, policies, settings, signing)

    def share(self, shapes: Shapes) -> None:
        """Keep shapes in a store shared with the config's other views."""
        self.shapes = shapes

    def _key(self, registry_types: frozenset[str]) -> int:
        """What shapes an entry with these registry types in this view: equal keys, equal
        shapes, whichever view asks."""
        key = self._keys.get(registry_types)
        if key is None:
            settings = self.mirrors.settings
            relevant = tuple(
                (kind, orjson.dumps(getattr(settings, kind), default=_dump))
                for kind in sorted(registry_types & _MIRRORED_KINDS)
            )
            described = (self.types, settings.unmirrored, settings.verify.model_dump_json(),
                         relevant)  # fmt: skip
            # one small number per distinct shaping: hashed for every entry a build decides
            key = self._keys[registry_types] = _SHAPINGS.setdefault(described, len(_SHAPINGS))
        return key

    def states(self, entry: Entry) -> tuple[State | None, ...]:
        """The entry's signals as this view serves it (for rules on `signature` and
        `provenance`): the worst of its signed packages' at the view's mirrors."""
        if not self.signing:
            return NO_STATES
        if self.signed_types.isdisjoint(entry.registry_types):  # nothing to sign, whatever the view
            return self.states_of_unsigned
        self.read_of = entry  # a rule read them: what it decided on must be asked for
        return self._states(entry)

    def _states(self, entry: Entry) -> tuple[State | None, ...]:
        last, states = self._last_states
        if last is not entry:  # its rules, policy.yaml's memo and the count ask in turn
            states = self._states_of(entry)
            self._last_states = (entry, states)
        return states

    def _states_of(self, entry: Entry) -> tuple[State | None, ...]:
        if self.rewriter.as_received(entry):  # no mirror: nothing was asked
            return tuple(self._unasked(entry, index) if on else None
                         for index, on in enumerate(self.rewriter.signing.flags))  # fmt: skip
        if self._defers:  # the rewrite waits: read the signals alone
            return self.signal_facts(entry).states
        shape = self.shape(entry, self._lookup)
        return shape.signals

    def _unasked(self, entry: Entry, index: int) -> State:
        """A signal of an entry served as received (no mirror: nothing was asked): unknown
        where a package of its types collects it, else nothing to sign."""
        of = self.rewriter.signing.of
        return "unknown" if any(of(kind)[index] for kind in entry.registry_types) else "absent"

    def signal_pending(self, entry: Entry) -> tuple[Check, ...]:
        """The mirror checks the entry's signals still wait for in this view."""
        if self.rewriter.as_received(entry):
            return ()
        if self._defers:
            return self.signal_facts(entry).pending
        return self.shape(entry, self._lookup).pending

    def signal_facts(self, entry: Entry) -> SignalFacts:
        """The entry's signals in this view, shared by views shaping it alike."""
        last, last_facts = self._last_facts
        if last is entry:  # its rules and the count ask in turn
            return last_facts
        facts = self._signal_facts(entry)
        self._last_facts = (entry, facts)
        return facts

    def _signal_facts(self, entry: Entry) -> SignalFacts:
        found = self.shapes.signals(entry)
        key = self._key(entry.registry_types)
        facts = found.get(key)
        if facts is None:
            shapes, lookup, generation = self.shapes, self._lookup, self._generation
            # One int per (entry, shaping key), not a tuple: a build keeps one per signed
            # entry and view, and lets the last build's go (addresses are below 2**48).
            slot = id(entry) ^ (key << 48)
            known = shapes.last_kept.get(slot)
            # What the last build read holds while every answer it read is the same and
            # fresh: no answer has changed since (the lookup's generation), or each is equal.
            if (
                known is not None
                and known[0] is entry
                and known[1] == key
                and self._now < known[2].until
                and (known[3] == generation or _same(known[2], lookup))
            ):
                facts = known[2]
                if generation is not None:  # the same tuple again, if nothing changed
                    shapes.kept[slot] = known if known[3] == generation else (
                        entry, key, facts, generation)  # fmt: skip
            else:
                facts = self.rewriter.signal_facts(entry, lookup)
                if generation is not None:
                    shapes.kept[slot] = (entry, key, facts, generation)
            found[key] = facts
        return facts

    def use(self, lookup: Lookup) -> None:
        """The mirror answers a build (or a command) decides with."""
        self.shapes.forget()  # found with other answers
        self._lookup, self._last_facts, self._last_states = lookup, (None, NO_FACTS), (None, ())
        self._generation = getattr(lookup, "generation", None)  # None: nothing is kept
        self._now = time.monotonic()

    def signal_key(self, entry: Entry) -> object:
        """Equal for views whose mirrors give the entry the same signals: the states."""
        if not self.signing or self.signed_types.isdisjoint(entry.registry_types):
            return None  # no signed package: the same signals in every view
        self.read_of = entry  # asked because a rule read them: they must be asked for
        return self._states(entry)

    def _rules(self, upstream: str, entry: Entry, now: datetime) -> tuple[str, ...] | Decision:
        """What the policy files say: the rules that admit the entry, or why it is hidden."""
        for policy in self._signing_policies:  # their signal rules read this view's mirrors
            policy.signal_source = self
        rules: tuple[str, ...] = ()
        for policy in self.policies:
            verdict = policy.verdict(upstream, entry)
            rules += verdict.rules
            if not verdict.allowed:
                return Decision(False, "denied", rules)
        if self._aging:
            held_until = max(p.held_until(entry) or now for p in self._aging)
            if held_until > now:
                return Decision(False, "cooldown", rules, held_until)
        return rules

    def admit(
        self, upstream: str, entry: Entry, now: datetime, lookup: Lookup = no_lookup
    ) -> Admission | Decision:
        """What the view serves of an entry: its admission (the server object, or its rewrite
        deferred until written where nothing else depends on it; the admitting rules; the
        item's end), or the decision that hides it or carries mirror checks."""
        if lookup is not self._lookup:  # a command's own answers (a build calls `use`)
            self.use(lookup)
        rules = self._rules(upstream, entry, now)
        if isinstance(rules, Decision):
            return rules
        rewriter = self.rewriter
        if rewriter.as_received(entry):  # no parsing, nothing to remember
            if entry.has_packages or entry.has_remotes:
                return entry.server_json, rules, CLOSE
            return Decision(False, "not installable", rules)
        if not self._defers:
            return _decided(rules, self.shape(entry, lookup), entry)
        if rewriter.nothing_left(entry):
            return Decision(False, "not installable", rules)  # no package of its types is left
        later = self.shapes.later(entry)
        key = self._key(entry.registry_types)
        deferred = later.get(key)
        if deferred is None:
            signed = self.signing and not self.signed_types.isdisjoint(entry.registry_types)
            made = Answered(rewriter, self.signal_facts(entry).answers) if signed else rewriter
            deferred = later[key] = Deferred(entry, made)
        return deferred, rules, b""

    def decide(
        self, upstream: str, entry: Entry, now: datetime, lookup: Lookup = no_lookup
    ) -> Decision:
        """`admit`'s answer in full: the served object made, the packages the view's types
        removed, the mirror checks."""
        admitted = self.admit(upstream, entry, now, lookup)
        if isinstance(admitted, Decision):
            if admitted.reason == "not installable" and not admitted.removed_types:
                admitted.removed_types = self._removed(entry)
            return admitted
        server, rules, _ = admitted
        if isinstance(server, Deferred):
            decided = _decided(rules, self.shape(entry, lookup), entry)
            assert isinstance(decided, Decision)
            return decided
        return Decision(True, "served", rules, None, (), server)

    def _removed(self, entry: Entry) -> tuple[str, ...]:
        packages = entry.server.get("packages")
        if self.types is None or not isinstance(packages, list):
            return ()
        return tuple(t for t in map(registry_type, packages) if t not in self.types)

    def shape(self, entry: Entry, lookup: Lookup = no_lookup) -> Shape:
        """What this view serves of an entry's server object, whatever its policy says."""
        if self.rewriter.as_received(entry):
            return AS_RECEIVED if entry.has_packages or entry.has_remotes else NOT_INSTALLABLE
        found = self.shapes.of(entry)
        key = self._key(entry.registry_types)
        shape = found.get(key)
        if shape is None:
            shape = found[key] = self.rewriter.shape(entry, lookup)
        return shape


def _same(facts: SignalFacts, lookup: Lookup) -> bool:
    """Whether the mirror answers a view's signal facts were read from are still the ones
    the lookup gives (checks not answered then are asked again)."""
    for check, verdict in facts.answers:
        if verdict is None or lookup(check) != verdict:
            return False
    return True


def _decided(rules: tuple[str, ...], shape: Shape, entry: Entry) -> Decision:
    if shape.server_json is None:
        return Decision(
            False, shape.reason, rules, None, shape.removed, None, (), CLOSE, shape.pending
        )
    return Decision(
        True, "served", rules, None, shape.removed, shape.server_json or entry.server_json,
        shape.packages, shape.packages_json, shape.pending, shape.signals,
    )  # fmt: skip
