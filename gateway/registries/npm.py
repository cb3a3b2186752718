"""npm: packages by name (`@scope/name`), from a registry given as `registryBaseUrl`.

A mirror is asked for the package's packument (the abbreviated form where it has one); `npx
--registry <mirror>` runs a version from it."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote

import orjson

from gateway.errors import MirrorGarbled
from gateway.registries.base import SEMVER, Ask, Check, Index
from gateway.signals import Dist

_MAX_SIGNATURES = 8  # per version: a real one has one or two


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
        return frozenset(_versions(body))

    def full(self, check: Check) -> Ask:
        """The full package document (its `time` says when each version was published: what
        a registry key's expiry is compared with)."""
        return Ask(self.ask(check).url, check.location, "application/json")

    def dists(self, body: bytes, content_type: str, check: Check) -> dict[str, Dist]:
        """Each version's `dist` facts, read from the package document's root (Artifactory
        strips signatures from its per-version documents)."""
        document, versions = _document(body)
        times = document.get("time")
        times = times if isinstance(times, dict) else {}
        return {version: _dist(facts, times.get(version)) for version, facts in versions.items()}

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        at = f"{identifier}@{version}" if version else identifier
        return ["npx", "-y", *(["--registry", base] if base else []), at]


def _document(body: bytes) -> tuple[dict[str, object], dict[str, object]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MirrorGarbled("npm packument is not JSON") from None
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, dict):
        raise MirrorGarbled("npm packument without versions")
    return document, versions


def _versions(body: bytes) -> dict[str, object]:
    return _document(body)[1]


def _text(value: object, limit: int = 4096) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _dist(facts: object, published: object) -> Dist:
    """One version's dist facts; anything of the wrong shape is as if absent."""
    dist = facts.get("dist") if isinstance(facts, dict) else None
    dist = dist if isinstance(dist, dict) else {}
    found = dist.get("signatures")
    signatures = tuple(
        (keyid, sig)
        for item in (found[:_MAX_SIGNATURES] if isinstance(found, list) else ())
        if isinstance(item, dict)
        and (keyid := _text(item.get("keyid"), 256)) and (sig := _text(item.get("sig"), 1024))
    )  # fmt: skip
    attestations = dist.get("attestations")
    attestations = attestations if isinstance(attestations, dict) else {}
    provenance = attestations.get("provenance")
    when = None
    if isinstance(published, str) and len(published) <= 64:
        try:
            when = datetime.fromisoformat(published.replace("Z", "+00:00"))
        except ValueError:
            when = None
        when = when if when is not None and when.tzinfo is not None else None
    return Dist(
        _text(dist.get("integrity"), 1024),
        signatures,
        _text(attestations.get("url")),
        isinstance(provenance, dict),
        when,
    )


NPM = Npm()
