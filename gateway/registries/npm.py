"""npm: packages by name (`@scope/name`), from a registry given as `registryBaseUrl`.

A mirror is asked for the package's packument (the abbreviated form where it has one); `npx
--registry <mirror>` runs a version from it."""

from __future__ import annotations

import re
from urllib.parse import quote

import orjson

from gateway.errors import MirrorGarbled
from gateway.registries.base import SEMVER, Ask, Check, Index


class Npm(Index):
    name = "npm"
    public = "the public npm registry"
    public_hosts = frozenset({"registry.npmjs.org", "registry.npmjs.com"})
    identifier = re.compile(r"(@[A-Za-z0-9][A-Za-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*")
    osv = "npm"
    _exact = SEMVER  # `1.x`, `^1.2` and `1` are ranges to it
    _build_ignored = True
    _versions = "SemverVersion"  # node-semver orders SemVer 2.0

    def ask(self, check: Check) -> Ask:
        url = f"{check.location.rstrip('/')}/{quote(check.identifier, safe='@')}"
        accept = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
        return Ask(url, check.location, accept)

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MirrorGarbled("npm packument is not JSON") from None
        versions = document.get("versions") if isinstance(document, dict) else None
        if not isinstance(versions, dict):
            raise MirrorGarbled("npm packument without versions")
        return frozenset(versions)

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        at = f"{identifier}@{version}" if version else identifier
        return ["npx", "-y", *(["--registry", base] if base else []), at]


NPM = Npm()
