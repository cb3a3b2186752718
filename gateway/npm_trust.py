"""npm registry signatures and provenance, read at the mirror each view installs from: once
per (mirror, package, version), with the mirror checks' bounded concurrency, credentials and
confinement, kept for trust.yaml's `npm.ttl`.

The package document is the one the mirror check reads (the full form, for publish times).
Registry keys are trust.yaml's, and with `mirror_keys` those the mirror lists at
`/-/npm/v1/keys`. A version's attestations are fetched from the URL its document gives when
that is under the mirror or under a location trust.yaml names (`npm.attestations`), else from
the mirror's own `/-/npm/v1/attestations/<name>@<version>`. Verifying is done in the helper
process, a batch at a time. A mirror or attestation source that is down, slow or answers
nonsense gives `unknown`, never `invalid`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from gateway import isolated, provenance
from gateway.errors import HelperFailed, MirrorUnavailable
from gateway.locations import within
from gateway.provenance import Job, Keys
from gateway.registries.base import Check
from gateway.signals import Dist, Provenance, Signals, Signature, unknown
from gateway.trust_config import NpmSigning

if TYPE_CHECKING:
    from gateway.verify import Verifier

log = structlog.get_logger("gateway.npm_trust")

UNKNOWN_TTL = 60.0  # an unknown answer is asked again this soon
_BATCH = 256  # verifications per trip to the helper process
_MAX_KEYS = 64


def _key(check: Check) -> tuple[str, str, str]:
    return (check.location, check.identifier, check.version)


class NpmSignals:
    """Collects and keeps each (mirror, package, version)'s signals (see the module)."""

    def __init__(self, settings: NpmSigning, verifier: Verifier) -> None:
        self.settings = settings
        self.verifier = verifier
        self._pinned: Keys = {k.keyid: (base64.b64decode(k.key), k.expires) for k in settings.keys}
        self._found: dict[tuple[str, str, str], tuple[Signals, float]] = {}
        self._keys: dict[str, tuple[Keys | MirrorUnavailable | None, float]] = {}
        self._busy: dict[tuple[str, str, str], asyncio.Future[None]] = {}  # being collected

    def lookup(self, check: Check) -> tuple[Signals, float] | None:
        """What is known of a check's version, and until when (`time.monotonic()`) it is
        fresh."""
        return self._found.get(_key(check))

    def stale(self, check: Check) -> bool:
        found = self.lookup(check)
        return found is None or time.monotonic() >= found[1]

    def forget_unasked(self) -> None:
        cutoff = time.monotonic() - self.settings.ttl
        for key in [k for k, (_, expires) in self._found.items() if expires < cutoff]:
            del self._found[key]
            self.verifier.changes += 1

    async def collect(
        self, checks: list[Check], documents: Mapping[Check, object | MirrorUnavailable]
    ) -> None:
        """Work out the signals of these npm checks from their package documents."""
        waiting = [self._busy[_key(c)] for c in checks if _key(c) in self._busy]
        checks = [check for check in checks if _key(check) not in self._busy]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for check in checks:
            self._busy[_key(check)] = done
        try:
            await self._collect(checks, documents)
        finally:
            for check in checks:
                del self._busy[_key(check)]
            done.set_result(None)
        for other in dict.fromkeys(waiting):  # another round is asking the same: its answers
            await asyncio.shield(other)

    async def _collect(
        self, checks: list[Check], documents: Mapping[Check, object | MirrorUnavailable]
    ) -> None:
        now = datetime.now(UTC)
        jobs: list[Job] = []
        pending: list[tuple[Check, Dist, int | None, int | Provenance | None]] = []
        for check in checks:
            document = documents.get(check)
            if isinstance(document, MirrorUnavailable):
                self._keep(check, self._unknown(check, f"the mirror: {document}", now))
                continue
            dist = document.get(check.version) if isinstance(document, dict) else None
            if not isinstance(dist, Dist):
                self._keep(check, self._absent(check, now))
                continue
            signature_at: int | None = None
            provenance_at: int | Provenance | None = None
            if self.settings.signatures:
                keys = await self._keys_for(check.location)
                if isinstance(keys, MirrorUnavailable) and not dist.signatures:
                    keys = None  # nothing to check: absent, whatever the keys
                if isinstance(keys, MirrorUnavailable):
                    signature_at = -1
                else:
                    signature_at = len(jobs)
                    jobs.append(("signature", check.identifier, check.version, dist, keys))
            if self.settings.provenance:
                provenance_at = await self._provenance_job(check, dist, jobs)
            pending.append((check, dist, signature_at, provenance_at))
        answers = await self._verified(jobs)
        for check, dist, signature_at, provenance_at in pending:
            signature = provenance_found = None
            if signature_at is not None:
                signature = (
                    Signature("unknown", "the mirror's registry keys could not be read")
                    if signature_at < 0 else answers[signature_at]
                )  # fmt: skip
            if provenance_at is not None:
                provenance_found = (
                    provenance_at
                    if isinstance(provenance_at, Provenance)
                    else answers[provenance_at]
                )
            assert signature is None or isinstance(signature, Signature)
            assert provenance_found is None or isinstance(provenance_found, Provenance)
            signals = Signals(check.location, dist.integrity, signature, provenance_found, now)
            self._keep(check, signals)

    # -- parts --------------------------------------------------------------------------------

    async def _provenance_job(self, check: Check, dist: Dist, jobs: list[Job]) -> int | Provenance:
        """A provenance job's index in `jobs`, or the answer when none is needed."""
        if dist.attestations is None and not dist.provenance:
            return Provenance("absent", "the mirror lists no provenance")
        url = self._attestations_url(check, dist.attestations)
        try:
            status, body, _ = await self.verifier.request(
                "GET", url, self._under(url, check), {"Accept": "application/json"},
                limit=self.settings.max_bundle,
            )  # fmt: skip
        except MirrorUnavailable as exc:
            return Provenance("unknown", f"attestations: {exc}")
        if status in (404, 410):
            why = "provenance is listed, but the mirror does not serve its attestations"
            return Provenance("present", why)
        if status != 200:
            return Provenance("unknown", f"attestations: HTTP {status}")
        root = self.settings.trusted_root
        assert root is not None  # provenance is collected only with one
        jobs.append(("provenance", body, check.identifier, check.version, dist.integrity,
                     root, tuple(self.settings.issuers)))  # fmt: skip
        return len(jobs) - 1

    def _attestations_url(self, check: Check, url: str | None) -> str:
        """The document's attestations URL where it is under a location the operator named,
        else the mirror's own."""
        allowed = (check.location.rstrip("/") + "/", *self.settings.attestations)
        if url is not None and any(within(url, prefix) for prefix in allowed):
            return url
        name = quote(check.identifier, safe="@")
        return f"{check.location.rstrip('/')}/-/npm/v1/attestations/{name}@{quote(check.version)}"

    def _under(self, url: str, check: Check) -> str:
        for prefix in self.settings.attestations:
            if within(url, prefix):
                return prefix
        return check.location.rstrip("/") + "/"

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
        found: Keys | None = await self.verifier.json(url, location.rstrip("/") + "/", _keys_of)
        return found

    async def _verified(self, jobs: list[Job]) -> list[Signature | Provenance]:
        answers: list[Signature | Provenance] = []
        for start in range(0, len(jobs), _BATCH):
            batch = jobs[start : start + _BATCH]
            try:
                answers.extend(await isolated.run(provenance.verify_all, batch))
            except HelperFailed as exc:
                why = f"not verified: {exc}"
                answers.extend(
                    Signature("unknown", why)
                    if job[0] == "signature"
                    else Provenance("unknown", why)
                    for job in batch
                )
        return answers

    def _unknown(self, check: Check, why: str, now: datetime) -> Signals:
        s = self.settings
        return unknown(check.location, why, now, s.signatures, s.provenance)

    def _absent(self, check: Check, now: datetime) -> Signals:
        why = "the mirror does not serve this version"
        s = self.settings
        return Signals(
            check.location, None,
            Signature("absent", why) if s.signatures else None,
            Provenance("absent", why) if s.provenance else None, now,
        )  # fmt: skip

    def _keep(self, check: Check, signals: Signals) -> None:
        states = [x.state for x in (signals.signature, signals.provenance) if x is not None]
        ttl = UNKNOWN_TTL if "unknown" in states else self.settings.ttl
        self._found[_key(check)] = (signals, time.monotonic() + ttl)
        self.verifier.changes += 1


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
