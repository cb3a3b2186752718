"""Why is this server (not) shown? Every version of a name, in every upstream and view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.config import FederationConfig
from gateway.entry import Entry, format_timestamp
from gateway.merge import Shadow, Source, merge, owner_by_reservation
from gateway.names import identity
from gateway.semver import pick_latest
from gateway.shaping import Lookup, no_lookup
from gateway.view import ViewPolicy

Report = dict[str, Any]


def _packages(server: dict[str, Any], metas: Sequence[dict[str, Any]]) -> list[Report]:
    """Each served package: its location now, the one it replaced, what the mirror said."""
    described = []
    for package, meta in zip(server.get("packages") or [], metas, strict=False):
        location = {k: package.get(k) for k in ("identifier", "registryBaseUrl") if k in package}
        described.append({**meta, "location": location})
    return described


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
) -> Report:
    """A JSON-ready account of how each version of `name`, and of every look-alike of it
    (any name with the same identity), fares in each view."""
    chosen = [p for p in policies if view is None or p.name == view]
    wanted = identity(name)
    relevant = [
        Source(s.upstream, [e for e in s.entries if e.identity == wanted], s.owns) for s in sources
    ]
    merged = merge(relevant)
    owner = merged.owners.get(wanted)
    reserved = owner_by_reservation(wanted, sources)
    shadows = {(s.upstream, s.name): s for s in merged.shadowed.get(wanted, [])}
    served: dict[tuple[str, str], list[Entry]] = {}  # (view, name) -> served versions
    versions: list[Report] = []
    for source in relevant:
        for entry in source.entries:
            if version is not None and entry.version != version:
                continue
            item: Report = {
                "upstream": source.upstream,
                "version": entry.version,
                "status": entry.status,
                "publishedAt": format_timestamp(entry.published_at),
            }
            if entry.name != name:
                item["name"] = entry.name  # a look-alike spelling of the name asked for
            shadow = shadows.get((source.upstream, entry.name))
            if shadow is not None:
                item["shadowedBy"] = shadow.by
                item["why"] = _why(shadow)
                if shadow.spelled is not None:
                    item["lookalikeOf"] = shadow.spelled
                versions.append(item)
                continue
            item["views"] = {}
            for policy in chosen:
                decision = policy.decide(source.upstream, entry, now, lookup)
                verdict: Report = {"served": decision.served, "reason": decision.reason}
                verdict["rules"] = list(decision.rules)
                if decision.held_until is not None:
                    verdict["cooldownEndsAt"] = format_timestamp(decision.held_until)
                if decision.removed_types:
                    verdict["removedPackages"] = list(decision.removed_types)
                if decision.server is not None and decision.packages:
                    verdict["packages"] = _packages(decision.server, decision.packages)
                if decision.served:
                    served.setdefault((policy.name, entry.name), []).append(entry)
                item["views"][policy.name] = verdict
            versions.append(item)
    latest = {}
    for key, entries in served.items():
        best = pick_latest(e for e in entries if e.status != "deleted")
        latest[key] = best.version if best is not None else None
    for item in versions:
        for view_name, verdict in item.get("views", {}).items():
            key = (view_name, item.get("name", name))
            verdict["isLatest"] = latest.get(key) == item["version"] and verdict["served"]
    return {
        "name": name,
        "identity": wanted,
        "version": version,
        "owner": owner,
        "reservedBy": reserved,
        "lookalikes": merged.lookalikes(wanted),
        "views": [p.name for p in chosen],
        "versions": versions,
        "config": str(config.directory),
    }


def render_text(report: Report) -> str:
    """The report for a terminal."""
    lines = [report["name"]]
    owner = report["owner"] or "(no upstream serves it)"
    reserved = f", reserved by {report['reservedBy']}" if report["reservedBy"] else ""
    lines.append(f"  owner: {owner}{reserved}")
    if report["lookalikes"]:
        names = ", ".join(report["lookalikes"])
        lines.append(f"  LOOK-ALIKES served side by side by {owner}: {names}")
    if not report["versions"]:
        at = f" at version {report['version']}" if report["version"] else ""
        lines.append(f"  no upstream offers this name{at}")
    for item in report["versions"]:
        spelled = f"{item['name']}  " if "name" in item else ""
        head = f"  {spelled}{item['version']}  from {item['upstream']}  {item['status']}"
        lines.append(f"{head}  published {item['publishedAt']}")
        if "shadowedBy" in item:
            lines.append(f"      shadowed: {item['why']}")
            continue
        for view_name, verdict in item["views"].items():
            state = "SERVED" if verdict["served"] else "hidden"
            if verdict.get("isLatest"):
                state += " (latest)"
            detail = ", ".join(verdict["rules"])
            if verdict["reason"] == "cooldown":
                detail += f"; cooldown until {verdict['cooldownEndsAt']}"
            elif verdict["reason"] == "denied":
                detail = f"denied by {verdict['rules'][-1]}"
            elif verdict["reason"] == "not installable":
                detail += "; no packages or remotes left"
            if verdict.get("removedPackages"):
                detail += f"; removed packages: {', '.join(verdict['removedPackages'])}"
            lines.append(f"      {view_name:<16} {state:<16} {detail}")
            for package in verdict.get("packages", []):
                now_at = " ".join(str(v) for v in package["location"].values())
                was = " ".join(str(v) for v in (package.get("original") or {}).values())
                check = package.get("verification", "not verified")
                lines.append(
                    f"          {package['registryType']}: {now_at} (was: {was}) [{check}]"
                )
    return "\n".join(lines)
