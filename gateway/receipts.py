"""Publishers' security-scan receipts (the registry's proposed
`_meta["io.modelcontextprotocol.registry/security-scan"]`) joined to the bytes a mirror serves:
a receipt counts for `scan` rules when its `scanned_artifact_digest` is a digest the gateway
read at the view's mirror (`Signals.digests`) and it is fresh. Pure: run in builds."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from gateway.signals import Scan, ScanState, Signals

SCAN_KEY = "io.modelcontextprotocol.registry/security-scan"  # the receipts in a server's _meta
MAX_RECEIPTS = 32  # read per version; the rest do not count
_NAME_CHARS = 100  # of a scanner's name, version or attestation said in the served _meta


def integrity_digests(integrity: str | None) -> tuple[str, ...]:
    """An npm `dist.integrity`'s digests as receipts name them (`sha512-<base64>` is
    `sha512:<hex>`)."""
    found = []
    for part in (integrity or "").split():
        algorithm, _, encoded = part.partition("-")
        if algorithm in ("sha256", "sha512"):
            try:
                raw = base64.b64decode(encoded.split("?")[0], validate=True)
            except (binascii.Error, ValueError):
                continue
            found.append(f"{algorithm}:{raw.hex()}")
    return tuple(found)


_RECEIPT_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_VERDICTS: tuple[ScanState, ...] = ("findings", "warnings", "inconclusive", "clean")  # worst first


def receipts(server: object) -> list[dict[str, Any]]:
    """The publisher's scan receipts in a server's `_meta` (at most `MAX_RECEIPTS`)."""
    meta = server.get("_meta") if isinstance(server, dict) else None
    found = meta.get(SCAN_KEY) if isinstance(meta, dict) else None
    if not isinstance(found, list):
        return []
    return [r for r in found[:MAX_RECEIPTS] if isinstance(r, dict)]


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def scanned(found: Signals, given: list[dict[str, Any]], now: datetime) -> Scan:
    """What the receipts say of the bytes the mirror serves: a receipt counts when its
    `scanned_artifact_digest` is a digest of those bytes and it is fresh (scanned by now,
    `freshness_expires_at` still ahead); the version has the worst verdict of those."""
    if not found.digests:
        if any(x is not None and x.state == "unknown"
               for x in (found.signature, found.provenance, found.digest)):  # fmt: skip
            return Scan("unknown", "the mirror's digest of the bytes could not be learned")
        return Scan("absent", "the mirror gives no digest to join scan receipts to")
    if not given:
        return Scan("absent", "the entry carries no scan receipt")
    counted: list[tuple[ScanState, str]] = []
    ends: list[datetime] = []
    other = stale = 0
    for receipt in given:
        digest = str(receipt.get("scanned_artifact_digest", "")).lower()
        verdict = str(receipt.get("verdict"))
        if not _RECEIPT_DIGEST.fullmatch(digest) or verdict not in _VERDICTS:
            other += 1
            continue
        if digest not in found.digests:
            other += 1
            continue
        scanned_at = _when(receipt.get("scanned_at"))
        expires = _when(receipt.get("freshness_expires_at"))
        if scanned_at is None or expires is None or not scanned_at <= now < expires:
            stale += 1
            continue
        scanner = " ".join(str(receipt.get(k, ""))[:_NAME_CHARS]
                           for k in ("scanner", "scanner_version"))  # fmt: skip
        attestation = str(receipt.get("attestation", "unattested"))[:_NAME_CHARS]
        ends.append(expires)
        counted.append((verdict, f"{scanner.strip()} ({attestation}): {verdict} until "
                                      f"{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"))  # fmt: skip
    if not counted:
        why = f"no receipt counts: {other} over other bytes or malformed, {stale} not fresh"
        return Scan("absent", why)
    verdict = _VERDICTS[min(_VERDICTS.index(v) for v, _ in counted)]
    why = f"{len(counted)} receipt(s) for the mirror's bytes: the worst {verdict}"
    return Scan(verdict, why, tuple(line for _, line in counted), min(ends))
