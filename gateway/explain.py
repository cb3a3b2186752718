"""Why is this server (not) shown? Every version of a name, in every upstream and view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.config import FederationConfig
from gateway.entry import Entry, format_timestamp
from gateway.merge import Source, merge, owner_by_reservation
from gateway.semver import pick_latest
from gateway.view import Lookup, ViewPolicy, no_lookup

Report = dict[str, Any]


def _packages(server: dict[str, Any], metas: Sequence[dict[str, Any]]) -> list[Report]:
    """Each served package: its location now, the one it replaced, what the mirror said."""
    described = []
    for package, meta in zip(server.get("packages") or [], metas, strict=False):
        location = {k: package.get(k) for k in ("identifier", "registryBaseUrl") if k in package}
        described.append({**meta, "location": location})
    return described


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
    """A JSON-ready account of how each version of `name` fares in each view."""
    chosen = [p for p in policies if view is None or p.name == view]
    merged = merge(
        [Source(s.upstream, [e for e in s.entries if e.name == name], s.owns) for s in sources]
    )
    owner = merged.servers[name][0] if name in merged.servers else None
    reserved = owner_by_reservation(name, sources)
    served: dict[str, list[Entry]] = {p.name: [] for p in chosen}
    versions: list[Report] = []
    for source in sources:
        for entry in source.entries:
            if entry.name != name or (version is not None and entry.version != version):
                continue
            item: Report = {
                "upstream": source.upstream,
                "version": entry.version,
                "status": entry.status,
                "publishedAt": format_timestamp(entry.published_at),
            }
            if source.upstream != owner:
                item["shadowedBy"] = owner or reserved
                item["why"] = (
                    f"the name is reserved by upstream {reserved!r} (owns)"
                    if reserved is not None and reserved != source.upstream
                    else f"upstream {owner!r} comes first and has this name"
                )
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
                    served[policy.name].append(entry)
                item["views"][policy.name] = verdict
            versions.append(item)
    latest = {}
    for view_name, entries in served.items():
        best = pick_latest(e for e in entries if e.status != "deleted")
        latest[view_name] = best.version if best is not None else None
    for item in versions:
        for view_name, verdict in item.get("views", {}).items():
            verdict["isLatest"] = latest[view_name] == item["version"] and verdict["served"]
    return {
        "name": name,
        "version": version,
        "owner": owner,
        "reservedBy": reserved,
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
    if not report["versions"]:
        at = f" at version {report['version']}" if report["version"] else ""
        lines.append(f"  no upstream offers this name{at}")
    for item in report["versions"]:
        head = f"  {item['version']}  from {item['upstream']}  {item['status']}"
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
