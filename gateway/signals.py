"""Signals the package side gives of one package version at one mirror: npm registry
signatures, npm provenance and PyPI's PEP 740 provenance, each `verified`, `present`,
`absent`, `invalid` or `unknown`.

- `verified`: checked against what trust.yaml pins (registry keys, a Sigstore trusted root) and
  bound to the bytes the mirror serves (its `dist.integrity`); provenance also to the server's
  own repository.
- `present`: there, but nothing configured or served can check it (a key the mirror does not
  list and trust.yaml does not pin is not this: that is `invalid`).
- `absent`: the mirror's document has none for the version.
- `invalid`: checked, and it fails: a bad signature, an unknown or expired key, a certificate
  from another CA, a digest that is not the mirror's, another repository.
- `unknown`: it could not be told: the mirror (or the attestation source) is down, slow or
  answers nonsense, or the package is not served from a configured mirror. Never a reason to
  hide unless a rule says so.

A version's state for a rule is the worst of its packages' whose type collects that signal
(`combined`; `Signing` says which: npm signatures, npm and PyPI provenance); a version with no
such package has nothing to sign (`absent`). What is verified depends only on (mirror,
package, version); binding provenance to the server's repository (`bound`) is per version.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

SignalState = Literal["verified", "present", "absent", "invalid", "unknown"]
# What the publisher's scan receipts that count say of a version (see `scanned`).
ScanState = Literal["clean", "warnings", "findings", "inconclusive", "absent", "unknown"]
State = SignalState | ScanState

Keys = dict[str, tuple[bytes, datetime | None]]  # npm registry keyid -> (DER key, expiry)
# One verification for the helper process (`provenance.verify_all`): ("signature", name,
# version, dist, keys), ("provenance", body, name, version, integrity, root, issuers) or
# ("pypi", body, filename, sha256, root, issuers).
Job = tuple[Any, ...]

# Worst first: a version's state is the first of its packages' in this order.
ORDER: tuple[SignalState, ...] = ("invalid", "absent", "unknown", "present", "verified")
SCAN_ORDER: tuple[ScanState, ...] = (
    "findings", "warnings", "inconclusive", "absent", "unknown", "clean"
)  # fmt: skip
SIGNALS = ("signature", "provenance", "digest", "scan")
SIGNABLE = frozenset({"npm", "pypi", "oci", "mcpb"})  # the types signals are collected for
Flags = tuple[bool, ...]  # for each of SIGNALS: whether it is collected
NOTHING: Flags = (False,) * len(SIGNALS)
NO_STATES: tuple[State | None, ...] = (None,) * len(SIGNALS)


@dataclass(frozen=True, slots=True)
class Signing:
    """Which signals are collected for which package types (trust.yaml: `npm`, `pypi`,
    `mcpb`)."""

    by_type: tuple[tuple[str, Flags], ...] = ()  # (type, a flag for each of SIGNALS)
    # worked out once (asked for every package a build shapes):
    types: frozenset[str] = field(init=False, compare=False)  # types some signal is collected for
    flags: Flags = field(init=False, compare=False)  # each signal: collected for some type
    _of: dict[str, Flags] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        kinds = dict(self.by_type)
        object.__setattr__(self, "_of", kinds)
        object.__setattr__(self, "types", frozenset(k for k, flags in kinds.items() if any(flags)))
        flags = tuple(any(f[i] for f in kinds.values()) for i in range(len(SIGNALS)))
        object.__setattr__(self, "flags", flags)

    def of(self, kind: str) -> Flags:
        """What is collected for packages of this type."""
        return self._of.get(kind, NOTHING)

    def __bool__(self) -> bool:
        return any(self.flags)


NO_SIGNALS = Signing()


@dataclass(frozen=True, slots=True)
class Dist:
    """What an npm package document says of one version's bytes and their signals."""

    integrity: str | None
    signatures: tuple[tuple[str, str], ...]  # (keyid, base64 signature)
    attestations: str | None  # the URL of its attestations
    provenance: bool  # the document says a provenance attestation is among them
    published: datetime | None


@dataclass(frozen=True, slots=True)
class PypiFile:
    """What a PEP 691 index says of one distribution file: its sha256 (what provenance must
    attest) and where its PEP 740 provenance is, if anywhere."""

    filename: str
    sha256: str | None
    provenance: str | None
    yanked: bool


@dataclass(frozen=True, slots=True)
class Signature:
    state: SignalState
    why: str
    keyid: str | None = None  # an npm registry key
    # a keyless (Sigstore) signature's identity, as its certificate says (OCI)
    identity: str | None = None
    repository: str | None = None
    repository_id: str | None = None


@dataclass(frozen=True, slots=True)
class Provenance:
    state: SignalState
    why: str
    repository: str | None = None  # the build's source repository, as its certificate says
    repository_id: str | None = None  # the hosting service's id of it
    commit: str | None = None
    workflow: str | None = None  # the build identity (the certificate's subject)


@dataclass(frozen=True, slots=True)
class Digest:
    """The digest join: the mirror's bytes against the digest the entry names (mcpb's
    `fileSha256`). As collected, `present` with the mirror's digest; `joined` decides it."""

    state: SignalState
    why: str
    value: str | None = None  # the mirror's bytes' digest, "sha256:<hex>"
    method: str | None = None  # how it was learned: a checksum header, or a download


@dataclass(frozen=True, slots=True)
class Scan:
    """What the publisher's scan receipts say of the bytes a mirror serves: the worst verdict
    of those that count (over those bytes, and fresh)."""

    state: ScanState
    why: str
    counted: tuple[str, ...] = ()  # "scanner version (attestation): verdict until ..."
    until: datetime | None = None  # when the first receipt that counts stops counting


@dataclass(frozen=True, slots=True)
class Signals:
    """What one mirror's answers say of one package version (a field None: not collected)."""

    source: str  # the mirror location asked
    integrity: str | None
    signature: Signature | None
    provenance: Provenance | None
    checked_at: datetime
    digest: Digest | None = None
    artifacts: tuple[str, ...] = ()  # other artifacts attached (an image's SBOMs, attestations)
    # the mirror's digests of the version's bytes ("sha256:<hex>", "sha512:<hex>"): what scan
    # receipts join to
    digests: tuple[str, ...] = ()
    scan: Scan | None = None  # set per entry (`scanned`): the receipts are the entry's
    # several answers of a kind (an image's signatures, a PyPI version's files), each to be
    # bound to an entry's repository before the worst (or, `best`, the best) is picked
    answers: tuple[Signature | Provenance, ...] = ()
    best: bool = False
    reachable: bool = True  # False: the mirror could not be asked (nothing is known)

    def of_entry(
        self,
        signature: Signature | None,
        provenance: Provenance | None,
        digest: Digest | None,
        scan: Scan | None,
    ) -> Signals:
        """These signals as one entry has them (a build makes one per signed version: the
        constructor, several times faster than `dataclasses.replace`)."""
        return Signals(self.source, self.integrity, signature, provenance, self.checked_at,
                       digest, self.artifacts, self.digests, scan, (), self.best,
                       self.reachable)  # fmt: skip

    def state(self, signal: str) -> State | None:
        found = (
            self.signature if signal == "signature"
            else self.provenance if signal == "provenance"
            else self.digest if signal == "digest" else self.scan
        )  # fmt: skip
        return found.state if found is not None else None

    def meta(self) -> dict[str, Any]:
        """The served `_meta` of a package's signals: what was verified, against which digest,
        from which source, when."""
        meta: dict[str, Any] = {"source": self.source, "checkedAt": _stamp(self.checked_at)}
        if self.integrity is not None:
            meta["integrity"] = self.integrity
        if self.signature is not None:
            signature = {"state": self.signature.state, "why": self.signature.why}
            for key, value in (("keyid", self.signature.keyid),
                               ("identity", self.signature.identity),
                               ("repository", self.signature.repository),
                               ("repositoryId", self.signature.repository_id)):  # fmt: skip
                if value is not None:
                    signature[key] = value
            meta["signature"] = signature
        if self.provenance is not None:
            p = self.provenance
            provenance = {"state": p.state, "why": p.why}
            for key, value in (("repository", p.repository), ("repositoryId", p.repository_id),
                               ("commit", p.commit), ("workflow", p.workflow)):  # fmt: skip
                if value is not None:
                    provenance[key] = value
            meta["provenance"] = provenance
        if self.digest is not None:
            d = self.digest
            digest = {"state": d.state, "why": d.why}
            for key, value in (("value", d.value), ("method", d.method)):
                if value is not None:
                    digest[key] = value
            meta["digest"] = digest
        if self.artifacts:
            meta["artifacts"] = list(self.artifacts)
        if self.scan is not None:
            scan: dict[str, Any] = {"state": self.scan.state, "why": self.scan.why}
            if self.scan.counted:
                scan["receipts"] = list(self.scan.counted)
            meta["scan"] = scan
        return meta


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def unknown(
    source: str,
    why: str,
    checked_at: datetime,
    signature: bool,
    provenance: bool,
    digest: bool = False,
) -> Signals:
    """Nothing could be told (the mirror is down, or the package is not at a mirror)."""
    return Signals(
        source,
        None,
        Signature("unknown", why) if signature else None,
        Provenance("unknown", why) if provenance else None,
        checked_at,
        Digest("unknown", why) if digest else None,
        reachable=False,
    )


@functools.lru_cache(maxsize=65536)  # a build binds every signed version: the same few URLs
def repository_key(url: str) -> str | None:
    """A repository URL as one identity: host and path, lower case, without `www.`, `.git`, a
    trailing slash or a `git+` scheme prefix (`https://GitHub.com/Acme/Weather.git` is
    `github.com/acme/weather`); on GitHub, whose repositories are `owner/name`, a deeper path
    (`/tree/main/servers/x`, a monorepo's folder) names the same repository. None when it is
    not an http(s) URL with a path (or not a URL at all: `https://[x`)."""
    text = url.strip().removeprefix("git+")
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
    except ValueError:  # an upstream's or a statement's text: anything at all
        return None
    if parts.scheme not in ("https", "http") or not hostname:
        return None
    host = hostname.lower().removeprefix("www.")
    path = parts.path.rstrip("/").strip("/").lower()
    if host == "github.com":
        path = "/".join(path.split("/")[:2])
    path = path.removesuffix(".git")
    return f"{host}/{path}" if path else None


Bindable = TypeVar("Bindable", Signature, Provenance)


def bound(provenance: Bindable, repository: object) -> Bindable:
    """Verified provenance (or a keyless signature) bound to the server's own `repository`
    (its URL, and its id where the server gives one): another repository is `invalid`; a
    server naming none, `present`. A signature by a registry key has no identity to bind."""
    if provenance.state != "verified":
        return provenance
    if isinstance(provenance, Signature) and provenance.identity is None:
        return provenance
    url = repository.get("url") if isinstance(repository, dict) else None
    wanted = repository_key(url) if isinstance(url, str) else None
    if wanted is None:
        why = provenance.why + "; the server names no repository to bind it to"
        return replace(provenance, state="present", why=why)
    if provenance.repository is None or repository_key(provenance.repository) != wanted:
        made = "signed by a workflow of" if isinstance(provenance, Signature) else "built from"
        why = f"{made} {provenance.repository}, not the server's {wanted}"
        return replace(provenance, state="invalid", why=why)
    known_id = repository.get("id") if isinstance(repository, dict) else None
    if isinstance(known_id, str) and known_id and provenance.repository_id != known_id:
        return replace(provenance, state="invalid", why=(
            f"built from repository id {provenance.repository_id}, not the server's {known_id}"
            " (a repository of that name, deleted and made again?)"))  # fmt: skip
    return provenance


_SHA256 = re.compile(r"[0-9a-f]{64}")


def joined(digest: Digest, package: object) -> Digest:
    """The mirror's digest against the one the package names (`fileSha256`): the same bytes
    `verified`, others `invalid`; a package naming none, `absent` (nothing to join)."""
    if digest.state != "present" or digest.value is None:
        return digest
    named = package.get("fileSha256") if isinstance(package, dict) else None
    wanted = named.lower() if isinstance(named, str) else None
    if wanted is None or not _SHA256.fullmatch(wanted):
        why = "the entry names no fileSha256 to join the mirror's bytes to"
        return replace(digest, state="absent", why=why)
    if digest.value != f"sha256:{wanted}":
        why = f"the mirror's bytes are {digest.value}, not the entry's fileSha256 {wanted}"
        return replace(digest, state="invalid", why=why)
    return replace(digest, state="verified", why=f"the mirror's bytes are the entry's {wanted}")


Answer = TypeVar("Answer", Signature, Provenance)


def worst(found: list[Answer]) -> Answer | None:
    """The answer parts over different bytes give a version: the worst of theirs."""
    return min(found, key=lambda p: ORDER.index(p.state), default=None)


def best(found: list[Answer]) -> Answer | None:
    """The answer parts over the same bytes give it: the best of theirs."""
    return max(found, key=lambda p: ORDER.index(p.state), default=None)


def combined(states: list[State], signal: str = "signature") -> State:
    """A version's state from its packages' (the worst); none: `absent`."""
    if not states:
        return "absent"
    order: tuple[State, ...] = SCAN_ORDER if signal == "scan" else ORDER
    return min(states, key=order.index)
