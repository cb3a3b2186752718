"""OCI signatures, provenance and SBOMs, read at the registry each view pulls from (see
`collecting` for what every ecosystem shares), kept for trust.yaml's `oci.ttl`.

- The digest: the manifest digest the mirror serves for the reference
  (`Docker-Content-Digest` on `HEAD`; a reference that is a digest is its own).
- What is attached to it: the referrers API (`GET /v2/<repo>/referrers/<digest>`), else the
  referrers tag `sha256-<hex>` (an index of the same descriptors: what a registry without the
  API, such as distribution 2.8, holds), and the legacy cosign tags `sha256-<hex>.sig`, `.att`
  and `.sbom`. At most `MAX_REFERRERS` descriptors are read.
- Sigstore bundles (cosign's bundle format, as a referrer or a cosign tag's layer) are fetched
  (at most `max_bundle` bytes, their digest checked) and verified in the helper process over
  the mirror's manifest digest (`oci_verify`). Formats no maintained Python library verifies
  (cosign's legacy simple signing, Notation, a legacy cosign attestation) are `present`,
  never `verified`. SBOMs and other attestations are listed in the served `_meta`.
- An image's several signatures speak for the same bytes: its signature is the best of
  theirs (one verified is enough), and so is its provenance.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway import isolated
from gateway.collecting import Collector, Part, Read
from gateway.errors import MirrorUnavailable
from gateway.oci_access import OciAccess
from gateway.registries.base import Check
from gateway.registries.oci import ACCEPT
from gateway.signals import Provenance, Signals, Signature
from gateway.trust_config import OciSigning

if TYPE_CHECKING:
    from gateway.verify import Verifier

MAX_REFERRERS = 16  # descriptors read per image (the rest are not)
_MANIFEST_BYTES = 4 * 1024**2
_TYPE_CHARS = 255  # a media type longer than this is not one (RFC 6838: 127 + 1 + 127)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUNDLES = frozenset({
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
})  # fmt: skip
NOTATION = "application/vnd.cncf.notary.signature"
SBOMS = frozenset({
    "application/spdx+json", "text/spdx", "application/vnd.cyclonedx+json",
    "application/vnd.cyclonedx+xml", "application/vnd.syft+json",
})  # fmt: skip

Descriptor = tuple[str, str]  # (artifact or media type, digest)


def _descriptors(document: object) -> list[Descriptor]:
    """The (artifactType, digest) of each descriptor an index lists (wrong shapes skipped)."""
    items = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise MirrorUnavailable("the referrers answer is not an OCI index")
    found = []
    for item in items[: MAX_REFERRERS + 1]:  # one more: says the list was cut
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            continue
        kind = item.get("artifactType") or item.get("mediaType")
        if isinstance(kind, str) and len(kind) <= _TYPE_CHARS and _DIGEST.fullmatch(item["digest"]):
            found.append((kind, item["digest"]))
    return found


def _manifest(document: object) -> tuple[str, list[Descriptor]]:
    """A manifest's artifact type (`artifactType`, else its config's media type) and its
    layers' (mediaType, digest)."""
    if not isinstance(document, dict):
        raise MirrorUnavailable("the manifest is not an object")
    config = document.get("config")
    kind = document.get("artifactType")
    if not isinstance(kind, str):
        kind = config.get("mediaType") if isinstance(config, dict) else None
    layers = document.get("layers")
    found = [
        (layer["mediaType"], layer["digest"])
        for layer in (layers if isinstance(layers, list) else ())[:MAX_REFERRERS]
        if isinstance(layer, dict) and isinstance(layer.get("mediaType"), str)
        and isinstance(layer.get("digest"), str) and _DIGEST.fullmatch(layer["digest"])
    ]  # fmt: skip
    return (kind if isinstance(kind, str) and len(kind) <= _TYPE_CHARS else "?"), found


class OciSignals(Collector):
    """An image's signatures, provenance and SBOMs at a mirror (see the module)."""

    none_why = "none among its referrers or tags"

    def __init__(self, settings: OciSigning, verifier: Verifier) -> None:
        super().__init__(verifier, settings.ttl, True, True,
                         bundle_bytes=settings.max_bundle * MAX_REFERRERS)  # fmt: skip
        self.settings = settings

    async def read(self, check: Check, document: object, now: datetime) -> Signals | Read:
        if document is not True:  # the mirror answers 404 for the reference
            return self.absent(check, now)
        access = OciAccess(self.verifier, check.location)
        digest = await self._digest(access, check)  # the mirror down: unknown (see `_read`)
        attached = await self._referrers(access, check.identifier, digest)
        attached += await self._legacy(access, check.identifier, digest)
        parts, artifacts = await self._parts(access, check.identifier, digest, attached)
        if len(attached) > MAX_REFERRERS:  # what was not read might have told
            why = f"more than {MAX_REFERRERS} artifacts attached; the rest were not read"
            parts += [(Signature("unknown", why), "signature"),
                      (Provenance("unknown", why), "provenance")]  # fmt: skip
        signatures = tuple(p for p, kind in parts if kind == "signature")
        provenance = tuple(p for p, kind in parts if kind == "provenance")
        either = tuple(p for p, kind in parts if kind == "either")
        return Read(digest, signatures, provenance, either, True, artifacts, (digest,))

    async def _get(
        self, access: OciAccess, path: str, accept: str, limit: int
    ) -> tuple[int, bytes]:
        async with self.verifier.semaphore:
            status, body, _ = await access.request("GET", path, accept, limit)
        return status, body

    async def _json(self, access: OciAccess, path: str, accept: str, extract: Any) -> Any:
        """`extract` of a JSON answer; None for a 404."""
        status, body = await self._get(access, path, accept, _MANIFEST_BYTES)
        if status == 404:
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} for {path.rsplit('/', 1)[-1]}")
        outcome = await isolated.parse(isolated.json_then, body, extract)
        if outcome is None:
            raise MirrorUnavailable("an OCI answer that is not JSON")
        return outcome[0]

    async def _digest(self, access: OciAccess, check: Check) -> str:
        """The manifest digest the mirror serves for the reference."""
        path = f"/v2/{check.identifier}/manifests/{quote(check.version, safe=':')}"
        async with self.verifier.semaphore:
            status, _, headers = await access.request("HEAD", path)
        given = headers.get("Docker-Content-Digest", "") if status == 200 else ""
        if _DIGEST.fullmatch(check.version):
            if given and given != check.version:
                raise MirrorUnavailable("the mirror names another digest for a digest")
            return check.version
        if _DIGEST.fullmatch(given):
            return given
        status, body = await self._get(access, path, ACCEPT, _MANIFEST_BYTES)
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} for the manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def _referrers(self, access: OciAccess, repo: str, digest: str) -> list[Descriptor]:
        """The referrers API's descriptors; where it is missing, the referrers tag's."""
        found = await self._json(access, f"/v2/{repo}/referrers/{digest}", INDEX, _descriptors)
        if found is None:  # no referrers API: the tag schema
            tag = digest.replace(":", "-")
            found = await self._json(access, f"/v2/{repo}/manifests/{tag}", INDEX, _descriptors)
        return list(found or [])

    async def _legacy(self, access: OciAccess, repo: str, digest: str) -> list[Descriptor]:
        """The legacy cosign tags, as descriptors of their own kind."""
        found: list[Descriptor] = []
        for suffix in ("sig", "att", "sbom"):
            tag = f"{digest.replace(':', '-')}.{suffix}"
            async with self.verifier.semaphore:
                status, _, _ = await access.request("HEAD", f"/v2/{repo}/manifests/{tag}", ACCEPT)
            if status == 200:
                found.append((f"cosign .{suffix}", tag))
            elif status != 404:
                raise MirrorUnavailable(f"HTTP {status} for the tag {tag}")
        return found

    async def _parts(
        self, access: OciAccess, repo: str, digest: str, attached: list[Descriptor]
    ) -> tuple[list[tuple[Part, str]], tuple[str, ...]]:
        """Each attached artifact as a part (a job, or its answer) and what it speaks for
        ("signature", "provenance", "either": a bundle says which), and the other artifact
        types found (SBOMs, attestations)."""
        parts: list[tuple[Part, str]] = []
        artifacts: list[str] = []
        for kind, reference in attached[:MAX_REFERRERS]:
            if kind == NOTATION:
                why = "a Notation signature: no maintained Python verifier; present, not verified"
                parts.append((Signature("present", why), "signature"))
                continue
            if kind in SBOMS or kind == "cosign .sbom":
                artifacts.append(f"sbom {kind}")
                continue
            if kind not in BUNDLES and not kind.startswith("cosign ."):
                artifacts.append(kind)
                continue
            try:  # one artifact the mirror fails to serve leaves the others standing
                parts.append(await self._signed_part(access, repo, digest, kind, reference))
            except MirrorUnavailable as exc:
                parts.append((Signature("unknown", f"an attached artifact: {exc}"), "either"))
        return parts, tuple(artifacts)

    async def _signed_part(
        self, access: OciAccess, repo: str, digest: str, kind: str, reference: str
    ) -> tuple[Part, str]:
        """A signature-like artifact (a bundle referrer, a cosign tag) as a part."""
        manifest = await self._json(access, f"/v2/{repo}/manifests/{reference}", MANIFEST,
                                    _manifest)  # fmt: skip
        if manifest is None:
            return Signature("unknown", "an attached artifact's manifest is not served"), "either"
        bundles = [d for media, d in manifest[1] if media in BUNDLES]
        if bundles:
            return await self._bundle(access, repo, digest, bundles[0]), "either"
        if kind == "cosign .sig":
            why = "a legacy cosign signature (simple signing): no maintained Python verifier"
            return Signature("present", why), "signature"
        if kind == "cosign .att":
            why = "a legacy cosign attestation: no maintained Python verifier"
            return Provenance("present", why), "provenance"
        return Signature("unknown", "a Sigstore bundle referrer that holds no bundle"), "either"

    async def _bundle(self, access: OciAccess, repo: str, digest: str, blob: str) -> Part:
        """A Sigstore bundle's verification job (or why there is none)."""
        status, body = await self._get(access, f"/v2/{repo}/blobs/{blob}", "*/*",
                                       self.settings.max_bundle)  # fmt: skip
        if status != 200:
            return Signature("unknown", f"its Sigstore bundle: HTTP {status}")
        if "sha256:" + hashlib.sha256(body).hexdigest() != blob:  # corrupt, or not the blob
            return Signature("unknown", "the mirror serves other bytes for its Sigstore bundle")
        root = self.settings.trusted_root
        if root is None:
            return Signature("present", "a Sigstore bundle; no trusted root is configured")
        issuers = tuple(str(issuer) for issuer in self.settings.issuers)
        return ("oci", body, digest, root, issuers)
