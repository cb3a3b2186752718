"""Rewrite package locations to the enterprise's mirrors: a view's rules, compiled, applied
by each ecosystem's own rewrite (`gateway.registries`).

Only location fields change: `registryBaseUrl` (the package indexes: npm, pypi, nuget, cargo,
go, maven), the registry host inside an OCI `identifier`, the download URL of an mcpb bundle. A
server's name, its remotes and every other field stay as the upstream sent them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from gateway.config import MirrorRule, MirrorSettings
from gateway.registries import INDEXES
from gateway.registries.base import Rewritten, Rule, unchanged
from gateway.registries.mcpb import MCPB
from gateway.registries.oci import OCI, canonical_host


def _glob(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None:
        return lambda _: True
    compiled = re.compile(translate(pattern))
    return lambda text: compiled.match(text) is not None


class Mirrors:
    """Compiled mirror rules for one view."""

    def __init__(self, settings: MirrorSettings) -> None:
        self.settings = settings
        self._indexes: dict[str, list[Rule]] = {}
        for name in INDEXES:
            rules: list[MirrorRule] | None = getattr(settings, name)
            self._indexes[name] = [(_glob(r.match), r.url) for r in rules or ()]
        self._oci = {canonical_host(host): prefix for host, prefix in (settings.oci or {}).items()}
        # Longest prefix first, so a specific rule wins over a general one.
        self._mcpb = sorted((settings.mcpb or {}).items(), key=lambda kv: -len(kv[0]))

    @property
    def configured(self) -> bool:
        return bool(any(self._indexes.values()) or self._oci or self._mcpb)

    def rewrite(self, package: dict[str, Any]) -> Rewritten:
        """Apply the first matching rule of the package's type; unmatched packages pass as is."""
        registry_type = package.get("registryType")
        identifier = package.get("identifier")
        if not isinstance(identifier, str):
            return unchanged(package)
        index = INDEXES.get(str(registry_type))
        if index is not None:
            return index.rewrite(package, identifier, self._indexes[index.name])
        if registry_type == "oci":
            return OCI.rewrite(package, identifier, self._oci)
        if registry_type == "mcpb":
            return MCPB.rewrite(package, identifier, self._mcpb)
        return unchanged(package)


@dataclass(frozen=True, slots=True)
class ServerRewrite:
    """A server's packages after mirroring: what to serve, and what each package replaced."""

    packages: list[Any]  # rewritten packages, and what was not a package object, as sent
    originals: list[dict[str, Any] | None]  # parallel to packages
    dropped: list[str]  # registryTypes dropped as unmirrored
    drop_server: bool


def rewrite_packages(mirrors: Mirrors, packages: list[Any]) -> ServerRewrite:
    """Rewrite every package of a server, applying `unmirrored` to those no rule covers."""
    mode = mirrors.settings.unmirrored
    kept: list[Any] = []
    originals: list[dict[str, Any] | None] = []
    dropped: list[str] = []
    for package in packages:
        if not isinstance(package, dict):
            kept.append(package)
            originals.append(None)
            continue
        result = mirrors.rewrite(package)
        if not result.mirrored and mode != "keep":
            if mode == "drop-server":
                return ServerRewrite([], [], [str(package.get("registryType"))], drop_server=True)
            dropped.append(str(package.get("registryType")))
            continue
        kept.append(result.package)
        originals.append(result.original)
    return ServerRewrite(kept, originals, dropped, drop_server=False)
