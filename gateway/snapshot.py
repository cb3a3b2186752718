"""What the gateway serves at one moment: merge the upstreams, decide and build every view.

Pure and synchronous (the refresher runs it off the event loop); the result is immutable and
replaces the previous snapshot with a single assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.catalog import Admission, Origin, PartCache, ViewCatalog, build_view, order_of
from gateway.config import DEFAULT_VIEW, FederationConfig
from gateway.entry import Entry
from gateway.merge import Merged, Source, merge
from gateway.policy import Policy
from gateway.verify import Check
from gateway.view import Lookup, Shape, ViewPolicy, no_lookup


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


def view_policies(config: FederationConfig) -> list[ViewPolicy]:
    """The default view (policy.yaml alone), then each configured view."""
    base = Policy(config.policy, "policy.yaml")  # decided once per entry for every view
    policies = [ViewPolicy.of(DEFAULT_VIEW, base, None, config.mirrors)]
    for name, settings in config.views.items():
        policies.append(ViewPolicy.of(name, base, settings, config.mirrors))
    shared: dict[object, dict[int, tuple[Entry, Shape]]] = {}
    rewrites: dict[bytes, bytes] = {}
    for policy in policies:
        policy.shapes = shared.setdefault(policy.shape_key, policy.shapes)
        policy.rewrites = rewrites  # a rewrite that is the same in two views is stored once
    return policies


class Builder:
    """Builds snapshots for one config, remembering per-entry work between builds.

    Policy verdicts, package shapes and the registry `_meta` bytes depend only on the entry
    (and the config), so a rebuild after a sync that changed 1 % of the entries redoes 1 % of
    that work. A feed keeps the same Entry object while its data is unchanged, which is what
    the caches recognise; entries gone from every feed are forgotten after each build.
    """

    def __init__(self, config: FederationConfig) -> None:
        self.config = config
        self.policies = view_policies(config)
        self.parts = PartCache(config.gateway.meta_namespace)
        self._names: list[str] | None = None
        self._name_set: set[str] = set()

    def build(
        self,
        sources: list[Source],
        origins: dict[str, Origin],
        now: datetime | None = None,
        lookup: Lookup = no_lookup,
    ) -> Snapshot:
        now = now or datetime.now(UTC)
        merged: Merged = merge(sources)  # hidden upstreams keep their names: no public fallback
        # One sort for every view: names, then each server's versions, as byte strings.
        if self._names is None or merged.servers.keys() != self._name_set:
            self._names = sorted(merged.servers)  # only when the set of names changed
            self._name_set = set(self._names)
        order = order_of(merged, self._names)
        views: dict[str, ViewCatalog] = {}
        hidden: dict[str, dict[str, int]] = {}
        held: list[datetime] = []
        pending: set[Check] = set()
        verification: dict[str, int] = {}
        self.parts.new_build()
        for policy in self.policies:
            counts: dict[str, int] = {}

            def admit(
                upstream: str,
                entry: Entry,
                policy: ViewPolicy = policy,
                counts: dict[str, int] = counts,
            ) -> Admission | None:
                if origins[upstream].hidden:
                    counts["stale"] = counts.get("stale", 0) + 1
                    return None
                decision = policy.decide(upstream, entry, now, lookup)
                if decision.pending:
                    pending.update(decision.pending)
                if not decision.served:
                    counts[decision.reason] = counts.get(decision.reason, 0) + 1
                    if decision.held_until is not None:
                        held.append(decision.held_until)
                    return None
                for package in decision.packages:
                    if "verification" in package:
                        result = package["verification"]
                        verification[result] = verification.get(result, 0) + 1
                assert decision.server_json is not None
                return decision.server_json, decision.rules, decision.packages_json

            views[policy.name] = build_view(policy.name, order, origins, admit, self.parts)
            hidden[policy.name] = counts
        self._forget(sources)
        return Snapshot(
            views=views,
            built_at=now,
            hidden=hidden,
            next_change=min(held) if held else None,
            pending=frozenset(pending),
            stale=tuple(name for name, origin in origins.items() if origin.stale),
            verification=verification,
        )

    def _forget(self, sources: list[Source]) -> None:
        live = {id(entry) for source in sources for entry in source.entries}
        seen: set[int] = set()
        rewrites: dict[bytes, bytes] = {}
        for policy in self.policies:
            policy.rewrites = rewrites  # deduplicates within a build; kept shapes keep theirs
            for one in policy.policies:
                if id(one) not in seen:
                    seen.add(id(one))
                    one.forget(live)
            if id(policy.shapes) not in seen:
                seen.add(id(policy.shapes))
                stale = [
                    key
                    for key, (_, shape) in policy.shapes.items()
                    if key not in live or shape.checked
                ]  # shapes that carry mirror answers are redone: the answers change
                for key in stale:
                    del policy.shapes[key]
        self.parts.forget(live)


def build_snapshot(
    config: FederationConfig,
    sources: list[Source],
    origins: dict[str, Origin],
    now: datetime | None = None,
    lookup: Lookup = no_lookup,
) -> Snapshot:
    """Merge every upstream's data, decide and build each view (one-off, with no memory)."""
    return Builder(config).build(sources, origins, now, lookup)
