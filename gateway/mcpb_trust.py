"""The mcpb digest join: an mcpb file has no signature, but its entry names the sha256 of its
bytes (`fileSha256`). The gateway learns the sha256 of the bytes **the mirror** serves at the
rewritten location, and `signals.joined` compares the two per entry.

The mirror's digest comes from a checksum header when it offers one on `HEAD` (Artifactory's
`X-Checksum-Sha256`; S3's `x-amz-checksum-sha256`, asked for with `x-amz-checksum-mode`;
RFC 9530 `Repr-Digest` or RFC 3230 `Digest` with `sha-256`): the mirror's own word for its
bytes. Else the file is downloaded and hashed as it streams, at most trust.yaml's
`max_mcpb_bytes` (a larger file: `unknown`), never held whole. The served `_meta` says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import aiohttp

from gateway.collecting import Collector, Read
from gateway.errors import MirrorUnavailable
from gateway.registries.base import Check
from gateway.signals import Digest, Signals
from gateway.trust_config import TrustSettings

if TYPE_CHECKING:
    from gateway.verify import Verifier

_HEX = re.compile(r"[0-9a-fA-F]{64}")
TOO_LARGE = "larger than max_mcpb_bytes"  # kept for the whole ttl: asking again tells nothing
_CHUNK = 64 * 1024


def _base64_hex(value: str) -> str | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _structured(value: str, wrapped: bool) -> str | None:
    """The sha-256 member of a `Repr-Digest` (`sha-256=:<b64>:`) or `Digest`
    (`SHA-256=<b64>`) header."""
    for member in value.split(","):
        name, _, encoded = member.strip().partition("=")
        if name.strip().lower() != "sha-256":
            continue
        encoded = encoded.strip()
        if wrapped:
            if len(encoded) < 2 or encoded[0] != ":" or encoded[-1] != ":":
                return None
            encoded = encoded[1:-1]
        return _base64_hex(encoded)
    return None


def checksum(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(sha256 hex, the header it came from), from the checksum headers mirrors send."""
    found = headers.get("X-Checksum-Sha256")
    if found is not None and _HEX.fullmatch(found.strip()):
        return found.strip().lower(), "X-Checksum-Sha256"
    found = headers.get("x-amz-checksum-sha256")
    if found is not None and "-" not in found:  # "-N": a multipart upload's composite checksum
        value = _base64_hex(found)
        if value is not None:
            return value, "x-amz-checksum-sha256"
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        return None  # Repr-Digest and Digest would be of the encoded bytes
    for name, wrapped in (("Repr-Digest", True), ("Digest", False)):
        found = headers.get(name)
        if found is not None:
            value = _structured(found, wrapped)
            if value is not None:
                return value, name
    return None


class McpbSignals(Collector):
    """The mirror's digest of each mcpb file (see the module)."""

    def __init__(self, trust: TrustSettings, verifier: Verifier) -> None:
        super().__init__(verifier, verifier.settings.ttl, False, False, digests=True)
        self.limit = trust.max_mcpb_bytes

    async def read(self, check: Check, document: object, now: datetime) -> Signals | Read:
        if document is not True:  # the mirror answers 404 for it
            return self.absent(check, now)
        try:
            found = await self._digest(check.location)
        except MirrorUnavailable as exc:
            return self.unknown(check, f"the mirror: {exc}", now)
        if isinstance(found, Digest):
            return Signals(check.location, None, None, None, now, found)
        value, method = found
        why = f"the mirror's bytes are sha256:{value} ({method})"
        digest = Digest("present", why, f"sha256:{value}", method)
        return Signals(check.location, None, None, None, now, digest, digests=(f"sha256:{value}",))

    def retry_soon(self, signals: Signals) -> bool:
        digest = signals.digest
        too_large = digest is not None and digest.why.startswith(TOO_LARGE)
        return not too_large and super().retry_soon(signals)

    async def _digest(self, url: str) -> tuple[str, str] | Digest:
        """(sha256 hex, how it was learned), or a `Digest` saying why there is none."""
        verifier = self.verifier
        async with verifier.semaphore:
            status, _, headers = await verifier.request(
                "HEAD", url, url, {"x-amz-checksum-mode": "ENABLED", "Accept-Encoding": "identity"}
            )
        if status in (404, 410):
            return Digest("absent", "the mirror does not serve this file")
        if status == 200:
            header = checksum(headers)
            if header is not None:
                return header[0], f"checksum header {header[1]}"
        elif status != 405:  # a mirror that refuses HEAD is asked with GET
            raise MirrorUnavailable(f"HTTP {status} for an mcpb file")
        async with verifier.semaphore:
            status, hashed, _ = await verifier.stream("GET", url, url, self._hashed)
        if status in (404, 410):
            return Digest("absent", "the mirror does not serve this file")
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} for an mcpb file")
        if hashed is None:
            return Digest("unknown", f"{TOO_LARGE} ({self.limit} bytes)")
        value, size = hashed
        return value, f"download of {size} bytes"

    async def _hashed(self, response: aiohttp.ClientResponse) -> tuple[str, int] | None:
        """The body's sha256 and size, hashed as it streams (None: over the bound)."""
        if response.status != 200:
            return None
        if (response.content_length or 0) > self.limit:
            return None
        digest, size = hashlib.sha256(), 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.limit:
                return None
            digest.update(chunk)
        return digest.hexdigest(), size
