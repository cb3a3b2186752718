"""Dry run: what a proposed config would change in each view, on the same upstream data.

Servers: versions that appear or disappear, servers whose latest version changes. Packages of
the versions a view serves both before and after: where each installs from (its location after
the mirror rewrite), packages the view stops or starts serving, and whether their mirror is
asked about them (`verify.mode`). Package changes are grouped by (registryType, from, to), so a
change that sends every package back to the public registries reads as a few lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.catalog import Item, ViewCatalog
from gateway.config import FederationConfig, MirrorSettings, redact_url
from gateway.registries import ECOSYSTEMS, check_for
from gateway.registries.base import Check
from gateway.registries.oci import OciReference
from gateway.snapshot import Snapshot, view_policies
from gateway.view import Lookup, ViewPolicy

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


# -- where packages install from ---------------------------------------------------------------


def _url_label(url: str) -> str:
    """A location URL as a reader names it: host and path, no scheme, no credentials."""
    parts = urlsplit(redact_url(url.removeprefix("sparse+")))
    return f"{parts.netloc}{parts.path}".rstrip("/") or url


def _oci_base(location: dict[str, Any], mirrors: MirrorSettings) -> str:
    identifier = str(location.get("identifier"))
    base = location.get("registryBaseUrl")
    if isinstance(base, str) and base:  # the 2025-09 form: the registry in registryBaseUrl
        host = urlsplit(base).hostname or base
        return _OCI_PUBLIC.get(host, host)
    for prefix in sorted((mirrors.oci or {}).values(), key=len, reverse=True):
        if identifier.startswith(prefix + "/"):
            return prefix
    reference = OciReference.parse(identifier)
    host = reference.host if reference is not None else identifier.partition("/")[0]
    return _OCI_PUBLIC.get(host, host)


def _mcpb_base(location: dict[str, Any], mirrors: MirrorSettings) -> str:
    url = str(location.get("identifier"))
    for prefix in sorted((mirrors.mcpb or {}).values(), key=len, reverse=True):
        if url.startswith(prefix.rstrip("/") + "/"):
            return _url_label(prefix)
    return urlsplit(url).hostname or url


def location_base(registry_type: str, location: dict[str, Any], mirrors: MirrorSettings) -> str:
    """Where a package installs from, as a reader names it: a mirror by its configured host
    and path, a public registry by its usual name (the ecosystem's own when no URL is given)."""
    if registry_type == "oci":
        return _oci_base(location, mirrors)
    if registry_type == "mcpb":
        return _mcpb_base(location, mirrors)
    url = location.get("registryBaseUrl")
    ecosystem = ECOSYSTEMS.get(registry_type)
    public = ecosystem.public if ecosystem else f"the public {registry_type} registry"
    if not isinstance(url, str) or not url:
        return public
    host = urlsplit(url.removeprefix("sparse+")).hostname or ""
    return public if ecosystem and host in ecosystem.public_hosts else _url_label(url)


@dataclass(frozen=True, slots=True)
class Served:
    """One package of a served version, as a view serves it."""

    registry_type: str
    package: dict[str, Any]  # as served
    upstream: dict[str, Any]  # as the upstream sent it: the replaced location fields restored
    mirrored: bool

    @property
    def location(self) -> dict[str, Any]:
        return {key: self.package[key] for key in LOCATION_KEYS if key in self.package}


@dataclass(frozen=True, slots=True)
class Side:
    """One view under one config: what it serves, and the settings that shaped it."""

    catalog: ViewCatalog
    policy: ViewPolicy
    namespace: str  # the gateway's `_meta` key, which holds each package's original location

    def packages(self, item: Item) -> dict[tuple[str, ...], Served]:
        """The item's packages as served, keyed by what the upstream sent (so the same package
        pairs up whatever location each config gives it)."""
        document = orjson.loads(self.catalog.body(item))
        packages = (document.get("server") or {}).get("packages")
        if not isinstance(packages, list):
            return {}
        gateway_meta = (document.get("_meta") or {}).get(self.namespace) or {}
        metas = gateway_meta.get("packages") or []  # parallel to packages, when any was rewritten
        found: dict[tuple[str, ...], Served] = {}
        for index, package in enumerate(packages):
            if not isinstance(package, dict):
                continue
            meta = metas[index] if index < len(metas) and isinstance(metas[index], dict) else {}
            original = meta.get("original")
            upstream = dict(package)
            if isinstance(original, dict):
                for key, value in original.items():
                    if value is None:  # the field was absent upstream
                        upstream.pop(key, None)
                    else:
                        upstream[key] = value
            registry_type = str(package.get("registryType"))
            named = (registry_type, *(str(upstream.get(k)) for k in (*LOCATION_KEYS, "version")))
            key, repeat = named, 0
            while key in found:  # the same package twice (another transport): pair in order
                repeat += 1
                key = (*named, str(repeat))
            found[key] = Served(registry_type, package, upstream, isinstance(original, dict))
        return found

    def mode(self, served: Served) -> str:
        """The verification a package gets: only mirrored locations are ever checked."""
        return self.policy.verify_mode if served.mirrored else "off"

    def base(self, served: Served) -> str:
        return location_base(served.registry_type, served.location, self.policy.mirrors.settings)

    def why_not(self, upstream: dict[str, Any]) -> str:
        """Why this view does not serve a package of a version it serves."""
        registry_type = str(upstream.get("registryType"))
        types = self.policy.types
        if types is not None and registry_type not in types:
            return "packages.types"
        mirrors = self.policy.mirrors
        if mirrors.settings.unmirrored != "keep" and not mirrors.rewrite(upstream).mirrored:
            return "unmirrored"
        return "not served"


def _types(policy: ViewPolicy) -> list[str] | None:
    return sorted(policy.types) if policy.types is not None else None


@dataclass(frozen=True, slots=True)
class GroupKey:
    """What the packages of one summary line share."""

    change: str  # location | removed | added | verification
    registry_type: str
    source: str | None  # where they installed from (None: not served)
    target: str | None  # where they would install from (None: not served)
    reason: str | None = None  # removed / added: packages.types | unmirrored | not served
    modes: tuple[str, str] | None = None  # verification: verify.mode before, after


def _count(count: int, registry_type: str) -> str:
    return f"{count} {registry_type} package{'' if count == 1 else 's'}"


def _verification_text(modes: tuple[str, str]) -> str:
    old, new = modes
    if new == "off":
        return f"would no longer be checked against their mirror (verify.mode {old} -> off)"
    if old == "off":
        return f"would be checked against their mirror (verify.mode off -> {new})"
    return f"would be checked with verify.mode {new} instead of {old}"


def summary(key: GroupKey, count: int) -> str:
    """The one line a reviewer reads for a group of package changes."""
    what, kind = _count(count, key.registry_type), key.registry_type
    if key.change == "location":
        return f"{what} would install from {key.target} instead of {key.source}"
    if key.change == "verification":
        assert key.modes is not None
        return f"{what} from {key.target} {_verification_text(key.modes)}"
    if key.change == "removed":
        why = {
            "packages.types": f" ({kind} is not among the view's packages.types)",
            "unmirrored": " (no mirror covers them, and unmirrored drops them)",
        }.get(str(key.reason), "")
        return f"{what} from {key.source} would no longer be served{why}"
    why = {
        "packages.types": f" ({kind} joins the view's packages.types)",
        "unmirrored": " (a mirror now covers them)",
    }.get(str(key.reason), "")
    return f"{what} would start being served, from {key.target}{why}"


@dataclass(slots=True)
class _Changes:
    """The package changes of one view, grouped, and the mirror checks they call for."""

    groups: dict[GroupKey, list[Report]] = field(default_factory=dict)
    checks: dict[Check, list[Report]] = field(default_factory=dict)

    def add(self, key: GroupKey, record: Report, after: Served | None) -> None:
        self.groups.setdefault(key, []).append(record)
        check = check_for(after.package) if after is not None and after.mirrored else None
        if check is not None:  # only locations a proposed mirror rule produced are asked about
            self.checks.setdefault(check, []).append(record)


def _spelled(served: Served) -> str:
    location = served.location
    return redact_url(str(location.get("registryBaseUrl") or location.get("identifier")))


def _compare(was_item: Item, item: Item, before: Side, after: Side, changes: _Changes) -> None:
    old, new = before.packages(was_item), after.packages(item)
    head = {"name": item.name, "version": item.version}
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key), new.get(key)
        if was is not None and now is not None:
            modes = (before.mode(was), after.mode(now))
            record = {
                **head,
                "from": was.location,
                "to": now.location,
                "verification": {"from": modes[0], "to": modes[1]},
            }
            if was.location != now.location:
                source, target = before.base(was), after.base(now)
                if source == target:  # e.g. http -> https: name the locations in full
                    source, target = _spelled(was), _spelled(now)
                group = GroupKey("location", now.registry_type, source, target)
            elif modes[0] != modes[1]:
                group = GroupKey(
                    "verification", now.registry_type, before.base(was), after.base(now),
                    modes=modes,
                )  # fmt: skip
            else:
                continue
            changes.add(group, record, now)
        elif was is not None:
            reason = after.why_not(was.upstream)
            group = GroupKey("removed", was.registry_type, before.base(was), None, reason)
            changes.add(group, {**head, "from": was.location, "to": None}, None)
        elif now is not None:
            reason = before.why_not(now.upstream)
            group = GroupKey("added", now.registry_type, None, after.base(now), reason)
            changes.add(group, {**head, "from": None, "to": now.location}, now)


def _view_packages(before: Side, after: Side) -> _Changes:
    changes = _Changes()
    same_mode = before.policy.verify_mode == after.policy.verify_mode
    later = {item.key: item for item in after.catalog.active.items}
    for item in before.catalog.active.items:
        other = later.get(item.key)
        if other is None:
            continue
        if same_mode and before.catalog.body(item) == after.catalog.body(other):
            continue  # served alike, byte for byte: the same packages in the same places
        _compare(item, other, before, after, changes)
    return changes


def _group_report(key: GroupKey, records: list[Report]) -> Report:
    group: Report = {
        "change": key.change,
        "registryType": key.registry_type,
        "from": key.source,
        "to": key.target,
    }
    if key.reason is not None:
        group["reason"] = key.reason
    if key.modes is not None:
        group["verifyMode"] = {"from": key.modes[0], "to": key.modes[1]}
    group["count"] = len(records)
    group["summary"] = summary(key, len(records))
    group["packages"] = records
    return group


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
        if _types(old_policy) != _types(new_policy):
            view["packageTypes"] = {"from": _types(old_policy), "to": _types(new_policy)}
        if old_policy.verify_mode != new_policy.verify_mode:
            view["verifyMode"] = {"from": old_policy.verify_mode, "to": new_policy.verify_mode}
        changes = _view_packages(
            Side(old_catalog, old_policy, current.gateway.meta_namespace),
            Side(new_catalog, new_policy, proposed.gateway.meta_namespace),
        )
        ordered = sorted(changes.groups.items(), key=lambda kv: (-len(kv[1]), repr(kv[0])))
        view["packages"] = [_group_report(key, records) for key, records in ordered]
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
