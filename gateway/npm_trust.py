"""npm registry signatures and provenance, read at the mirror each view installs from (see
`collecting` for what every ecosystem shares), kept for trust.yaml's `npm.ttl`.

The package document is the one the mirror check reads (the full form, for publish times).
Registry keys are trust.yaml's, and with `mirror_keys` those the mirror lists at
`/-/npm/v1/keys`. A version's attestations are fetched from the URL its document gives when
that is under the mirror or under a location trust.yaml names (`npm.attestations`), else from
the mirror's own `/-/npm/v1/attestations/<name>@<version>`.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from gateway.collecting import UNKNOWN_TTL, Collector, Part, Read
from gateway.errors import MirrorUnavailable
from gateway.receipts import integrity_digests
from gateway.registries.base import Check
from gateway.registries.npm import NPM
from gateway.signals import Dist, Job, Keys, Provenance, Signals, Signature
from gateway.trust_config import NpmSigning

if TYPE_CHECKING:
    from gateway.verify import Verifier

log = structlog.get_logger("gateway.npm_trust")

_MAX_KEYS = 64


class NpmSignals(Collector):
    """npm's signals of each (mirror, package, version) (see the module)."""

    def __init__(self, settings: NpmSigning, verifier: Verifier) -> None:
        super().__init__(verifier, settings.ttl, settings.signatures, settings.provenance,
                         bundle_bytes=settings.max_bundle)  # fmt: skip
        self.settings = settings
        self._pinned: Keys = {k.keyid: (base64.b64decode(k.key), k.expires) for k in settings.keys}
        self._keys: dict[str, tuple[Keys | MirrorUnavailable | None, float]] = {}

    async def read(self, check: Check, document: object, now: datetime) -> Signals | Read:
        found = _dist_of(document, check.version)
        if found is None:
            return self.absent(check, now)
        version, dist = found  # the mirror's spelling of the version: what it signed
        signature: tuple[Part, ...] = ()
        if self.settings.signatures:
            keys = await self._keys_for(check.location)
            if isinstance(keys, MirrorUnavailable) and dist.signatures:
                signature = (Signature("unknown", "the mirror's registry keys could not be read"),)
            else:
                listed = keys if not isinstance(keys, MirrorUnavailable) else None
                signature = (("signature", check.identifier, version, dist, listed),)
        provenance: tuple[Part, ...] = ()
        if self.settings.provenance:
            provenance = (await self._provenance_job(check, version, dist),)
        return Read(
            dist.integrity, signature, provenance, digests=integrity_digests(dist.integrity)
        )

    async def _provenance_job(self, check: Check, version: str, dist: Dist) -> Job | Provenance:
        """A provenance job for the helper, or the answer when none is needed."""
        if not dist.provenance:  # attestations without provenance (a publish attestation)
            return Provenance("absent", "the mirror lists no provenance")
        url = self._attestations_url(check, version, dist.attestations)
        under = self.allowed(url, check, [str(u) for u in self.settings.attestations])
        assert under is not None  # the mirror's own, or under a location trust.yaml names
        answer = await self.fetch(url, under, "application/json", self.settings.max_bundle)
        if isinstance(answer, MirrorUnavailable):
            return Provenance("unknown", f"attestations: {answer}")
        status, body = answer
        if status in (404, 410):
            why = "provenance is listed, but the mirror does not serve its attestations"
            return Provenance("present", why)
        if status != 200:
            return Provenance("unknown", f"attestations: HTTP {status}")
        root = self.settings.trusted_root
        assert root is not None  # provenance is collected only with one
        return ("provenance", body, check.identifier, version, dist.integrity, root,
                tuple(self.settings.issuers))  # fmt: skip

    def _attestations_url(self, check: Check, version: str, url: str | None) -> str:
        """The document's attestations URL where it is under a location the operator named,
        else the mirror's own."""
        if self.allowed(url, check, [str(u) for u in self.settings.attestations]) is not None:
            assert url is not None
            return url
        name = quote(check.identifier, safe="@")
        return f"{check.location.rstrip('/')}/-/npm/v1/attestations/{name}@{quote(version)}"

    async def _keys_for(self, location: str) -> Keys | MirrorUnavailable | None:
        """Pinned keys, and with `mirror_keys` the mirror's own (None: there are none)."""
        if not self.settings.mirror_keys:
            return self._pinned or None
        cached = self._keys.get(location)
        if cached is None or time.monotonic() >= cached[1]:
            listed: Keys | MirrorUnavailable | None
            try:
                listed = await self._listed(location)
                ttl = self.settings.ttl
            except MirrorUnavailable as exc:
                listed, ttl = exc, UNKNOWN_TTL
                log.warning("npm_keys_unreadable", location=location, reason=str(exc))
            cached = self._keys[location] = (listed, time.monotonic() + ttl)
        listed = cached[0]
        if isinstance(listed, MirrorUnavailable):
            return self._pinned or listed  # pinned keys still decide
        merged = {**(listed or {}), **self._pinned}
        return merged or None

    async def _listed(self, location: str) -> Keys | None:
        url = f"{location.rstrip('/')}/-/npm/v1/keys"
        async with self.verifier.semaphore:
            found: Keys | None = await self.verifier.json(url, location.rstrip("/") + "/", _keys_of)
        return found


def _dist_of(document: object, version: str) -> tuple[str, Dist] | None:
    """The version as the mirror spells it, and its dist facts (`1.2.3+build` is `1.2.3`,
    as the mirror check takes it)."""
    if not isinstance(document, dict):
        return None
    found = document.get(version)
    if isinstance(found, Dist):
        return version, found
    for spelled, dist in document.items():
        if isinstance(dist, Dist) and NPM.same_version(version, spelled):
            return spelled, dist
    return None


def _keys_of(document: object) -> Keys | None:
    """The ECDSA P-256 keys an npm keys endpoint lists (`{"keys": [{keyid, keytype, key,
    expires}]}`); others are skipped."""
    from gateway.trust_config import NpmKey

    items = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise MirrorUnavailable("the npm keys answer has no list of keys")
    keys: Keys = {}
    for item in items[:_MAX_KEYS]:
        if not isinstance(item, dict) or item.get("keytype") not in (None, "ecdsa-sha2-nistp256"):
            continue
        try:
            key = NpmKey.model_validate({k: item.get(k) for k in ("keyid", "key", "expires")})
        except ValueError:
            continue
        keys[key.keyid] = (base64.b64decode(key.key), key.expires)
    return keys or None
