"""Rewrite package locations to the enterprise's mirrors: one small function per registryType.

Only location fields change: `registryBaseUrl` (npm, pypi, nuget, cargo), the registry host
inside an OCI `identifier`, the download URL of an mcpb bundle. A server's name, its remotes and
every other field stay as the upstream sent them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import translate
from typing import Any
from urllib.parse import urlsplit

from gateway import registry_types
from gateway.config import MirrorRule, MirrorSettings
from gateway.locations import within

INDEX_TYPES = registry_types.INDEX
DOCKER_HUB = "docker.io"
_DOCKER_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_OCI_PATH = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")


@dataclass(frozen=True, slots=True)
class OciReference:
    """An image reference split into registry host, repository path, and `:tag` / `@digest`."""

    host: str
    repository: str
    suffix: str  # ":1.2.0", "@sha256:...", or "" (docker's implied :latest)

    @classmethod
    def parse(cls, identifier: str) -> OciReference | None:
        first, slash, rest = identifier.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:
            host, path = DOCKER_HUB, identifier
        if host in _DOCKER_ALIASES:
            host = DOCKER_HUB
        digest_at = path.find("@")
        if digest_at >= 0:
            repository, suffix = path[:digest_at], path[digest_at:]
        else:
            colon = path.rfind(":")
            repository, suffix = (path[:colon], path[colon:]) if colon > 0 else (path, "")
        if host == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"  # official images, as every Hub proxy expects
        if not _OCI_PATH.fullmatch(repository):
            return None
        return cls(host, repository, suffix)

    @property
    def reference(self) -> str:
        """The tag or digest a registry resolves (`latest` when none is given)."""
        return self.suffix[1:] if self.suffix else "latest"


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A package after the mirror rules, and what it was before."""

    package: dict[str, Any]
    original: dict[str, Any] | None  # the replaced location fields; None when not rewritten
    mirrored: bool


def _glob(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None:
        return lambda _: True
    compiled = re.compile(translate(pattern))
    return lambda text: compiled.match(text) is not None


def _mcpb_target(identifier: str, prefixes: list[tuple[str, str]]) -> str | None:
    """The mirrored download URL, or None. The rest of the URL comes from upstream data:
    decoded as a server would (`%2e%2e`, `..%2f`...), it may not climb out of the mirror's
    prefix; then no rule covers the package, and `unmirrored` applies."""
    for source, target in prefixes:
        if identifier.startswith(source) and within(identifier, source):
            rest = identifier[len(source) :]
            mirrored = target.rstrip("/") + "/" + rest.lstrip("/")
            return mirrored if within(mirrored, target) else None
    return None


def _location(package: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The location fields a rewrite replaces; None stands for "absent" (the public default)."""
    return {key: package.get(key) for key in keys}


class Mirrors:
    """Compiled mirror rules for one view."""

    def __init__(self, settings: MirrorSettings) -> None:
        self.settings = settings
        self._indexes: dict[str, list[tuple[Callable[[str], bool], str]]] = {}
        for registry_type in INDEX_TYPES:
            rules: list[MirrorRule] | None = getattr(settings, registry_type)
            self._indexes[registry_type] = [(_glob(r.match), r.url) for r in rules or ()]
        self._oci = {
            (DOCKER_HUB if host in _DOCKER_ALIASES else host): prefix
            for host, prefix in (settings.oci or {}).items()
        }
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
            return Rewritten(package, None, mirrored=False)
        if registry_type in INDEX_TYPES:
            for matches, url in self._indexes[str(registry_type)]:
                if matches(identifier):
                    original = _location(package, "registryBaseUrl")
                    return Rewritten({**package, "registryBaseUrl": url}, original, mirrored=True)
        elif registry_type == "oci":
            return self._rewrite_oci(package, identifier)
        elif registry_type == "mcpb":
            target = _mcpb_target(identifier, self._mcpb)
            if target is not None:
                original = _location(package, "identifier")
                return Rewritten({**package, "identifier": target}, original, mirrored=True)
        return Rewritten(package, None, mirrored=False)

    def _rewrite_oci(self, package: dict[str, Any], identifier: str) -> Rewritten:
        base = package.get("registryBaseUrl")
        candidate = identifier
        if isinstance(base, str) and base:  # the 2025-09 form: registry in registryBaseUrl
            host = urlsplit(base).netloc or base
            candidate = f"{host}/{identifier}"
            version = package.get("version")
            if ":" not in identifier.rpartition("/")[2] and "@" not in identifier and version:
                candidate += f":{version}"
        reference = OciReference.parse(candidate)
        if reference is None or reference.host not in self._oci:
            return Rewritten(package, None, mirrored=False)
        target = f"{self._oci[reference.host]}/{reference.repository}{reference.suffix}"
        rewritten = {k: v for k, v in package.items() if k != "registryBaseUrl"}
        rewritten["identifier"] = target
        keys = (
            ("identifier", "registryBaseUrl") if "registryBaseUrl" in package else ("identifier",)
        )
        return Rewritten(rewritten, _location(package, *keys), mirrored=True)


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
