"""trust.yaml: where the gateway's trust signals come from, owned by the security team.

- `osv`: advisory feeds (known vulnerabilities and malware), each a zip of OSV records, a
  directory of them, or one JSON file (a record or a list), for the package types it covers.
  Rules match versions by what the feeds say (`malicious`, `severity`, `advisory`).
- `npm`: how npm registry signatures and provenance read at a view's mirror are verified: the
  registry keys pinned here (or read from the mirror's keys endpoint), and the Sigstore trusted
  root provenance is verified against. Rules match versions by `signature` and `provenance`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gateway import registries
from gateway.fields import Duration, HttpUrl, Model, Slug, matching, pattern_schema
from gateway.signals import Signing

# The package types OSV has an ecosystem for (registries that name one).
OSV_TYPES = tuple(name for name, e in registries.ECOSYSTEMS.items() if e.osv is not None)


def _check_osv_type(value: str) -> str:
    if value not in OSV_TYPES:
        raise ValueError(
            f"{value!r} is not a package type OSV covers (one of {', '.join(OSV_TYPES)})"
        )
    return value


OsvType = Annotated[str, AfterValidator(_check_osv_type), WithJsonSchema({"enum": list(OSV_TYPES)})]


class OsvFeed(Model):
    """One OSV advisory feed: a file the operator keeps current (a zip such as OSV's
    `<Ecosystem>/all.zip`, a directory of records, or one JSON file), or a URL serving a zip
    or a JSON file (a generic repository mirroring OSV's), downloaded into `state_dir`."""

    name: Slug = Field(description="short id, named in _meta, explain, logs and status")
    file: Path | None = Field(
        None, description="a .zip of OSV records, a directory of them, or one .json"
    )
    url: HttpUrl | None = Field(None, description="a .zip or .json of OSV records over HTTP(S)")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with each request to `url` (and its own redirects)"
    )
    timeout: Duration = Field(300.0, description="one download of `url`, at most this")
    ecosystems: list[OsvType] = Field(
        min_length=1,
        description="package types this feed speaks for: for others it says nothing",
    )
    refresh: Duration = Field(300.0, description="how often a change of the file is looked for")
    max_bytes: int = Field(
        2 * 1024**3, ge=1024, description="bytes of records read, uncompressed; a bigger feed fails"
    )
    max_records: int = Field(2_000_000, ge=1, description="records read; more fails the feed")

    @model_validator(mode="after")
    def _one_source(self) -> OsvFeed:
        if (self.file is None) == (self.url is None):
            raise ValueError("give exactly one of file or url")
        if self.headers and self.url is None:
            raise ValueError("headers are sent with `url`: a file feed has none")
        return self

    def path(self, state_dir: Path) -> Path:
        """Where the feed is read from: its file, or where its URL's answer is kept."""
        if self.file is not None:
            return self.file
        suffix = ".zip" if str(self.url).lower().split("?")[0].endswith(".zip") else ".json"
        return state_dir / "advisories" / f"{self.name}{suffix}"


KEYID = r"SHA256:[A-Za-z0-9+/]{43}=?"
GITHUB_ACTIONS = "https://token.actions.githubusercontent.com"


class NpmKey(Model):
    """One npm registry signing key, as the registry's keys endpoint lists it."""

    keyid: Annotated[
        str,
        AfterValidator(matching(KEYID, "{value!r} is not an npm key id (SHA256:<base64>)")),
        pattern_schema(KEYID),
    ] = Field(description="the id signatures name (SHA256:...)")
    key: str = Field(description="the public key: base64 of its DER SubjectPublicKeyInfo")
    expires: AwareDatetime | None = Field(
        None, description="signatures on versions published after this do not count"
    )

    @field_validator("key")
    @classmethod
    def _p256(cls, value: str) -> str:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        try:
            key = load_der_public_key(base64.b64decode(value, validate=True))
        except ValueError:
            raise ValueError("not base64 of a DER public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("not an ECDSA P-256 key (ecdsa-sha2-nistp256)")
        return value


class Sigstore(Model):
    """What every Sigstore-verified signal shares: accepted identities, how long an answer is
    kept, and how much of one bundle is read."""

    issuers: list[HttpUrl] = Field(
        default_factory=lambda: [GITHUB_ACTIONS],
        min_length=1,
        description="OIDC issuers of the build, publisher or signing identities accepted",
    )
    ttl: Duration = Field(3600.0, description="how long a version's answer is kept")
    max_bundle: int = Field(
        1024**2, ge=1024, description="bytes of one attestation or bundle read; more: unknown"
    )


class NpmSigning(Sigstore):
    """How npm signatures and provenance read at a view's mirror are verified."""

    keys: list[NpmKey] = Field(
        default_factory=list, description="registry keys pinned here: signatures by others fail"
    )
    mirror_keys: bool = Field(
        False, description="also trust the keys the mirror lists at /-/npm/v1/keys"
    )
    trusted_root: Path | None = Field(
        None, description="a Sigstore trusted_root.json: provenance is verified against it"
    )
    attestations: list[HttpUrl] = Field(
        default_factory=list,
        description="locations besides the mirror whose attestation bundles may be fetched",
    )

    @property
    def signatures(self) -> bool:
        """Whether registry signatures are collected (some key to check them with)."""
        return bool(self.keys) or self.mirror_keys

    @property
    def provenance(self) -> bool:
        return self.trusted_root is not None


class PypiSigning(Sigstore):
    """How PEP 740 provenance read at a view's PyPI mirror is verified."""

    trusted_root: Path = Field(
        description="a Sigstore trusted_root.json: provenance is verified against it"
    )
    provenance_sources: list[HttpUrl] = Field(
        default_factory=list,
        description="locations besides the mirror whose provenance objects may be fetched",
    )


class OciSigning(Sigstore):
    """How signatures and provenance attached to an image at a view's OCI mirror are read."""

    trusted_root: Path | None = Field(
        None,
        description="a Sigstore trusted_root.json: bundles are verified against it (none: present)",
    )


class TrustSettings(Model):
    """trust.yaml: the sources of trust signals."""

    osv: list[OsvFeed] = Field(default_factory=list, description="OSV advisory feeds")
    npm: NpmSigning | None = Field(None, description="npm registry signatures and provenance")
    pypi: PypiSigning | None = Field(None, description="PyPI PEP 740 provenance")
    oci: OciSigning | None = Field(
        None, description="signatures, provenance and SBOMs attached to images"
    )
    mcpb: bool = Field(
        False,
        description="the digest join: each mcpb file at the view's mirror against its fileSha256",
    )
    max_mcpb_bytes: int = Field(
        50 * 1024**2, ge=1024, description="bytes an mcpb download for the digest join reads"
    )
    scan_receipts: bool = Field(
        False,
        description="publishers' scan receipts count for `scan` rules when they are over the "
        "bytes the view's mirror serves and fresh",
    )

    @model_validator(mode="after")
    def _distinct(self) -> TrustSettings:
        names = [feed.name for feed in self.osv]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"feed names must differ: {', '.join(twice)} given twice")
        return self

    def signing(self) -> Signing:
        """Which signals are collected for which package types."""
        # (signature, provenance, digest, scan); receipts join to the digests each type's
        # collection reads at the mirror
        scan = self.scan_receipts
        kinds: list[tuple[str, tuple[bool, ...]]] = []
        if self.npm is not None:
            kinds.append(("npm", (self.npm.signatures, self.npm.provenance, False, scan)))
        if self.pypi is not None:  # PyPI has no registry signatures: PEP 740 is provenance
            kinds.append(("pypi", (False, True, False, scan)))
        if self.oci is not None:
            kinds.append(("oci", (True, True, False, scan)))
        if self.mcpb:  # no signature: the digest join
            kinds.append(("mcpb", (False, False, True, scan)))
        return Signing(tuple(kinds))

    def covers(self) -> frozenset[str]:
        """Every package type some feed speaks for."""
        return frozenset(kind for feed in self.osv for kind in feed.ecosystems)
