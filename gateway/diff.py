"""Dry run: what a proposed config would change in each view, on the same upstream data."""

from __future__ import annotations

from typing import Any

from gateway.catalog import ViewCatalog
from gateway.snapshot import Snapshot

Report = dict[str, Any]


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
    totals = report["totals"]
    lines.append(
        f"total: {totals['appear']} appear, {totals['disappear']} disappear, "
        f"{totals['latestChanged']} latest changed"
    )
    return "\n".join(lines)
