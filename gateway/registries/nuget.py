"""NuGet: packages by id (compared case-insensitively), from a v3 service index given as
`registryBaseUrl`.

A mirror is asked in two steps: its service index names the flat container
(`PackageBaseAddress`), which lists a package's versions. `dnx --add-source <mirror>` runs a
version from it."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from gateway.errors import MirrorGarbled
from gateway.registries.base import NUGET_VERSION, Ask, Check, Index


class Nuget(Index):
    name = "nuget"
    public = "nuget.org"
    public_hosts = frozenset({"api.nuget.org", "www.nuget.org"})
    identifier = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
    osv = "NuGet"
    _exact = NUGET_VERSION
    _build_ignored = True
    _versions = "NugetVersion"  # NuGet's SemVer: four numbers, labels in any case

    def osv_name(self, identifier: str) -> str:
        return identifier.lower()

    def same_version(self, wanted: str, offered: str) -> bool:
        # NuGet compares case-insensitively and ignores build metadata.
        return wanted.split("+")[0].lower() == offered.split("+")[0].lower()

    def cache_name(self, identifier: str) -> str:
        return identifier.lower()

    def service_index(self, check: Check) -> Ask:
        """The first step: the service index itself."""
        return Ask(check.location, check.location, "application/json")

    @staticmethod
    def flat_container(index: Any) -> str:
        """The flat container's base URL, from a service index document."""
        resources = index.get("resources") if isinstance(index, dict) else None
        if not isinstance(resources, list):
            raise MirrorGarbled("NuGet service index without resources")
        for resource in resources:
            if isinstance(resource, dict) and str(resource.get("@type", "")).startswith(
                "PackageBaseAddress"
            ):
                base = resource.get("@id")
                if isinstance(base, str):
                    return base
        raise MirrorGarbled("NuGet service index without a usable PackageBaseAddress")

    def ask_in(self, flat: str, check: Check) -> str:
        """The second step: the package's version list in the flat container."""
        return f"{flat.rstrip('/')}/{quote(check.identifier.lower())}/index.json"

    @staticmethod
    def listed(document: Any) -> frozenset[str]:
        versions = document.get("versions") if isinstance(document, dict) else None
        if not isinstance(versions, list):
            raise MirrorGarbled("NuGet flat container answer without versions")
        return frozenset(str(v) for v in versions)

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        at = f"{identifier}@{version}" if version else identifier
        return ["dnx", at, "--yes", *(["--add-source", base] if base else [])]


NUGET = Nuget()
