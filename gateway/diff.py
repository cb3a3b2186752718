"""Dry run: what a proposed config would change in each view, on the same upstream data.

Servers: versions that appear or disappear, servers whose latest version changes. Packages of
the versions a view serves both before and after: where each installs from (its location after
the mirror rewrite), packages the view stops or starts serving, and whether their mirror is
asked about them (`verify.mode`). Package changes are grouped by (registryType, from, to), so a
change that sends every package back to the public registries reads as a few lines.

The report is a tree of frozen values; each writes itself as `diff --json` shows it
(`to_json`: the keys, their order and which are left out are what scripts read, so they stay
put). Asking the mirrors (`diff --verify`) makes a new report with the answers in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from gateway.catalog import ViewCatalog
from gateway.config import FederationConfig
from gateway.registries.base import Check, Result
from gateway.relocations import (
    MirrorAnswers,
    ModeChange,
    PackageGroup,
    PackageRecord,
    Side,
    package_types,
    view_packages,
)
from gateway.shaping import Lookup
from gateway.snapshot import Snapshot, view_policies

Status = Literal["added", "removed", "changed", "unchanged"]

EXAMPLES = 3  # packages named per group in the text form; --json lists every one


@dataclass(frozen=True, slots=True)
class LatestChange:
    """A server whose latest version would change (None: the view serves no version of it)."""

    name: str
    before: str | None
    after: str | None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "from": self.before, "to": self.after}


@dataclass(frozen=True, slots=True)
class TypesChange:
    """A view's `packages.types` before and after (None: every type)."""

    before: tuple[str, ...] | None
    after: tuple[str, ...] | None

    def to_json(self) -> dict[str, object]:
        return {"from": _list(self.before), "to": _list(self.after)}


def _list(types: tuple[str, ...] | None) -> list[str] | None:
    return list(types) if types is not None else None


@dataclass(frozen=True, slots=True)
class VersionTotals:
    """How many versions a view serves before and after."""

    before: int
    after: int

    def to_json(self) -> dict[str, object]:
        return {"before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class ViewReport:
    """What the proposed config changes in one view."""

    name: str  # the view's key in the report's `views`, not repeated inside
    status: Status
    appear: tuple[str, ...]  # name@version
    disappear: tuple[str, ...]
    latest_changed: tuple[LatestChange, ...]
    totals: VersionTotals
    packages: tuple[PackageGroup, ...] = ()  # largest group first
    package_types: TypesChange | None = None  # only when they change
    verify_mode: ModeChange | None = None  # only when it changes

    def to_json(self) -> dict[str, object]:
        view: dict[str, object] = {
            "status": self.status,
            "appear": list(self.appear),
            "disappear": list(self.disappear),
            "latestChanged": [change.to_json() for change in self.latest_changed],
            "totals": self.totals.to_json(),
            "packages": [group.to_json() for group in self.packages],
        }
        if self.package_types is not None:
            view["packageTypes"] = self.package_types.to_json()
        if self.verify_mode is not None:
            view["verifyMode"] = self.verify_mode.to_json()
        return view


@dataclass(frozen=True, slots=True)
class ServerTotals:
    """The server changes of every view, counted."""

    appear: int
    disappear: int
    latest_changed: int

    def to_json(self) -> dict[str, object]:
        return {
            "appear": self.appear,
            "disappear": self.disappear,
            "latestChanged": self.latest_changed,
        }


@dataclass(frozen=True, slots=True)
class PackageTotals:
    """The package changes of every view, counted by kind."""

    location: int
    removed: int
    added: int
    verification: int

    def to_json(self) -> dict[str, object]:
        return {
            "location": self.location,
            "removed": self.removed,
            "added": self.added,
            "verification": self.verification,
        }


@dataclass(frozen=True, slots=True)
class DiffReport:
    """The whole dry run, view by view (in name order), and its totals."""

    views: tuple[ViewReport, ...]
    totals: ServerTotals
    package_totals: PackageTotals
    mirror: MirrorAnswers | None = None  # once the mirrors were asked (`diff --verify`)

    def records(self) -> list[PackageRecord]:
        return [r for view in self.views for group in view.packages for r in group.packages]

    def answered(self, results: Mapping[Check, Result]) -> DiffReport:
        """The report with each mirror's answers in the records they concern, counted per
        group and in all; a record whose check `results` lacks is `unknown`."""
        views = tuple(
            replace(view, packages=tuple(group.answered(results) for group in view.packages))
            for view in self.views
        )
        report = replace(self, views=views)
        asked = (record.mirror for record in report.records() if record.mirror is not None)
        return replace(report, mirror=MirrorAnswers.count(asked))

    def to_json(self) -> dict[str, object]:
        report: dict[str, object] = {
            "views": {view.name: view.to_json() for view in self.views},
            "totals": self.totals.to_json(),
            "packageTotals": self.package_totals.to_json(),
        }
        if self.mirror is not None:
            report["mirror"] = self.mirror.to_json()
        return report


def _served(view: ViewCatalog | None) -> set[tuple[str, str]]:
    return {item.key for item in view.active.items} if view else set()


def _latest(view: ViewCatalog | None) -> dict[str, str]:
    return {item.name: item.version for item in view.latest.items} if view else {}


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]}@{key[1]}"


def _servers(name: str, before: ViewCatalog | None, after: ViewCatalog | None) -> ViewReport:
    """One view's versions that appear or disappear, servers whose latest version changes."""
    old, new = _served(before), _served(after)
    old_latest, new_latest = _latest(before), _latest(after)
    changed = tuple(
        LatestChange(server, old_latest.get(server), new_latest.get(server))
        for server in sorted(set(old_latest) | set(new_latest))
        if old_latest.get(server) != new_latest.get(server)
    )
    appear = tuple(_label(k) for k in sorted(new - old))
    disappear = tuple(_label(k) for k in sorted(old - new))
    status: Status = "added" if before is None else "removed" if after is None else "changed"
    if status == "changed" and not (appear or disappear or changed):
        status = "unchanged"
    totals = VersionTotals(len(old), len(new))
    return ViewReport(name, status, appear, disappear, changed, totals)


def _with_packages(view: ViewReport, before: Side, after: Side) -> ViewReport:
    """A view served under both configs, with its package changes and settings changes."""
    old_types, new_types = package_types(before.policy), package_types(after.policy)
    old_mode, new_mode = before.policy.verify_mode, after.policy.verify_mode
    view = replace(
        view,
        packages=view_packages(before, after),
        package_types=TypesChange(old_types, new_types) if old_types != new_types else None,
        verify_mode=ModeChange(old_mode, new_mode) if old_mode != new_mode else None,
    )
    settings = (view.package_types, view.verify_mode)
    if view.status == "unchanged" and (view.packages or settings != (None, None)):
        view = replace(view, status="changed")
    return view


@dataclass(slots=True)
class Diff:
    """The dry run's report, and the mirror checks that would tell whether each changed
    location is really there (asked only with `diff --verify`). The report is a value:
    answering replaces it."""

    report: DiffReport

    @property
    def checks(self) -> list[Check]:
        """Each check once, for every record it answers."""
        found = (record.check for record in self.report.records())
        return list(dict.fromkeys(check for check in found if check is not None))

    def answer(self, lookup: Lookup) -> None:
        """Put each mirror's answer in the report. No answer (unreachable, or out of time) is
        `unknown`."""
        results: dict[Check, Result] = {}
        for check in self.checks:
            verdict = lookup(check)
            results[check] = verdict.result if verdict is not None else "unknown"
        self.report = self.report.answered(results)


def diff_configs(
    current: FederationConfig, before: Snapshot, proposed: FederationConfig, after: Snapshot
) -> Diff:
    """What `proposed` would change, view by view, on the data `before` and `after` were built
    from (each built with its own config): servers, package locations and types, and which
    packages their mirror is asked about."""
    old_policies = {policy.name: policy for policy in view_policies(current)}
    new_policies = {policy.name: policy for policy in view_policies(proposed)}
    views: list[ViewReport] = []
    for name in sorted(set(before.views) | set(after.views)):
        old_catalog, new_catalog = before.views.get(name), after.views.get(name)
        view = _servers(name, old_catalog, new_catalog)
        # A view added or removed has no packages to compare: its versions appear or
        # disappear whole.
        if old_catalog is not None and new_catalog is not None:
            view = _with_packages(
                view,
                Side(old_catalog, old_policies[name], current.gateway.meta_namespace),
                Side(new_catalog, new_policies[name], proposed.gateway.meta_namespace),
            )
        views.append(view)
    totals = ServerTotals(
        sum(len(view.appear) for view in views),
        sum(len(view.disappear) for view in views),
        sum(len(view.latest_changed) for view in views),
    )
    kinds: Counter[str] = Counter()
    for view in views:
        for group in view.packages:
            kinds[group.key.change] += len(group.packages)
    package_totals = PackageTotals(
        kinds["location"], kinds["removed"], kinds["added"], kinds["verification"]
    )
    return Diff(DiffReport(tuple(views), totals, package_totals))


# -- the report for a terminal -----------------------------------------------------------------


def _types_text(types: tuple[str, ...] | None) -> str:
    return ", ".join(types) if types is not None else "every type"


def _mirror_text(answers: MirrorAnswers) -> str:
    text = f"{answers.available} available, {answers.missing} missing"
    return text + (f", {answers.unknown} unknown (unreachable)" if answers.unknown else "")


def _example(record: PackageRecord) -> str:
    location = record.target or record.source or {}
    where = location.get("identifier", "")
    answer = f"  [{record.mirror}]" if record.mirror is not None else ""
    return f"      {record.name}@{record.version}  {where}{answer}"


def _render_packages(view: ViewReport) -> list[str]:
    lines = []
    if view.package_types is not None:
        old, new = (_types_text(t) for t in (view.package_types.before, view.package_types.after))
        lines.append(f"  package types: {old} -> {new}")
    if view.verify_mode is not None:
        lines.append(f"  verify.mode: {view.verify_mode.before} -> {view.verify_mode.after}")
    for group in view.packages:
        lines.append(f"  * {group.summary}")
        if group.mirror is not None:
            lines.append(f"      mirror: {_mirror_text(group.mirror)}")
        records = group.packages
        lines.extend(_example(record) for record in records[:EXAMPLES])
        if len(records) > EXAMPLES:
            lines.append(f"      ... and {len(records) - EXAMPLES} more (--json lists them all)")
    return lines


def render_text(report: DiffReport) -> str:
    lines = []
    for view in report.views:
        totals = view.totals
        head = f"view {view.name}: {view.status}, {totals.before} -> {totals.after} versions"
        lines.append(head)
        lines.extend(f"  + {label}" for label in view.appear)
        lines.extend(f"  - {label}" for label in view.disappear)
        for change in view.latest_changed:
            old, new = change.before or "(none)", change.after or "(none)"
            lines.append(f"  ~ {change.name}: latest {old} -> {new}")
        lines.extend(_render_packages(view))
    servers, kinds = report.totals, report.package_totals
    lines.append(
        f"total: {servers.appear} appear, {servers.disappear} disappear, "
        f"{servers.latest_changed} latest changed"
    )
    lines.append(
        f"packages: {kinds.location} change location, {kinds.removed} no longer "
        f"served, {kinds.added} newly served, {kinds.verification} change verification"
    )
    if report.mirror is not None:
        lines.append(f"mirror checks of changed locations: {_mirror_text(report.mirror)}")
    return "\n".join(lines)
