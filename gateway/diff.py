"""Dry run: what a proposed config would change in each view, on the same upstream data.

Servers: versions that appear or disappear, servers whose latest version changes. Packages of
the versions a view serves both before and after: where each installs from (its location after
the mirror rewrite), packages the view stops or starts serving, and whether their mirror is
asked about them (`verify.mode`). Package changes are grouped by (registryType, from, to), so a
change that sends every package back to the public registries reads as a few lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.catalog import ViewCatalog
from gateway.config import FederationConfig
from gateway.registries import ECOSYSTEMS
from gateway.registries.base import Check
from gateway.relocations import Side, group_report, package_types, view_packages
from gateway.shaping import Lookup
from gateway.snapshot import Snapshot, view_policies

Report = dict[str, Any]

LOCATION_KEYS = ("identifier", "registryBaseUrl")  # what a mirror rewrite may change
EXAMPLES = 3  # packages named per group in the text form; --json lists every one
RESULTS = ("available", "missing", "unknown")  # a mirror's answers, as `_meta` names them

_OCI_PUBLIC = {"docker.io": ECOSYSTEMS["oci"].public}


def _served(view: ViewCatalog | None) -> set[tuple[str, str]]:
    return {item.key for item in view.active.items} if view else set()


def _latest(view: ViewCatalog | None) -> dict[str, str]:
    return {item.name: item.version for item in view.latest.items} if view else {}


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]}@{key[1]}"


def diff_snapshots(current: Snapshot, proposed: Snapshot) -> Report:
    """Per view: versions that appear or disappear, servers whose latest version changes."""
    views: Report = {}
    totals = {"appear": 0, "disappear": 0, "latestChanged": 0}
    for name in sorted(set(current.views) | set(proposed.views)):
        before, after = current.views.get(name), proposed.views.get(name)
        old, new = _served(before), _served(after)
        old_latest, new_latest = _latest(before), _latest(after)
        changed = [
            {"name": server, "from": old_latest.get(server), "to": new_latest.get(server)}
            for server in sorted(set(old_latest) | set(new_latest))
            if old_latest.get(server) != new_latest.get(server)
        ]
        report = {
            "status": "added" if before is None else "removed" if after is None else "changed",
            "appear": [_label(k) for k in sorted(new - old)],
            "disappear": [_label(k) for k in sorted(old - new)],
            "latestChanged": changed,
            "totals": {"before": len(old), "after": len(new)},
        }
        if not (report["appear"] or report["disappear"] or changed) and report["status"] == (
            "changed"
        ):
            report["status"] = "unchanged"
        totals["appear"] += len(report["appear"])
        totals["disappear"] += len(report["disappear"])
        totals["latestChanged"] += len(changed)
        views[name] = report
    return {"views": views, "totals": totals}


@dataclass(slots=True)
class Diff:
    """The dry run's report, and the mirror checks that would tell whether each changed
    location is really there (asked only with `diff --verify`)."""

    report: Report
    checks: dict[Check, list[Report]]  # a check -> the package records it answers

    def answer(self, lookup: Lookup) -> None:
        """Add each mirror's answer to the records it concerns, and count them per group, per
        view and in all. No answer (unreachable, or out of time) is `unknown`."""
        for check, records in self.checks.items():
            verdict = lookup(check)
            for record in records:
                record["mirror"] = verdict.result if verdict is not None else "unknown"
        total: Counter[str] = Counter()
        for view in self.report["views"].values():
            for group in view["packages"]:
                answers = Counter(r["mirror"] for r in group["packages"] if "mirror" in r)
                if answers:
                    group["mirror"] = {result: answers[result] for result in RESULTS}
                total.update(answers)
        self.report["mirror"] = {result: total[result] for result in RESULTS}


def diff_configs(
    current: FederationConfig, before: Snapshot, proposed: FederationConfig, after: Snapshot
) -> Diff:
    """What `proposed` would change, view by view, on the data `before` and `after` were built
    from (each built with its own config): servers, package locations and types, and which
    packages their mirror is asked about."""
    report = diff_snapshots(before, after)
    old_policies = {policy.name: policy for policy in view_policies(current)}
    new_policies = {policy.name: policy for policy in view_policies(proposed)}
    checks: dict[Check, list[Report]] = {}
    kinds: Counter[str] = Counter()
    for name, view in report["views"].items():
        view["packages"] = []
        old_catalog, new_catalog = before.views.get(name), after.views.get(name)
        if old_catalog is None or new_catalog is None:
            continue  # a view added or removed: its versions appear or disappear whole
        old_policy, new_policy = old_policies[name], new_policies[name]
        if package_types(old_policy) != package_types(new_policy):
            view["packageTypes"] = {
                "from": package_types(old_policy),
                "to": package_types(new_policy),
            }
        if old_policy.verify_mode != new_policy.verify_mode:
            view["verifyMode"] = {"from": old_policy.verify_mode, "to": new_policy.verify_mode}
        changes = view_packages(
            Side(old_catalog, old_policy, current.gateway.meta_namespace),
            Side(new_catalog, new_policy, proposed.gateway.meta_namespace),
        )
        ordered = sorted(changes.groups.items(), key=lambda kv: (-len(kv[1]), repr(kv[0])))
        view["packages"] = [group_report(key, records) for key, records in ordered]
        for key, records in ordered:
            kinds[key.change] += len(records)
        for check, records in changes.checks.items():
            checks.setdefault(check, []).extend(records)
        if view["status"] == "unchanged" and (
            view["packages"] or "packageTypes" in view or "verifyMode" in view
        ):
            view["status"] = "changed"
    report["packageTotals"] = {
        kind: kinds[kind] for kind in ("location", "removed", "added", "verification")
    }
    return Diff(report, checks)


# -- the report for a terminal -----------------------------------------------------------------


def _types_text(types: list[str] | None) -> str:
    return ", ".join(types) if types is not None else "every type"


def _mirror_text(answers: dict[str, int]) -> str:
    text = f"{answers['available']} available, {answers['missing']} missing"
    return text + (f", {answers['unknown']} unknown (unreachable)" if answers["unknown"] else "")


def _example(record: Report) -> str:
    location = record["to"] or record["from"] or {}
    where = location.get("identifier", "")
    answer = f"  [{record['mirror']}]" if "mirror" in record else ""
    return f"      {record['name']}@{record['version']}  {where}{answer}"


def _render_packages(view: Report) -> list[str]:
    lines = []
    if "packageTypes" in view:
        old, new = (_types_text(view["packageTypes"][side]) for side in ("from", "to"))
        lines.append(f"  package types: {old} -> {new}")
    if "verifyMode" in view:
        lines.append(f"  verify.mode: {view['verifyMode']['from']} -> {view['verifyMode']['to']}")
    for group in view["packages"]:
        lines.append(f"  * {group['summary']}")
        if "mirror" in group:
            lines.append(f"      mirror: {_mirror_text(group['mirror'])}")
        records = group["packages"]
        lines.extend(_example(record) for record in records[:EXAMPLES])
        if len(records) > EXAMPLES:
            lines.append(f"      ... and {len(records) - EXAMPLES} more (--json lists them all)")
    return lines


def render_text(report: Report) -> str:
    lines = []
    for name, view in report["views"].items():
        totals = view["totals"]
        head = f"view {name}: {view['status']}, {totals['before']} -> {totals['after']} versions"
        lines.append(head)
        lines.extend(f"  + {label}" for label in view["appear"])
        lines.extend(f"  - {label}" for label in view["disappear"])
        for change in view["latestChanged"]:
            old, new = change["from"] or "(none)", change["to"] or "(none)"
            lines.append(f"  ~ {change['name']}: latest {old} -> {new}")
        lines.extend(_render_packages(view))
    totals = report["totals"]
    lines.append(
        f"total: {totals['appear']} appear, {totals['disappear']} disappear, "
        f"{totals['latestChanged']} latest changed"
    )
    if "packageTotals" in report:
        kinds = report["packageTotals"]
        lines.append(
            f"packages: {kinds['location']} change location, {kinds['removed']} no longer "
            f"served, {kinds['added']} newly served, {kinds['verification']} change verification"
        )
    if "mirror" in report:
        lines.append(f"mirror checks of changed locations: {_mirror_text(report['mirror'])}")
    return "\n".join(lines)
