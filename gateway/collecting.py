"""What every ecosystem's trust signals share: collected once per (mirror, package, version)
with the mirror checks' bounded concurrency, credentials and confinement, verified in the
helper process a batch at a time, and kept for the ecosystem's `ttl` (`unknown` answers for a
minute). Each ecosystem says what its mirror's document holds (`Collector.read`): npm in
`npm_trust`, PyPI in `pypi_trust`. A mirror or a signal source that is down, slow or answers
nonsense gives `unknown`, never `invalid`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway import isolated
from gateway.errors import HelperFailed, MirrorUnavailable
from gateway.locations import within
from gateway.registries.base import Check
from gateway.signals import Digest, Job, Provenance, Signals, Signature, best, unknown, worst

if TYPE_CHECKING:
    from gateway.verify import Verifier

UNKNOWN_TTL = 60.0  # an unknown answer is asked again this soon
_BATCH = 256  # verifications per trip to the helper process, at most
_BATCH_BYTES = 32 * 1024**2  # and at most this many bytes of bundles in one trip
_CHUNK = 64  # versions collected together, at most
_HELD = 64 * 1024**2  # bundle bytes a chunk may hold at the most (see `Collector.chunk`)
_DEADLINE = 4  # one version's signals take at most this many `verify.timeout`s in all

Part = Job | Signature | Provenance | None  # a job for the helper, an answer, or not collected


@dataclass(frozen=True, slots=True)
class Read:
    """What is left to verify of one version: signature parts and provenance parts, and
    parts whose answer says which it is (an OCI image's Sigstore bundles). Parts over
    different bytes (a PyPI version's files) give the version the worst of their answers;
    parts over the same bytes (`best`: an image's several signatures), the best."""

    integrity: str | None
    signature: tuple[Part, ...]
    provenance: tuple[Part, ...]
    either: tuple[Part, ...] = ()
    best: bool = False
    artifacts: tuple[str, ...] = ()  # other artifact types attached (an image's SBOMs)
    digests: tuple[str, ...] = ()  # the mirror's digests of the bytes (what receipts join to)


def _answered(
    part: Part, answers: Iterator[Signature | Provenance]
) -> Signature | Provenance | None:
    """A part's answer: the helper's next one for a job (answers come in the jobs' order)."""
    return next(answers) if isinstance(part, tuple) else part


def _batches(jobs: list[Job]) -> list[list[Job]]:
    """Jobs in trips to the helper process: at most `_BATCH` and `_BATCH_BYTES` of bundles
    each (a job larger than that alone)."""
    batches: list[list[Job]] = []
    batch: list[Job] = []
    held = 0
    for job in jobs:
        size = len(job[1]) if isinstance(job[1], bytes) else 0
        if batch and (len(batch) >= _BATCH or held + size > _BATCH_BYTES):
            batches.append(batch)
            batch, held = [], 0
        batch.append(job)
        held += size
    if batch:
        batches.append(batch)
    return batches


def key_of(check: Check) -> tuple[str, str, str]:
    return (check.location, check.identifier, check.version)


class Collector:
    """Collects and keeps each (mirror, package, version)'s signals for one ecosystem."""

    none_why = "the mirror lists none"  # a signal collected, and nothing found for it

    def __init__(
        self,
        verifier: Verifier,
        ttl: float,
        signatures: bool,
        provenance: bool,
        digests: bool = False,
        bundle_bytes: int = 0,
    ) -> None:
        self.verifier = verifier
        self.ttl = ttl
        self.signatures = signatures  # which signals this ecosystem collects
        self.provenance = provenance
        self.digests = digests
        # Versions read together: as many as keep the bundles they may fetch (each version
        # at most `bundle_bytes`) within `_HELD`.
        self.chunk = max(1, min(_CHUNK, _HELD // bundle_bytes)) if bundle_bytes else _CHUNK
        self.deadline = verifier.settings.timeout * _DEADLINE
        self._found: dict[tuple[str, str, str], tuple[Signals, float]] = {}
        self._busy: dict[tuple[str, str, str], asyncio.Future[None]] = {}  # being collected

    def lookup(self, check: Check) -> tuple[Signals, float] | None:
        """What is known of a check's version, and until when (`time.monotonic()`) it is
        fresh."""
        return self._found.get(key_of(check))

    def stale(self, check: Check) -> bool:
        found = self.lookup(check)
        return found is None or time.monotonic() >= found[1]

    def forget_unasked(self) -> None:
        cutoff = time.monotonic() - self.ttl
        for key in [k for k, (_, expires) in self._found.items() if expires < cutoff]:
            del self._found[key]
            self.verifier.changes += 1

    async def collect(
        self, checks: list[Check], documents: Mapping[Check, object | MirrorUnavailable]
    ) -> None:
        """Work out the signals of these checks from their mirror documents."""
        waiting = [self._busy[key_of(c)] for c in checks if key_of(c) in self._busy]
        checks = [check for check in checks if key_of(check) not in self._busy]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for check in checks:
            self._busy[key_of(check)] = done
        try:
            await self._collect(checks, documents)
        finally:
            for check in checks:
                del self._busy[key_of(check)]
            done.set_result(None)
        for other in dict.fromkeys(waiting):  # another round is asking the same: its answers
            await asyncio.shield(other)

    async def _collect(
        self, checks: list[Check], documents: Mapping[Check, object | MirrorUnavailable]
    ) -> None:
        """A chunk at a time: its bundles fetched together (the mirror checks' concurrency),
        then verified in one trip to the helper process, so at most a chunk's bundles are
        held at once."""
        for start in range(0, len(checks), self.chunk):
            chunk = checks[start : start + self.chunk]
            now = datetime.now(UTC)
            read = await asyncio.gather(*(self._read(c, documents.get(c), now) for c in chunk))
            jobs = [
                part for _, found in read if isinstance(found, Read)
                for part in (*found.signature, *found.provenance, *found.either)
                if isinstance(part, tuple)
            ]  # fmt: skip
            answers = iter(await self._verified(jobs))
            for check, found in read:
                if isinstance(found, Signals):
                    self._keep(check, found)
                    continue
                parts = (*found.signature, *found.provenance, *found.either)
                told = [_answered(part, answers) for part in parts]
                self._keep(check, self._signals(check, found, told, now))

    def _signals(
        self, check: Check, found: Read, told: list[Signature | Provenance | None], now: datetime
    ) -> Signals:
        """A version's signals from its parts' answers: the worst or best of each kind (every
        answer kept when there are several, to be bound to each entry's repository before it
        is picked: `Signals.of_entry`); a collected signal with no answer, `absent`."""
        pick = best if found.best else worst
        signatures = [a for a in told if isinstance(a, Signature)]
        provenances = [a for a in told if isinstance(a, Provenance)]
        signature, provenance = pick(signatures), pick(provenances)
        if signature is None and self.signatures:
            signature = Signature("absent", self.none_why)
        if provenance is None and self.provenance:
            provenance = Provenance("absent", self.none_why)
        several = len(signatures) > 1 or len(provenances) > 1
        return Signals(check.location, found.integrity, signature, provenance, now,
                       artifacts=found.artifacts, digests=found.digests,
                       answers=(*signatures, *provenances) if several else (),
                       best=found.best)  # fmt: skip

    async def _read(
        self, check: Check, document: object, now: datetime
    ) -> tuple[Check, Signals | Read]:
        if isinstance(document, MirrorUnavailable):
            return check, self.unknown(check, f"the mirror: {document}", now)
        try:
            async with asyncio.timeout(self.deadline):
                return check, await self.read(check, document, now)
        except TimeoutError:
            why = f"no answer within {self.deadline:g} s (4 x verify.timeout)"
            return check, self.unknown(check, why, now)
        except MirrorUnavailable as exc:
            return check, self.unknown(check, f"the mirror: {exc}", now)

    async def read(self, check: Check, document: object, now: datetime) -> Signals | Read:
        """A check's signals when they are known at once, else what is left to verify."""
        raise NotImplementedError

    async def fetch(
        self, url: str, under: str, accept: str, limit: int
    ) -> tuple[int, bytes] | MirrorUnavailable:
        """A signal source's answer, through the mirror checks' requests."""
        try:
            async with self.verifier.semaphore:
                status, body, _ = await self.verifier.request(
                    "GET", url, under, {"Accept": accept}, limit=limit
                )
        except MirrorUnavailable as exc:
            return exc
        return status, body

    @staticmethod
    def allowed(url: str | None, check: Check, sources: list[str]) -> str | None:
        """The prefix a signal source's URL is under: the mirror's location or one trust.yaml
        names (None: it is under neither, and is not fetched)."""
        if url is None:
            return None
        for prefix in (check.location.rstrip("/") + "/", *sources):
            if within(url, prefix):
                return prefix
        return None

    async def _verified(self, jobs: list[Job]) -> list[Signature | Provenance]:
        from gateway import provenance  # cryptography: loaded only where signals are read

        answers: list[Signature | Provenance] = []
        for batch in _batches(jobs):
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

    def unknown(self, check: Check, why: str, now: datetime) -> Signals:
        return unknown(check.location, why, now, self.signatures, self.provenance, self.digests)

    def absent(self, check: Check, now: datetime) -> Signals:
        why = "the mirror does not serve this version"
        return Signals(
            check.location, None,
            Signature("absent", why) if self.signatures else None,
            Provenance("absent", why) if self.provenance else None, now,
            Digest("absent", why) if self.digests else None,
        )  # fmt: skip

    def retry_soon(self, signals: Signals) -> bool:
        """Whether an answer is asked again within the minute (it could not be told)."""
        found = (signals.signature, signals.provenance, signals.digest)
        return any(x is not None and x.state == "unknown" for x in found)

    def _keep(self, check: Check, signals: Signals) -> None:
        ttl = UNKNOWN_TTL if self.retry_soon(signals) else self.ttl
        if ttl == UNKNOWN_TTL:
            self.verifier.unknown_until = min(self.verifier.unknown_until, time.monotonic() + ttl)
        self._found[key_of(check)] = (signals, time.monotonic() + ttl)
        self.verifier.changes += 1
