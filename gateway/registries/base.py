"""What every ecosystem module provides, and the values the core and the shell share about a
package's location: a mirror check (`Check`), its answer (`Verdict`), a rewrite (`Rewritten`).

Pure: no I/O here or in any ecosystem module. The shell (`gateway.verify`) does the HTTP; an
ecosystem says which URL to ask and how to read the answer.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from univers.versions import Version

    from gateway.signals import Signals


Result = Literal["available", "missing", "unknown"]
Package = dict[str, Any]

# What a version must look like for a command to be shown (no URL, path or option as a
# "version"), and a location (a mirror may be plain http inside).
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*")
LOCATION = re.compile(r"https?://[^\s\"'<>\\^`|{}]+")
MAX_VERSION = 256  # characters of a version string compared at all
_IDS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
# SemVer 2.0 (npm, cargo; go with its `v`), NuGet's (up to four numbers)
SEMVER = re.compile(rf"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-{_IDS})?(?:\+{_IDS})?")
NUGET_VERSION = re.compile(rf"[0-9]+(?:\.[0-9]+){{1,3}}(?:-{_IDS})?(?:\+{_IDS})?")


@dataclass(frozen=True, slots=True)
class Check:
    """One question for a mirror: does `location` serve `identifier` at `version`?"""

    kind: str  # the registryType
    location: str  # index URL, OCI registry host, or the mcpb download URL
    identifier: str
    version: str


@dataclass(frozen=True, slots=True)
class Verdict:
    result: Result
    checked_at: datetime
    fresh: bool  # and, where signals are collected, they are fresh too
    signals: Signals | None = None  # npm signatures and provenance at that mirror
    until: float = math.inf  # `time.monotonic()` when it stops being fresh


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A package after the mirror rules, and what it was before."""

    package: Package
    original: dict[str, Any] | None  # the replaced location fields; None when not rewritten
    mirrored: bool


def unchanged(package: Package) -> Rewritten:
    return Rewritten(package, None, mirrored=False)


def location_of(package: Package, *keys: str) -> dict[str, Any]:
    """The location fields a rewrite replaces; None stands for "absent" (the public default)."""
    return {key: package.get(key) for key in keys}


@dataclass(frozen=True, slots=True)
class Ask:
    """The one GET that answers every version of a package (an index ecosystem's document)."""

    url: str
    under: str  # every request and redirect stays under this
    accept: str


def fits(pattern: re.Pattern[str], value: str) -> bool:
    """A value from upstream data that a shown command may carry: printable ASCII, whole."""
    return value.isascii() and value.isprintable() and pattern.fullmatch(value) is not None


class Ecosystem:
    """One registryType: how its packages are located, mirrored, checked and installed, and
    how its versions compare (for advisories' ranges)."""

    name: str
    public: str  # how a reader names its public registry ("the public npm registry")
    public_hosts: frozenset[str] = frozenset()  # hosts that are that public registry
    identifier: re.Pattern[str]  # what an identifier may look like in a shown command
    osv: str | None = None  # its name in OSV advisories, when OSV covers it
    _versions: str | None = None  # its tool's version order: a class of `univers.versions`
    # What a single version looks like to its tool: the order's library reads more (`1.x`,
    # `1`, `LATEST`), which the tool takes for a range or the newest, not one version.
    _exact: re.Pattern[str] | None = None
    _build_ignored = False  # SemVer's `+build` does not order (npm, cargo, nuget drop it)

    def order(self, version: str) -> Version | None:
        """The version as its tool orders it (comparable with `<`), or None when the tool
        would not read it as one version."""
        if self._versions is None or not version or len(version) > MAX_VERSION:
            return None
        if self._exact is not None and self._exact.fullmatch(version) is None:
            return None
        if self._build_ignored:
            version = version.partition("+")[0]
        try:
            return version_class(self._versions)(version)
        except Exception:
            return None

    def osv_name(self, identifier: str) -> str:
        """A package's name as OSV advisories are matched to it (the tool's own sameness)."""
        return identifier

    def check(self, package: Package) -> Check | None:
        """The mirror check for a package as served (after its rewrite), if it has one."""
        raise NotImplementedError

    def same_version(self, wanted: str, offered: str) -> bool:
        """Whether a mirror's version string is the one asked for, as the tool reads it."""
        return wanted == offered

    def cache_name(self, identifier: str) -> str:
        """The package as the mirror's cache knows it (one document answers every version)."""
        return identifier

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        """The command that runs (or fetches) the package from `base` (the mirror)."""
        raise NotImplementedError

    def command(self, package: Package) -> str | None:
        """The shell command for a served package; None when a field (from upstream data) is
        not one the command can carry safely. Values are shell-quoted where they need it."""
        argv = self.argv_of(package)
        return shlex.join(argv) if argv is not None else None

    def argv_of(self, package: Package) -> list[str] | None:
        """The command for a served package as words (what an IDE's mcp.json holds); None
        when a field (from upstream data) is not one the command can carry safely."""
        identifier = str(package.get("identifier", ""))
        version = str(package.get("version") or "")
        base = str(package.get("registryBaseUrl") or "")
        if not fits(self.identifier, identifier) or (base and not fits(LOCATION, base)):
            return None
        if version and (not fits(VERSION, version) or version == "latest"):
            return None
        return self.argv(identifier, version, base)


@functools.cache
def version_class(name: str) -> type[Version]:
    """A version order of `univers`, imported when first asked for: only advisories compare
    versions, and the library (a few MB) is not loaded where no feed is configured."""
    found: type[Version] = getattr(importlib.import_module("univers.versions"), name)
    return found


Rule = tuple[Callable[[str], bool], str]  # (does the identifier match, the mirror URL)


class Index(Ecosystem):
    """An ecosystem located by `registryBaseUrl`, a package index: mirrored by `match`/`url`
    rules, checked with one document that lists every version of a package."""

    def rewrite(self, package: Package, identifier: str, rules: list[Rule]) -> Rewritten:
        for matches, url in rules:
            if matches(identifier):
                original = location_of(package, "registryBaseUrl")
                return Rewritten({**package, "registryBaseUrl": url}, original, mirrored=True)
        return unchanged(package)

    def check(self, package: Package) -> Check | None:
        identifier = package.get("identifier")
        base, version = package.get("registryBaseUrl"), package.get("version")
        if isinstance(identifier, str) and isinstance(base, str) and isinstance(version, str):
            return Check(self.name, base, identifier, version)
        return None

    def ask(self, check: Check) -> Ask:
        """The request whose answer lists the package's versions."""
        raise NotImplementedError

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        """The versions a 200 answer lists; MirrorGarbled when it is not what the protocol says."""
        raise NotImplementedError
