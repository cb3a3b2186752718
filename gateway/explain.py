"""Why is this server (not) shown? Every version of a name, in every upstream and view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config import FederationConfig, Match
from gateway.entry import Entry, format_timestamp
from gateway.merge import Shadow, Source, merge, owner_by_reservation
from gateway.names import identity
from gateway.semver import pick_latest
from gateway.shaping import Lookup, no_lookup
from gateway.signals import SIGNALS
from gateway.trust import Trust, VersionTrust
from gateway.view import Decision, ViewPolicy

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PackageAccount:
    """A served package of a version: where it installs from now, the location it replaced,
    what its mirror said (`meta` is the gateway's `_meta` for the package, as served)."""

    meta: Mapping[str, object]
    location: Mapping[str, object]

    def to_json(self) -> Json:
        return {**self.meta, "location": dict(self.location)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a version fares in one view."""

    served: bool
    reason: str
    rules: tuple[str, ...]
    is_latest: bool
    cooldown_ends_at: datetime | None = None
    removed_packages: tuple[str, ...] = ()
    packages: tuple[PackageAccount, ...] = ()
    signals: tuple[str, ...] = ()  # what a deciding rule on trust signals read: the advisories

    def to_json(self) -> Json:
        verdict: Json = {"served": self.served, "reason": self.reason, "rules": list(self.rules)}
        if self.signals:
            verdict["signals"] = list(self.signals)
        if self.cooldown_ends_at is not None:
            verdict["cooldownEndsAt"] = format_timestamp(self.cooldown_ends_at)
        if self.removed_packages:
            verdict["removedPackages"] = list(self.removed_packages)
        if self.packages:
            verdict["packages"] = [package.to_json() for package in self.packages]
        verdict["isLatest"] = self.is_latest
        return verdict


@dataclass(frozen=True, slots=True)
class Shadowed:
    """Why a version is served by no view: another upstream has (or owns) its name."""

    by: str
    why: str
    lookalike_of: str | None


@dataclass(frozen=True, slots=True)
class VersionAccount:
    """One version of the name (or of a look-alike spelling of it) from one upstream."""

    upstream: str
    version: str
    status: str
    published_at: datetime
    spelled: str | None  # the version's own name, when a look-alike of the name asked for
    shadowed: Shadowed | None
    views: tuple[tuple[str, Verdict], ...]  # none when shadowed
    trust: VersionTrust | None = None  # what the advisory feeds say (None: none configured)

    def verdict(self, view: str) -> Verdict | None:
        return dict(self.views).get(view)

    def to_json(self) -> Json:
        item: Json = {
            "upstream": self.upstream,
            "version": self.version,
            "status": self.status,
            "publishedAt": format_timestamp(self.published_at),
        }
        if self.spelled is not None:
            item["name"] = self.spelled
        if self.shadowed is not None:
            item["shadowedBy"] = self.shadowed.by
            item["why"] = self.shadowed.why
            if self.shadowed.lookalike_of is not None:
                item["lookalikeOf"] = self.shadowed.lookalike_of
            return item
        item["views"] = {view: verdict.to_json() for view, verdict in self.views}
        if self.trust is not None:
            item["advisories"] = trust_json(self.trust)
        return item


def trust_json(facts: VersionTrust) -> Json:
    """What the advisory feeds say of a version, as explain and the pages show it."""
    return {
        "malicious": facts.malicious, "severity": facts.severity,
        "advisories": [{"id": a.id, "aliases": list(a.aliases), "malicious": a.malicious,
                        "severity": a.severity} for a in facts.advisories],
        "packages": [{"registryType": p.registry_type, "identifier": p.identifier,
                      "version": p.version, "state": p.finding.state} for p in facts.packages],
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Explanation:
    """How each version of a name, and of every look-alike of it, fares in each view: what
    `explain --json` prints and `/admin/explain` answers (`to_json`)."""

    name: str
    identity: str
    version: str | None  # the version asked about, if one was
    owner: str | None
    reserved_by: str | None
    lookalikes: tuple[str, ...]
    views: tuple[str, ...]
    versions: tuple[VersionAccount, ...]
    config: str

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "identity": self.identity,
            "version": self.version,
            "owner": self.owner,
            "reservedBy": self.reserved_by,
            "lookalikes": list(self.lookalikes),
            "views": list(self.views),
            "versions": [version.to_json() for version in self.versions],
            "config": self.config,
        }


def _packages(
    server: dict[str, Any], metas: Sequence[dict[str, Any]]
) -> tuple[PackageAccount, ...]:
    """Each served package: its location now, the one it replaced, what the mirror said."""
    described = []
    for package, meta in zip(server.get("packages") or [], metas, strict=False):
        location = {k: package.get(k) for k in ("identifier", "registryBaseUrl") if k in package}
        described.append(PackageAccount(meta, location))
    return tuple(described)


def _why(shadow: Shadow) -> str:
    if shadow.spelled is not None:
        return f"a look-alike of {shadow.spelled!r}, which upstream {shadow.by!r} has"
    if shadow.reserved:
        return f"the name is reserved by upstream {shadow.by!r} (owns)"
    return f"upstream {shadow.by!r} comes first and has this name"


def explain(
    config: FederationConfig,
    policies: Sequence[ViewPolicy],
    sources: Sequence[Source],
    name: str,
    *,
    version: str | None = None,
    view: str | None = None,
    now: datetime,
    lookup: Lookup = no_lookup,
    trust: Trust | None = None,
) -> Explanation:
    """How each version of `name`, and of every look-alike of it (any name with the same
    identity), fares in each view: each view decides through the build's own path
    (`ViewPolicy.decide`); `trust` is what the policies' trust keys read (its feed set)."""
    chosen = [p for p in policies if view is None or p.name == view]
    trusting = {
        f"{one.source} rules[{index}]"
        for policy in chosen
        for one in policy.policies
        for index, rule in enumerate(one.settings.rules)
        if (rule.allow or rule.deny or Match()).trust_keys()
    }
    signing = _signal_rules(chosen)
    wanted = identity(name)
    relevant = [
        Source(s.upstream, [e for e in s.entries if e.identity == wanted], s.owns) for s in sources
    ]
    merged = merge(relevant)
    shadows = {(s.upstream, s.name): s for s in merged.shadowed.get(wanted, [])}
    served: dict[tuple[str, str], list[Entry]] = {}  # (view, name) -> served versions
    decided: list[tuple[str, Entry, Shadow | None, list[tuple[str, Decision]]]] = []
    for source in relevant:
        for entry in source.entries:
            if version is not None and entry.version != version:
                continue
            shadow = shadows.get((source.upstream, entry.name))
            decisions: list[tuple[str, Decision]] = []
            if shadow is None:
                for policy in chosen:
                    decision = policy.decide(source.upstream, entry, now, lookup)
                    if decision.served:
                        served.setdefault((policy.name, entry.name), []).append(entry)
                    decisions.append((policy.name, decision))
            decided.append((source.upstream, entry, shadow, decisions))
    latest = {}
    for key, entries in served.items():
        best = pick_latest(e for e in entries if e.status != "deleted")
        latest[key] = best.version if best is not None else None
    versions = []
    for upstream, entry, shadow, decisions in decided:
        newest = {view_name: latest.get((view_name, entry.name)) for view_name, _ in decisions}
        facts = trust.of(entry) if trust is not None and config.trust.osv else None
        by_name = {policy.name: policy for policy in chosen}
        verdicts = tuple(
            (view_name, _verdict(d, d.served and newest[view_name] == entry.version,
                                 _signals(facts, d.rules, trusting)
                                 + _read(by_name[view_name], entry, d.rules, signing, lookup)))
            for view_name, d in decisions
        )  # fmt: skip
        versions.append(
            VersionAccount(
                upstream, entry.version, entry.status, entry.published_at,
                entry.name if entry.name != name else None,
                Shadowed(shadow.by, _why(shadow), shadow.spelled) if shadow is not None else None,
                verdicts, facts if shadow is None else None,
            )
        )  # fmt: skip
    return Explanation(
        name, wanted, version, merged.owners.get(wanted), owner_by_reservation(wanted, sources),
        tuple(merged.lookalikes(wanted)), tuple(p.name for p in chosen), tuple(versions),
        str(config.directory),
    )  # fmt: skip


def _signals(
    facts: VersionTrust | None, rules: tuple[str, ...], trusting: set[str]
) -> tuple[str, ...]:
    """What a deciding rule on trust signals read, named for people."""
    if facts is None or not rules or rules[-1] not in trusting:
        return ()
    if facts.advisories:
        return tuple(facts.reasons())
    if facts.malicious is None:
        return ("unknown: no advisory feed could tell",)
    return ("no known advisory",)


def _signal_rules(policies: Sequence[ViewPolicy]) -> dict[str, list[str]]:
    """The rules on signals, and the signals they read; a file's `default` too when
    some rule of it reads signals (a version no rule admitted: what did they read?)."""
    found: dict[str, list[str]] = {}
    for policy in policies:
        for one in policy.policies:
            for index, rule in enumerate(one.settings.rules):
                read = (rule.allow or rule.deny or Match()).signal_keys()
                if read:
                    found[f"{one.source} rules[{index}]"] = read
                    default = found.setdefault(f"{one.source} default", [])
                    default.extend(key for key in read if key not in default)
    return found


def _read(
    policy: ViewPolicy,
    entry: Entry,
    rules: tuple[str, ...],
    signing: dict[str, list[str]],
    lookup: Lookup,
) -> tuple[str, ...]:
    """What a deciding rule on signals read at the view's mirror: each signed package's
    state and why ("provenance verified: built by github.com/acme/weather at commit ...")."""
    keys = signing.get(rules[-1]) if rules else None
    if not keys:
        return ()
    read = [line for meta in policy.shape(entry, lookup).packages
            for line in _signal_lines(meta, keys)]  # fmt: skip
    if not read:  # no signed package at a mirror of the view
        states = policy.states(entry)
        read = [f"{key} {states[SIGNALS.index(key)]}" for key in keys]
    return tuple(read)


def _verdict(decision: Decision, is_latest: bool, signals: tuple[str, ...] = ()) -> Verdict:
    server = decision.server if decision.packages else None
    return Verdict(
        decision.served, decision.reason, decision.rules, is_latest, decision.held_until,
        decision.removed_types, _packages(server, decision.packages) if server is not None else (),
        signals,
    )  # fmt: skip


def render_text(report: Explanation) -> str:
    """The report for a terminal."""
    lines = [report.name]
    owner = report.owner or "(no upstream serves it)"
    reserved = f", reserved by {report.reserved_by}" if report.reserved_by else ""
    lines.append(f"  owner: {owner}{reserved}")
    if report.lookalikes:
        names = ", ".join(report.lookalikes)
        lines.append(f"  LOOK-ALIKES served side by side by {owner}: {names}")
    if not report.versions:
        at = f" at version {report.version}" if report.version else ""
        lines.append(f"  no upstream offers this name{at}")
    for item in report.versions:
        spelled = f"{item.spelled}  " if item.spelled is not None else ""
        head = f"  {spelled}{item.version}  from {item.upstream}  {item.status}"
        lines.append(f"{head}  published {format_timestamp(item.published_at)}")
        if item.shadowed is not None:
            lines.append(f"      shadowed: {item.shadowed.why}")
            continue
        for view_name, verdict in item.views:
            lines.extend(_verdict_lines(view_name, verdict))
    return "\n".join(lines)


def _verdict_lines(view_name: str, verdict: Verdict) -> list[str]:
    state = "SERVED" if verdict.served else "hidden"
    if verdict.is_latest:
        state += " (latest)"
    detail = ", ".join(verdict.rules)
    if verdict.reason == "cooldown" and verdict.cooldown_ends_at is not None:
        detail += f"; cooldown until {format_timestamp(verdict.cooldown_ends_at)}"
    elif verdict.reason == "denied":
        detail = f"denied by {verdict.rules[-1]}"
    if verdict.signals:
        detail += ": " + ", ".join(verdict.signals)
    elif verdict.reason == "not installable":
        detail += "; no packages or remotes left"
    if verdict.removed_packages:
        detail += f"; removed packages: {', '.join(verdict.removed_packages)}"
    lines = [f"      {view_name:<16} {state:<16} {detail}"]
    for package in verdict.packages:
        now_at = " ".join(str(v) for v in package.location.values())
        original = package.meta.get("original")
        was = " ".join(str(v) for v in (original.values() if isinstance(original, dict) else ()))
        check = package.meta.get("verification", "not verified")
        lines.append(f"          {package.meta['registryType']}: {now_at} (was: {was}) [{check}]")
        lines.extend(f"            {line}" for line in _signal_lines(package.meta, SIGNALS))
    return lines


def _signal_lines(meta: Mapping[str, object], keys: Sequence[str]) -> list[str]:
    """A package's signals, as its gateway `_meta` says them: "provenance verified: why"."""
    found = meta.get("signals")
    if not isinstance(found, dict):
        return []
    return [
        f"{key} {signal.get('state')}: {signal.get('why')}"
        for key in keys
        if isinstance(signal := found.get(key), dict)
    ]
