"""What the gateway serves at one moment: merge the upstreams, decide and build every view.

Pure and synchronous (the refresher runs it off the event loop); the result is immutable and
replaces the previous snapshot with a single assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.admitting import Totals, ViewAdmitter
from gateway.build import Built, Order, PartCache, ServerItems, build_views, order_of
from gateway.catalog import Listing, Origin, ViewCatalog
from gateway.config import DEFAULT_VIEW, FederationConfig
from gateway.entry import Entry
from gateway.increment import (
    Increment,
    Remerge,
    ViewState,
    any_hidden,
    carry_suffixes,
    deciding,
    kept_for,
    kept_without,
    remerge,
    spliced,
    view_figures,
)
from gateway.merge import Merged, Source, merge
from gateway.names import identity
from gateway.osv import Advisories
from gateway.pacing import collector_paused
from gateway.policy import Policy
from gateway.registries.base import Check
from gateway.search import SearchIndex
from gateway.served import Mark
from gateway.shapes import Shapes
from gateway.shaping import Lookup, no_lookup
from gateway.stepping import paced
from gateway.trust import Trust
from gateway.view import ViewPolicy


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
    config: str = ""  # the fingerprint of the config it was built with


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


def _view_inputs(config: FederationConfig, view: str) -> tuple[object, ...]:
    """Everything in a config that a view's items depend on (upstream data aside)."""
    own = config.views.get(view)
    exists = view == DEFAULT_VIEW or own is not None
    marks = bool(config.trust.osv)  # the served entries say what the feeds say, or not
    return (exists, config.policy, own, config.mirrors, marks, config.trust.npm, config.trust.pypi)


# Forgetting names no feed holds any more walks every policy's table: not after every build.
_FORGET_EVERY = 8
_FEW = 64  # servers to decide again that are few enough whatever the catalog's size


class Builder:
    """Builds snapshots for one config, remembering work between builds.

    Each view keeps the items of every server whose entries did not change, and the rules
    matching a name are remembered. A feed keeps the same Entry object while its data is
    unchanged, which is what kept items are recognised by. A build after a sync merges and
    decides only the servers whose entries changed, and splices them into the last build's
    listings (`increment`), so a rebuild after a sync that changed 1 % of the entries does
    little more than 1 % of the work; names gone from every feed are forgotten every few
    builds.
    """

    def __init__(self, config: FederationConfig, trust: Trust | None = None) -> None:
        self.config = config
        self.fingerprint = config.fingerprint()
        self.trust = trust or Trust()  # what a predecessor learnt of the feed, kept
        self.policies = view_policies(config, self.trust)
        self.parts = PartCache(config.gateway.meta_namespace)
        self._names: list[str] | None = None
        self._name_set: AbstractSet[str] = set()
        self._identities: Collection[str] = set()  # of the names (the merge's owners' keys)
        self._increment: Increment | None = None  # what the next build may start from
        self.decided: int | None = None  # servers the last build decided, if made in part
        self._refreshed: set[str] = set()  # servers a new feed may say otherwise of, to decide
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
        # The servers a new feed may say otherwise of are decided anew (their items are not
        # kept) by the next build that succeeds: remembered until then.
        if advisories is not self.trust.advisories:
            refreshed = self.trust.refresh(advisories)
            for one in self._files():
                one.anew()
            if refreshed is None:  # it may say otherwise of any
                self._increment = None  # what the feeds say of an entry is in its items
                self._forget_trusting()  # every version such a view serves is decided anew
                if self.config.trust.osv:  # and every served entry says what the feeds say
                    self._kept.clear()
            else:
                self._refreshed |= refreshed
        with collector_paused():
            made = self._build(sources, origins, now or datetime.now(UTC), lookup, self._refreshed)
        self._refreshed = set()
        return made

    def _build(
        self,
        sources: list[Source],
        origins: dict[str, Origin],
        now: datetime,
        lookup: Lookup,
        refreshed: set[str],
    ) -> Snapshot:
        totals = Totals()
        feed = self.trust.advisories
        self.parts.new_build(feed.newest if feed is not None else None)
        for view_policy in self.policies:
            view_policy.use(lookup)
        if self.policies:
            self.policies[0].shapes.new_build()  # one store for every view
        admitters = [ViewAdmitter(policy, origins, now, lookup, totals) for policy in self.policies]
        token = self.search.next_token()
        self.decided = None
        views = self._in_part(sources, origins, admitters, token, refreshed)
        if views is None:
            views = self._whole(sources, origins, admitters, token, refreshed)
        for admitter in admitters:
            state = views[admitter.policy.name]
            totals.hidden[admitter.policy.name] = state.hidden
            if admitter.signals:
                totals.signals[admitter.policy.name] = admitter.signals
        self._builds += 1
        if self._builds % _FORGET_EVERY == 0:
            self._forget()
        return Snapshot(
            views={name: state.built.catalog for name, state in views.items()},
            built_at=now,
            hidden=totals.hidden,
            next_change=min(totals.held) if totals.held else None,
            pending=frozenset(totals.pending),
            stale=tuple(name for name, origin in origins.items() if origin.stale),
            verification=totals.verification,
            signals=totals.signals,
            config=self.fingerprint,
        )

    def _whole(
        self,
        sources: list[Source],
        origins: dict[str, Origin],
        admitters: list[ViewAdmitter],
        token: int,
        refreshed: set[str],
    ) -> dict[str, ViewState]:
        """Every server merged and decided (an unchanged server's items kept, but not those of
        `refreshed`)."""
        merged: Merged = merge(sources)  # hidden upstreams keep their names: no public fallback
        # One sort for every view: names, then each server's versions, as byte strings.
        if self._names is None or merged.servers.keys() != self._name_set:
            self._names = sorted(merged.servers)  # only when the set of names changed
            self._name_set = set(self._names)
            self._identities = merged.owners
        if self._prepared is not self._names:  # new names, or this builder's first build
            identities = list(self._identities)
            for policy in self._files():
                policy.prepare(identities)
            self._prepared = self._names
        order = order_of(merged, self._names)
        built = build_views(
            order,
            origins,
            [
                (a.policy.name, a, kept_without(self._kept.get(a.policy.name), refreshed))
                for a in admitters
            ],
            self.parts,
            self.search,
            token,
            self._marks(),
        )
        views: dict[str, ViewState] = {}
        for admitter, one in zip(admitters, built, strict=True):
            views[admitter.policy.name] = ViewState(one, dict(sorted(admitter.hidden.items())))
            self._kept[admitter.policy.name] = one.keep
        self._last = (token, order)  # one assignment: an indexing thread reads both
        self._increment = None
        if all(policy.keeps for policy in self.policies):
            offered = built[0].catalog.offered
            self._increment = Increment.after_whole(sources, merged, self._names, order,
                                                    offered, views)  # fmt: skip
        return views

    def _in_part(
        self,
        sources: list[Source],
        origins: dict[str, Origin],
        admitters: list[ViewAdmitter],
        token: int,
        refreshed: set[str],
    ) -> dict[str, ViewState] | None:
        """Only the servers a sync changed merged and decided (see `increment`), and those of
        `refreshed`; or None."""
        last = self._increment
        if last is None or any_hidden(origins) or last.views.keys() != self._kept.keys():
            return None
        merged = remerge(last, sources)
        if merged is None:
            return None
        decided = deciding(last, merged, refreshed)
        if len(decided) > max(_FEW, len(merged.names) // 4):
            return None  # as much work either way: the whole build is the simpler
        if merged.new_identities:
            for policy in self._files():
                policy.prepare(merged.new_identities)
        servers = merged.servers
        part = [(name, *servers[name]) for name in decided if name in servers]
        made = build_views(
            part,
            origins,
            [
                (a.policy.name, a, kept_for(self._kept[a.policy.name], decided, refreshed))
                for a in admitters
            ],
            self.parts,
            self.search,
            token,
            self._marks(),
        )
        carry_suffixes(last, self.parts, origins, (self._builds + 1) % _FORGET_EVERY == 0)
        self.decided = len(decided)
        views: dict[str, ViewState] = {}
        for admitter, one in zip(admitters, made, strict=True):
            name = admitter.policy.name
            views[name] = self._spliced(last, merged, decided, one, admitter.hidden, token)
        for name, state in views.items():
            self._kept[name] = state.built.keep
        self._names, self._name_set, self._identities = merged.names, servers.keys(), merged.owners
        self._prepared = self._names
        self._last = (token, merged.order)
        self._increment = last.next(sources, merged, views)
        return views

    def _spliced(
        self,
        last: Increment,
        merged: Remerge,
        decided: list[str],
        made: Built,
        hidden_now: dict[str, int],
        token: int,
    ) -> ViewState:
        """A view's catalog: the last one, with the servers decided again replaced."""
        state = last.views[made.catalog.view]
        before = state.built.catalog
        counts, hidden = view_figures(last, merged, state, decided, made, hidden_now)
        catalog = ViewCatalog(
            view=before.view,
            every=Listing(spliced(before.every.items, decided, made.catalog.every.items)),
            active=Listing(spliced(before.active.items, decided, made.catalog.active.items)),
            latest=Listing(spliced(before.latest.items, decided, made.catalog.latest.items)),
            suffixes=self.parts.suffixes,
            upstream_counts=counts,
            search=self.search,
            token=token,
            offered=merged.offered,
        )
        keep = dict(state.built.keep)  # a copy: a build that fails leaves the last one whole
        for name in decided:
            keep.pop(name, None)
        keep.update(made.keep)
        return ViewState(Built(catalog, keep, made.unkept), hidden)

    def _marks(self) -> Callable[[Entry], Mark | None] | None:
        return self.trust.mark if self.config.trust.osv else None

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
        for servers in self._kept.values():
            servers.clear()  # the increment's views hold the same dicts
        self._kept = {}
        self._increment = None
        self._last = None
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

    def _forget(self) -> None:
        for policy in self._files():
            policy.forget(self._identities)
        if self.config.trust.osv or any(one.trusting for one in self._files()):
            # what the feed said of versions no upstream serves any more (rules or marks)
            order = self._last[1] if self._last is not None else []
            self.trust.prune({id(e) for _, _, entries in order for e in entries})


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
