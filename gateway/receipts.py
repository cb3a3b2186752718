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
    """The digest npm checks of an npm `dist.integrity`, as receipts name it (`sha512-<base64>`
    is `sha512:<hex>`): exactly one sha512, or none (an integrity naming two sha512 digests,
    or a sha256 npm would not check, binds no receipt: `provenance.sha512_hex` alike)."""
    found = []
    for part in (integrity or "").split():
        algorithm, _, encoded = part.partition("-")
        if algorithm == "sha512":
            try:
                raw = base64.b64decode(encoded.split("?")[0], validate=True)
            except (binascii.Error, ValueError):
                return ()
            found.append(f"sha512:{raw.hex()}")
    return tuple(found) if len(found) == 1 and len(found[0]) == 7 + 128 else ()


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
    `scanned_artifact_digest` is one of those digests and it is fresh (scanned by now,
    `freshness_expires_at` still ahead). Each digest (a PyPI version's each file) needs a
    receipt that counts: the worst verdict of those, else `absent`."""
    if not found.digests:
        told = (found.signature, found.provenance, found.digest)
        if not found.reachable or any(x is not None and x.state == "unknown" for x in told):
            return Scan("unknown", "the mirror's digest of the bytes could not be learned")
        return Scan("absent", "the mirror gives no digest to join scan receipts to")
    if not given:
        return Scan("absent", "the entry carries no scan receipt")
    counted: dict[str, list[tuple[ScanState, str, datetime]]] = {d: [] for d in found.digests}
    other = stale = 0
    for receipt in given:
        digest = str(receipt.get("scanned_artifact_digest", "")).lower()
        verdict = str(receipt.get("verdict"))
        if not _RECEIPT_DIGEST.fullmatch(digest) or verdict not in _VERDICTS:
            other += 1
            continue
        if digest not in counted:
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
        line = f"{scanner.strip()} ({attestation}): {verdict} until {_stamp(expires)}"
        counted[digest].append((verdict, line, expires))
    missing = [d for d, found_for in counted.items() if not found_for]
    if missing:
        why = (f"no receipt counts for {len(missing)} of the mirror's {len(counted)} digest(s): "
               f"{other} over other bytes or malformed, {stale} not fresh")  # fmt: skip
        return Scan("absent", why)
    every = [item for items in counted.values() for item in items]
    verdict = _VERDICTS[min(_VERDICTS.index(v) for v, _, _ in every)]
    why = f"{len(every)} receipt(s) for the mirror's bytes: the worst {verdict}"
    return Scan(verdict, why, tuple(line for _, line, _ in every), min(e for _, _, e in every))


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
