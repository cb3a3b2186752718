"""Where each package installs from, compared between two configs on the same data: the
package part of `diff`.

Per view, for the versions served both before and after: each package's location after the
mirror rewrite (a mirror named by its configured host and path, a public registry by its
usual name), packages the view stops or starts serving (`packages.types`, `unmirrored`), and
whether their mirror is asked about them (`verify.mode`); grouped by (change, registryType,
from, to), so a change that sends every package back to the public registries reads as a
few lines. Each group and each package record is a frozen value that writes itself as
the `--json` report shows it (`to_json`); a mirror's answers make new records, never edit one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.catalog import Item, ViewCatalog
from gateway.config import MirrorSettings, redact_url
from gateway.registries import ECOSYSTEMS, check_for
from gateway.registries.base import Check, Result
from gateway.registries.oci import OciReference
from gateway.view import ViewPolicy

Location = Mapping[str, object]  # a package's location fields, valued as the upstream sent them

LOCATION_KEYS = ("identifier", "registryBaseUrl")  # what a mirror rewrite may change

_OCI_PUBLIC = {"docker.io": ECOSYSTEMS["oci"].public}


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


def package_types(policy: ViewPolicy) -> tuple[str, ...] | None:
    return tuple(sorted(policy.types)) if policy.types is not None else None


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


# -- the package part of the report: values, each written as `--json` shows it ----------------


def _location_json(location: Location | None) -> dict[str, object] | None:
    return dict(location) if location is not None else None


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A verify.mode before and after: a view's setting, or the check one package gets."""

    before: str
    after: str

    def to_json(self) -> dict[str, object]:
        return {"from": self.before, "to": self.after}


@dataclass(frozen=True, slots=True)
class MirrorAnswers:
    """What mirrors answered about a set of changed locations; no answer counts as unknown."""

    available: int
    missing: int
    unknown: int

    @classmethod
    def count(cls, results: Iterable[Result]) -> MirrorAnswers:
        counted = Counter(results)
        return cls(counted["available"], counted["missing"], counted["unknown"])

    def to_json(self) -> dict[str, object]:
        return {"available": self.available, "missing": self.missing, "unknown": self.unknown}


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """One package of a served version whose location, serving or verification would change."""

    name: str
    version: str
    source: Location | None  # where it installs from (None: not served)
    target: Location | None  # where it would install from (None: not served)
    verification: ModeChange | None = None  # served before and after: the check each gets
    # The question for the proposed mirror whose rule produced `target` (None: no such mirror).
    # Not reported: it is how `diff --verify` finds the records an answer concerns.
    check: Check | None = None
    mirror: Result | None = None  # that mirror's answer, once asked

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            "name": self.name,
            "version": self.version,
            "from": _location_json(self.source),
            "to": _location_json(self.target),
        }
        if self.verification is not None:
            record["verification"] = self.verification.to_json()
        if self.mirror is not None:
            record["mirror"] = self.mirror
        return record


@dataclass(frozen=True, slots=True)
class PackageGroup:
    """The package changes one summary line tells, and each package it stands for."""

    key: GroupKey
    packages: tuple[PackageRecord, ...]
    mirror: MirrorAnswers | None = None  # once any of its packages was asked about

    @property
    def summary(self) -> str:
        return summary(self.key, len(self.packages))

    def answered(self, results: Mapping[Check, Result]) -> PackageGroup:
        """The group with each asked-about package's answer (`unknown` when `results` has
        none for it), and their count."""
        packages = tuple(
            replace(record, mirror=results.get(record.check, "unknown"))
            if record.check is not None
            else record
            for record in self.packages
        )
        asked = [record.mirror for record in packages if record.mirror is not None]
        return replace(
            self, packages=packages, mirror=MirrorAnswers.count(asked) if asked else None
        )

    def to_json(self) -> dict[str, object]:
        key = self.key
        group: dict[str, object] = {
            "change": key.change,
            "registryType": key.registry_type,
            "from": key.source,
            "to": key.target,
        }
        if key.reason is not None:
            group["reason"] = key.reason
        if key.modes is not None:
            group["verifyMode"] = ModeChange(*key.modes).to_json()
        group["count"] = len(self.packages)
        group["summary"] = self.summary
        group["packages"] = [record.to_json() for record in self.packages]
        if self.mirror is not None:
            group["mirror"] = self.mirror.to_json()
        return group


# -- comparing one view's packages -------------------------------------------------------------


def _check(after: Served) -> Check | None:
    """Only locations a proposed mirror rule produced are asked about."""
    return check_for(after.package) if after.mirrored else None


def _spelled(served: Served) -> str:
    location = served.location
    return redact_url(str(location.get("registryBaseUrl") or location.get("identifier")))


Groups = dict[GroupKey, list[PackageRecord]]


def _compare(was_item: Item, item: Item, before: Side, after: Side, groups: Groups) -> None:
    old, new = before.packages(was_item), after.packages(item)
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key), new.get(key)
        if was is not None and now is not None:
            modes = (before.mode(was), after.mode(now))
            record = PackageRecord(
                item.name, item.version, was.location, now.location, ModeChange(*modes), _check(now)
            )
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
        elif was is not None:
            reason = after.why_not(was.upstream)
            group = GroupKey("removed", was.registry_type, before.base(was), None, reason)
            record = PackageRecord(item.name, item.version, was.location, None)
        else:
            assert now is not None  # every key is one of old's or new's
            reason = before.why_not(now.upstream)
            group = GroupKey("added", now.registry_type, None, after.base(now), reason)
            record = PackageRecord(item.name, item.version, None, now.location, check=_check(now))
        groups.setdefault(group, []).append(record)


def view_packages(before: Side, after: Side) -> tuple[PackageGroup, ...]:
    """The package changes of one view served under both configs, largest group first."""
    groups: Groups = {}
    same_mode = before.policy.verify_mode == after.policy.verify_mode
    later = {item.key: item for item in after.catalog.active.items}
    for item in before.catalog.active.items:
        other = later.get(item.key)
        if other is None:
            continue
        if same_mode and before.catalog.body(item) == after.catalog.body(other):
            continue  # served alike, byte for byte: the same packages in the same places
        _compare(item, other, before, after, groups)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), repr(kv[0])))
    return tuple(PackageGroup(key, tuple(records)) for key, records in ordered)
