"""What the gateway serves at one moment: merge the upstreams, decide and build every view.

Pure and synchronous (the refresher runs it off the event loop); the result is immutable and
replaces the previous snapshot with a single assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.build import Order, PartCache, ServerItems, build_views, order_of
from gateway.catalog import Origin, ViewCatalog
from gateway.config import DEFAULT_VIEW, FederationConfig
from gateway.entry import Entry
from gateway.merge import Merged, Source, merge
from gateway.names import identity
from gateway.osv import Advisories
from gateway.pacing import Pacer, collector_paused
from gateway.policy import Policy
from gateway.registries.base import Check
from gateway.search import SearchIndex
from gateway.shapes import Shapes
from gateway.shaping import Lookup, no_lookup
from gateway.signals import SIGNALS
from gateway.stepping import paced
from gateway.trust import Trust
from gateway.view import Admission, Decision, ViewPolicy


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the gateway serves right now: one catalog per view."""

    views: dict[str, ViewCatalog]
    built_at: datetime
    hidden: dict[str, dict[str, int]] = field(default_factory=dict)  # view -> reason -> count
    next_change: datetime | None = None  # when the first held-back version comes of age
    pending: frozenset[Check] = frozenset()  # mirror checks to run, then rebuild
    stale: tuple[str, ...] = ()  # upstreams whose syncs are failing
    verification: dict[str, int] = field(default_factory=dict)  # result -> packages
    # view -> (signal, state) -> served versions (views that collect signals)
    signals: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)


def view_policies(config: FederationConfig, trust: Trust | None = None) -> list[ViewPolicy]:
    """The default view (policy.yaml alone), then each configured view; their trust keys
    read what `trust` says (its feed is set per build)."""
    base = Policy(config.policy, "policy.yaml", trust)  # decided once per entry for every view
    signing = config.trust.signing()
    policies = [ViewPolicy.of(DEFAULT_VIEW, base, None, config.mirrors, trust, signing)]
    for name, settings in config.views.items():
        policies.append(ViewPolicy.of(name, base, settings, config.mirrors, trust, signing))
    shapes = Shapes()  # views that shape an entry alike share its shape
    for policy in policies:
        policy.share(shapes)
    return policies


@dataclass(slots=True)
class _Totals:
    """What one build learns across its views."""

    hidden: dict[str, dict[str, int]] = field(default_factory=dict)  # view -> reason -> count
    held: list[datetime] = field(default_factory=list)
    pending: set[Check] = field(default_factory=set)
    verification: dict[str, int] = field(default_factory=dict)
    signals: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)


def _view_inputs(config: FederationConfig, view: str) -> tuple[object, ...]:
    """Everything in a config that a view's items depend on (upstream data aside)."""
    own = config.views.get(view)
    exists = view == DEFAULT_VIEW or own is not None
    marks = bool(config.trust.osv)  # the served entries say what the feeds say, or not
    return (exists, config.policy, own, config.mirrors, marks, config.trust.npm, config.trust.pypi)


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():  # most servers hide nothing: no loop at all
        into[key] = into.get(key, 0) + count


_NONE: dict[str, int] = {}


class _Admitter:
    """One view's decisions in one build, server by server (see `catalog.Admitter`)."""

    def __init__(
        self,
        policy: ViewPolicy,
        origins: dict[str, Origin],
        now: datetime,
        lookup: Lookup,
        totals: _Totals,
    ) -> None:
        self.policy = policy
        self.origins = origins
        self.now = now
        self.lookup = lookup
        self.totals = totals
        self.hidden: dict[str, int] = {}
        # Items that waited on a clock or on mirror answers are decided again every build.
        self._keepable = policy.verify_mode == "off" and not policy.signing
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


# Forgetting names no feed holds any more walks every policy's table: not after every build.
_FORGET_EVERY = 8


class Builder:
    """Builds snapshots for one config, remembering work between builds.

    Each view keeps the items of every server whose entries did not change, and the rules
    matching a name are remembered, so a rebuild after a sync that changed 1 % of the entries
    redoes about 1 % of the work. A feed keeps the same Entry object while its data is
    unchanged, which is what kept items are recognised by; names gone from every feed are
    forgotten every few builds.
    """

    def __init__(self, config: FederationConfig, trust: Trust | None = None) -> None:
        self.config = config
        self.trust = trust or Trust()  # what a predecessor learnt of the feed, kept
        self.policies = view_policies(config, self.trust)
        self.parts = PartCache(config.gateway.meta_namespace)
        self._names: list[str] | None = None
        self._name_set: set[str] = set()
        self._identities: set[str] = set()  # of the names
        self._prepared: list[str] | None = None  # the names the policies have matched
        self._kept: dict[str, dict[str, ServerItems]] = {}  # view -> server -> its items
        self._builds = 0
        self.search = SearchIndex()  # brought up to date after each swap (see `index`)
        self._last: tuple[int, Order] | None = None  # the last build's token, and servers

    def build(
        self,
        sources: list[Source],
        origins: dict[str, Origin],
        now: datetime | None = None,
        lookup: Lookup = no_lookup,
        advisories: Advisories | None = None,
    ) -> Snapshot:
        """A snapshot of these upstreams' data; trust rules read `advisories` (the feeds')."""
        if advisories is not self.trust.advisories:
            self._forget_trusting()  # every version such a view serves is decided anew
            if self.config.trust.osv:  # and every served entry says what the feeds say
                self._kept.clear()
        self.trust.use(advisories)
        with collector_paused():
            return self._build(sources, origins, now or datetime.now(UTC), lookup)

    def _build(
        self, sources: list[Source], origins: dict[str, Origin], now: datetime, lookup: Lookup
    ) -> Snapshot:
        merged: Merged = merge(sources)  # hidden upstreams keep their names: no public fallback
        # One sort for every view: names, then each server's versions, as byte strings.
        if self._names is None or merged.servers.keys() != self._name_set:
            self._names = sorted(merged.servers)  # only when the set of names changed
            self._name_set = set(self._names)
            self._identities = set(merged.owners)
        if self._prepared is not self._names:  # new names, or this builder's first build
            identities = list(self._identities)
            for policy in self._files():
                policy.prepare(identities)
            self._prepared = self._names
        order = order_of(merged, self._names)
        views: dict[str, ViewCatalog] = {}
        totals = _Totals()
        self.parts.new_build()
        for view_policy in self.policies:
            view_policy.use(lookup)
        if self.policies:
            self.policies[0].shapes.new_build()  # one store for every view
        admitters = [_Admitter(policy, origins, now, lookup, totals) for policy in self.policies]
        built = build_views(
            order,
            origins,
            [(a.policy.name, a, self._kept.get(a.policy.name)) for a in admitters],
            self.parts,
            self.search,
            token := self.search.next_token(),
            self.trust.mark if self.config.trust.osv else None,
        )
        for admitter, (catalog, keep) in zip(admitters, built, strict=True):
            name = admitter.policy.name
            views[name], self._kept[name] = catalog, keep
            totals.hidden[name] = admitter.hidden
            if admitter.signals:
                totals.signals[name] = admitter.signals
        self._builds += 1
        self._last = (token, order)  # one assignment: an indexing thread reads both
        if self._builds % _FORGET_EVERY == 0:
            self._forget(merged)
        return Snapshot(
            views=views,
            built_at=now,
            hidden=totals.hidden,
            next_change=min(totals.held) if totals.held else None,
            pending=frozenset(totals.pending),
            stale=tuple(name for name, origin in origins.items() if origin.stale),
            verification=totals.verification,
            signals=totals.signals,
        )

    def index(self) -> None:
        """Bring the search index up to the last build (blocking: a worker thread). Until it
        is, that build's searches scan their listings."""
        last = self._last
        if last is not None:  # a builder taking over after a reload has not built yet
            self.search.update(*last)

    def offers(self, name: str) -> bool:
        """Whether some upstream offered this name, or a look-alike of it, at the last build
        (served or not)."""
        return identity(name) in self._identities

    def succeeded_by(self, config: FederationConfig) -> Builder:
        """A builder for a reloaded config that takes over what still holds: the items of
        every view whose policy files and mirrors are unchanged (while the gateway's namespace
        is the same). A reload that touched one view, or only upstream settings, then
        rebuilds like an ordinary sync."""
        successor = Builder(config, self.trust)  # the same feed: what it says of each version
        if config.gateway.meta_namespace != self.config.gateway.meta_namespace:
            return successor  # every item names the namespace
        successor.search = self.search  # the same servers: the same index
        successor._names, successor._name_set = self._names, self._name_set
        successor._identities = self._identities
        for name in list(self._kept):
            if _view_inputs(config, name) == _view_inputs(self.config, name):
                successor._kept[name] = self._kept.pop(name)
        return successor

    def release(self) -> list[list[Any]]:
        """Empty this builder's memory into lists that `release` frees a slice at a time."""
        kept = [list(servers.values()) for servers in self._kept.values()]
        self._kept = {}
        return kept

    def _files(self) -> list[Policy]:
        """Every compiled policy file once (policy.yaml is every view's first)."""
        files = {id(one): one for policy in self.policies for one in policy.policies}
        return list(files.values())

    def _forget_trusting(self) -> None:
        for one in self._files():
            one.anew()
        for policy in self.policies:
            if any(one.trusting for one in policy.policies):
                self._kept.pop(policy.name, None)

    def _forget(self, merged: Merged) -> None:
        for policy in self._files():
            policy.forget(self._identities)
        if self.config.trust.osv or any(one.trusting for one in self._files()):
            # what the feed said of versions no upstream serves any more (rules or marks)
            self.trust.prune({id(e) for _, entries in merged.servers.values() for e in entries})


def advisory_states(snapshot: Snapshot) -> dict[str, dict[str, int]]:
    """Served versions per view by what the advisory feeds say of them (`present`, `absent`,
    `unknown`), read from their gateway `_meta`'s marks (blocking: a worker thread)."""
    counts: dict[str, dict[str, int]] = {}
    for name, view in snapshot.views.items():
        states: dict[str, int] = {}
        for item in paced(view.active.items, 4096):
            mark = item.suffix[3]
            if mark is not None:
                states[mark[0]] = states.get(mark[0], 0) + 1
        counts[name] = states
    return counts


_RELEASE_STEP = 2048  # objects let go of at a time


def release(snapshot: Snapshot | None, builder: Builder | None = None) -> None:
    """Let go of a replaced snapshot (and builder) a little at a time: call it in a worker
    thread, once nothing reads them any more.

    Dropping the last reference to a catalog frees its objects in one C-level cascade that
    holds the GIL throughout (over 100 ms after a reload at 200k versions, when nothing is
    shared with the new catalog). Emptying its lists in small slices frees the same objects
    with the GIL changing hands between slices. Items the new catalog shares stay alive.
    """
    chunks: list[list[Any]] = []
    if snapshot is not None:
        for view in snapshot.views.values():
            chunks.extend((view.latest.items, view.active.items, view.every.items))
            for made in list(view.memo.values()):  # what pages worked out (see `listing`)
                if isinstance(made, dict):
                    chunks.append(list(made.values()))  # shared values: the dict frees fast
                    made.clear()
                for field in ("by_name", "by_updated"):
                    found = getattr(made, field, None)
                    if isinstance(found, list):
                        chunks.append(found)
            view.memo.clear()
    if builder is not None:
        chunks.extend(builder.release())
    pacer = Pacer()
    for items in chunks:
        while items:
            del items[-_RELEASE_STEP:]
            pacer.tick()


def build_snapshot(
    config: FederationConfig,
    sources: list[Source],
    origins: dict[str, Origin],
    now: datetime | None = None,
    lookup: Lookup = no_lookup,
    advisories: Advisories | None = None,
) -> Snapshot:
    """Merge every upstream's data, decide and build each view (one-off, with no memory)."""
    return Builder(config).build(sources, origins, now, lookup, advisories)
