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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from gateway import isolated
from gateway.errors import HelperFailed, MirrorUnavailable
from gateway.locations import within
from gateway.registries.base import Check
from gateway.registries.npm import NPM
from gateway.signals import Dist, Job, Keys, Provenance, Signals, Signature, unknown
from gateway.trust_config import NpmSigning

if TYPE_CHECKING:
    from gateway.verify import Verifier

log = structlog.get_logger("gateway.npm_trust")

UNKNOWN_TTL = 60.0  # an unknown answer is asked again this soon
_BATCH = 256  # verifications per trip to the helper process
_CHUNK = 64  # versions collected together: at most this many bundles held at once
_MAX_KEYS = 64


Part = Job | Signature | Provenance | None  # a job for the helper, an answer, or not collected


@dataclass(frozen=True, slots=True)
class _Read:
    dist: Dist
    signature: Part
    provenance: Part


def _answered(
    part: Part, answers: Iterator[Signature | Provenance]
) -> Signature | Provenance | None:
    """A part's answer: the helper's next one for a job (answers come in the jobs' order)."""
    return next(answers) if isinstance(part, tuple) else part


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
        """A chunk at a time: its attestations fetched together (the mirror checks'
        concurrency), then verified in one trip to the helper process, so at most a chunk's
        bundles are held at once."""
        for start in range(0, len(checks), _CHUNK):
            chunk = checks[start : start + _CHUNK]
            now = datetime.now(UTC)
            read = await asyncio.gather(*(self._read(c, documents.get(c), now) for c in chunk))
            jobs = [
                part for _, found in read if isinstance(found, _Read)
                for part in (found.signature, found.provenance) if isinstance(part, tuple)
            ]  # fmt: skip
            answers = iter(await self._verified(jobs))
            for check, found in read:
                if isinstance(found, Signals):
                    self._keep(check, found)
                    continue
                signature = _answered(found.signature, answers)
                provenance_found = _answered(found.provenance, answers)
                assert signature is None or isinstance(signature, Signature)
                assert provenance_found is None or isinstance(provenance_found, Provenance)
                integrity = found.dist.integrity
                self._keep(
                    check, Signals(check.location, integrity, signature, provenance_found, now)
                )

    async def _read(
        self, check: Check, document: object, now: datetime
    ) -> tuple[Check, Signals | _Read]:
        """A check's signals when they are known at once, else what is left to verify."""
        if isinstance(document, MirrorUnavailable):
            return check, self._unknown(check, f"the mirror: {document}", now)
        found = _dist_of(document, check.version)
        if found is None:
            return check, self._absent(check, now)
        version, dist = found  # the mirror's spelling of the version: what it signed
        signature: Part = None
        if self.settings.signatures:
            keys = await self._keys_for(check.location)
            if isinstance(keys, MirrorUnavailable) and dist.signatures:
                signature = Signature("unknown", "the mirror's registry keys could not be read")
            else:
                listed = keys if not isinstance(keys, MirrorUnavailable) else None
                signature = ("signature", check.identifier, version, dist, listed)
        provenance: Part = None
        if self.settings.provenance:
            provenance = await self._provenance_job(check, version, dist)
        return check, _Read(dist, signature, provenance)

    async def _provenance_job(self, check: Check, version: str, dist: Dist) -> Job | Provenance:
        """A provenance job for the helper, or the answer when none is needed."""
        if not dist.provenance:  # attestations without provenance (a publish attestation)
            return Provenance("absent", "the mirror lists no provenance")
        url = self._attestations_url(check, version, dist.attestations)
        try:
            async with self.verifier.semaphore:
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
        return ("provenance", body, check.identifier, version, dist.integrity, root,
                tuple(self.settings.issuers))  # fmt: skip

    def _attestations_url(self, check: Check, version: str, url: str | None) -> str:
        """The document's attestations URL where it is under a location the operator named,
        else the mirror's own."""
        allowed = (check.location.rstrip("/") + "/", *self.settings.attestations)
        if url is not None and any(within(url, prefix) for prefix in allowed):
            return url
        name = quote(check.identifier, safe="@")
        return f"{check.location.rstrip('/')}/-/npm/v1/attestations/{name}@{quote(version)}"

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
        async with self.verifier.semaphore:
            found: Keys | None = await self.verifier.json(url, location.rstrip("/") + "/", _keys_of)
        return found

    async def _verified(self, jobs: list[Job]) -> list[Signature | Provenance]:
        from gateway import provenance  # cryptography: loaded only where signals are read

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
        if "unknown" in states:
            self.verifier.unknown_until = min(self.verifier.unknown_until, time.monotonic() + ttl)
        self._found[_key(check)] = (signals, time.monotonic() + ttl)
        self.verifier.changes += 1


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
