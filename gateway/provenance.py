"""Verifying what an npm mirror says of a version: its registry signatures (ECDSA P-256 over
`name@version:integrity`) and its provenance (a Sigstore bundle holding a DSSE-signed SLSA
statement). Pure functions over bytes already read, run in the helper process (`isolated`):
Sigstore's checks take milliseconds and hold the GIL.

Nothing here trusts the answer being verified: registry keys are pinned in trust.yaml or read
from the mirror's keys endpoint, never from the document carrying the signature; provenance is
verified against the trusted root trust.yaml names. The repository a build came from is read
from its certificate (what the CA attests), and the statement must not name another.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gateway.signals import Dist, Job, Keys, Provenance, SignalState, Signature

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.models import TrustedRoot
    from sigstore.verify.policy import VerificationPolicy

SLSA = ("https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v0.2")
IN_TOTO = "application/vnd.in-toto+json"
STATEMENTS = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
_REPOSITORY = "1.3.6.1.4.1.57264.1.12"  # Fulcio: Source Repository URI
_COMMIT = "1.3.6.1.4.1.57264.1.13"  # Source Repository Digest
_REPOSITORY_ID = "1.3.6.1.4.1.57264.1.15"  # Source Repository Identifier


def verify_signature(name: str, version: str, dist: Dist, keys: Keys | None) -> Signature:
    """The registry signatures over `name@version:integrity` against trusted keys (None: no
    key is pinned and the mirror lists none)."""
    if not dist.signatures:
        return Signature("absent", "the mirror's document has no dist.signatures")
    if dist.integrity is None:
        return Signature("invalid", "signed, but with no dist.integrity to bind it to")
    if keys is None:
        return Signature("present", "signed; no registry key is pinned or listed by the mirror")
    message = f"{name}@{version}:{dist.integrity}".encode()
    when = dist.published
    reasons = []
    untold = False  # a key with an expiry, and no publish time to compare it with
    for keyid, signature in dist.signatures:
        known = keys.get(keyid)
        if known is None:
            reasons.append(f"key {keyid} is not a trusted registry key")
            continue
        der, expires = known
        if expires is not None and when is None:
            untold = True
            reasons.append(f"key {keyid} expires, and the mirror gives no publish time")
            continue
        if expires is not None and when is not None and when > expires:
            reasons.append(f"key {keyid} expired on {expires:%Y-%m-%d}, before this version")
            continue
        try:
            public = load_der_public_key(der)
            assert isinstance(public, ec.EllipticCurvePublicKey)  # trust_config checked it
            public.verify(base64.b64decode(signature), message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            reasons.append(f"the signature by {keyid} does not verify")
            continue
        return Signature("verified", f"signed by {keyid} over {dist.integrity}", keyid)
    state: SignalState = "unknown" if untold else "invalid"
    return Signature(state, "; ".join(reasons), dist.signatures[0][0])


def load_root(path: Path) -> TrustedRoot:
    """A Sigstore trusted root, read from a file (ValueError naming what is wrong)."""
    from sigstore.models import TrustedRoot

    try:
        return TrustedRoot.from_file(str(path))
    except OSError:
        raise
    except Exception as exc:  # the model's own errors: not a trusted root
        raise ValueError(f"not a Sigstore trusted root ({type(exc).__name__}: {exc})") from None


@functools.lru_cache(maxsize=4)
def _root(path: str, stamp: tuple[int, int]) -> TrustedRoot:
    return load_root(Path(path))  # cached while the file's size and time stay the same


def pinned_root(root: Path) -> TrustedRoot | Provenance:
    """The pinned trusted root, or why it cannot be read (`unknown`: nothing was checked)."""
    try:
        stat = os.stat(root)
        return _root(str(root), (stat.st_size, stat.st_mtime_ns))
    except (OSError, ValueError) as exc:
        return Provenance("unknown", f"the trusted root cannot be read: {exc}")


def issuer_policy(issuers: tuple[str, ...]) -> VerificationPolicy:
    """A build identity from any accepted OIDC issuer (older certificates carry the raw
    issuer extension, newer ones the DER-encoded one)."""
    from sigstore.verify.policy import AnyOf, OIDCIssuer, OIDCIssuerV2

    policies: list[VerificationPolicy] = [OIDCIssuerV2(i) for i in issuers]
    return AnyOf([*policies, *(OIDCIssuer(i) for i in issuers)])


def sha512_hex(integrity: str) -> str | None:
    """The sha512 an SRI `integrity` binds the bytes to, as hex: None unless it names exactly
    one. npm takes the strongest algorithm given and accepts bytes matching *any* of its
    hashes, so `sha512-<attested> sha512-<other>` would let other bytes install."""
    found = set()
    for part in integrity.split():
        algorithm, _, value = part.partition("-")
        if algorithm == "sha512":
            try:
                found.add(base64.b64decode(value.split("?")[0], validate=True).hex())
            except binascii.Error:
                return None
    return found.pop() if len(found) == 1 else None


def purl(name: str, version: str) -> str:
    """The package URL npm attests: only a scope's `@` escaped (`pkg:npm/%40scope/name@1.0.0`,
    a version as published, `+build` included), as npm's own `npa.toPurl` writes it."""
    return f"pkg:npm/{name.replace('@', '%40', 1) if name.startswith('@') else name}@{version}"


def verify_provenance(
    body: bytes,
    name: str,
    version: str,
    integrity: str | None,
    root: Path,
    issuers: tuple[str, ...],
) -> Provenance:
    """The provenance in an attestations document (`{"attestations": [{predicateType,
    bundle}]}`) verified against the trusted root, for the bytes the mirror says it serves
    (`integrity`). Not yet bound to a server's repository (`signals.bound`)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Provenance("unknown", "the attestations answer is not JSON")
    if not isinstance(document, dict) or not isinstance(document.get("attestations"), list):
        return Provenance("unknown", "the attestations answer is not an attestations document")
    bundle = _provenance_bundle(document)
    if bundle is None:
        return Provenance("invalid", "provenance is listed, but the attestations hold none")
    digest = sha512_hex(integrity) if integrity is not None else None
    if digest is None:
        return Provenance("invalid", "no sha512 dist.integrity to bind the provenance to")
    trusted = pinned_root(root)
    if isinstance(trusted, Provenance):
        return trusted
    return _verified(bundle, name, version, digest, trusted, issuers)


def _provenance_bundle(document: object) -> bytes | None:
    items = document.get("attestations") if isinstance(document, dict) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("predicateType") in SLSA:
            bundle = item.get("bundle")
            return orjson.dumps(bundle) if isinstance(bundle, dict) else None
    return None


def _verified(
    raw: bytes, name: str, version: str, digest: str, root: TrustedRoot, issuers: tuple[str, ...]
) -> Provenance:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

    try:
        bundle = Bundle.from_json(raw)
        kind, payload = Verifier(trusted_root=root).verify_dsse(bundle, issuer_policy(issuers))
    except SigstoreError as exc:
        return Provenance("invalid", f"the Sigstore bundle does not verify: {exc}")
    except (ValueError, TypeError, KeyError) as exc:  # a malformed bundle
        return Provenance("invalid", f"not a valid Sigstore bundle ({type(exc).__name__})")
    certificate = bundle.signing_certificate
    facts = certified(certificate)
    if kind != IN_TOTO:
        return Provenance("invalid", f"the signed payload is {kind!r}, not an in-toto statement")
    try:
        statement = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Provenance("invalid", "the signed statement is not JSON")
    problem = _statement_problem(statement, name, version, digest, facts.get("repository"))
    if problem is not None:
        return Provenance("invalid", problem, **facts)
    built = facts.get("repository") or "an unnamed repository"
    commit = f" at commit {facts['commit']}" if facts.get("commit") else ""
    return Provenance("verified", f"built by {built}{commit}", **facts)


def certified(certificate: Certificate) -> dict[str, Any]:
    """What the certificate (the CA) says of the build: its repository, id, commit, identity."""
    from cryptography import x509
    from cryptography.hazmat import asn1

    facts: dict[str, Any] = {}
    for oid, key in ((_REPOSITORY, "repository"), (_COMMIT, "commit"),
                     (_REPOSITORY_ID, "repository_id")):  # fmt: skip
        try:
            value = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
            facts[key] = asn1.decode_der(str, value.value)  # type: ignore[attr-defined]
        except (x509.ExtensionNotFound, ValueError, AttributeError):
            continue
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
        facts["workflow"] = uris[0] if uris else None
    except x509.ExtensionNotFound:
        pass
    return facts


def _statement_problem(
    statement: object, name: str, version: str, digest: str, repository: str | None
) -> str | None:
    """Why a verified statement does not speak for these bytes (None: it does)."""
    from gateway.signals import repository_key

    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENTS:
        return "the signed payload is not an in-toto statement"
    if statement.get("predicateType") not in SLSA:
        return f"the statement is {statement.get('predicateType')!r}, not SLSA provenance"
    subjects = statement.get("subject")
    digests = [
        subject.get("digest", {}).get("sha512")
        for subject in (subjects if isinstance(subjects, list) else ())
        if isinstance(subject, dict) and subject.get("name") == purl(name, version)
        and isinstance(subject.get("digest"), dict)
    ]  # fmt: skip
    if not digests:
        return f"the statement does not attest {purl(name, version)}"
    if digest not in digests:
        return "the attested digest is not the mirror's dist.integrity"
    predicate = statement.get("predicate")
    claimed = claimed_repository(predicate)
    if (
        claimed is not None
        and repository is not None
        and repository_key(claimed) != repository_key(repository)
    ):
        return f"the statement names {claimed}, its certificate {repository}"
    return None


def claimed_repository(predicate: object) -> str | None:
    """The source repository a SLSA v1 statement names (buildDefinition.externalParameters
    .workflow.repository), if any."""
    try:
        value = predicate["buildDefinition"]["externalParameters"]["workflow"]["repository"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def verify_all(jobs: list[Job]) -> list[Signature | Provenance]:
    """Every job's answer, in order (what crosses to the helper process and back). A job
    that fails in a way nobody foresaw is `unknown`: the others in its batch are answered."""
    done: list[Signature | Provenance] = []
    for job in jobs:
        try:
            done.append(_verify(job))
        except Exception as exc:  # hostile bytes: one job never sinks its batch
            why = f"not verified: {type(exc).__name__} while verifying"
            done.append(Signature("unknown", why) if job[0] == "signature" else
                        Provenance("unknown", why))  # fmt: skip
    return done


def _verify(job: Job) -> Signature | Provenance:
    if job[0] == "signature":
        return verify_signature(*job[1:])
    if job[0] == "oci":
        from gateway.oci_verify import verify_oci_bundle

        return verify_oci_bundle(*job[1:])
    if job[0] == "pypi":
        found = verify_pypi_provenance(*job[1:])
        return replace(found, why=f"{job[2]}: {found.why}")  # the file it speaks of
    return verify_provenance(*job[1:])


# -- PyPI: PEP 740 provenance ---------------------------------------------------------------------

PYPI_TYPES = ("https://docs.pypi.org/attestations/publish/v1", "https://slsa.dev/provenance/v1")


def verify_pypi_provenance(
    body: bytes, filename: str, sha256: str, root: Path, issuers: tuple[str, ...]
) -> Provenance:
    """A PEP 740 provenance object (what a PEP 691 index's `provenance` URL answers) verified
    against the pinned trusted root, for the distribution file and the sha256 the **mirror**
    serves. `pypi-attestations` reads the object and turns each attestation into a Sigstore
    bundle; its own `verify` knows only Sigstore's production and staging roots, so the
    bundle is verified here with the pinned one, and its subject checked as it checks it
    (exactly one subject: this file's name and sha256). Not yet bound to a server's
    repository (`signals.bound`)."""
    from pydantic import ValidationError
    from pypi_attestations import Provenance as Pep740

    try:
        provenance = Pep740.model_validate_json(body)
    except ValidationError:
        return Provenance("unknown", "the provenance answer is not a PEP 740 provenance object")
    trusted = pinned_root(root)
    if isinstance(trusted, Provenance):
        return trusted
    problems = []
    for bundle in provenance.attestation_bundles:
        for attestation in bundle.attestations:
            found = _pypi_attestation(attestation, filename, sha256, trusted, issuers)
            if found.state == "verified":
                return found
            problems.append(found.why)
    return Provenance("invalid", "; ".join(problems) or "the provenance holds no attestation")


def _pypi_attestation(
    attestation: Any, filename: str, sha256: str, root: TrustedRoot, issuers: tuple[str, ...]
) -> Provenance:
    from pypi_attestations import ConversionError
    from sigstore.errors import Error as SigstoreError
    from sigstore.verify import Verifier

    try:
        bundle = attestation.to_bundle()
        kind, payload = Verifier(trusted_root=root).verify_dsse(bundle, issuer_policy(issuers))
    except ConversionError as exc:
        return Provenance("invalid", f"not a valid attestation ({exc})")
    except SigstoreError as exc:
        return Provenance("invalid", f"the attestation does not verify: {exc}")
    facts = certified(bundle.signing_certificate)
    try:
        statement = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Provenance("invalid", "the signed statement is not JSON", **facts)
    problem = _pypi_problem(kind, statement, filename, sha256)
    if problem is not None:
        return Provenance("invalid", problem, **facts)
    built = facts.get("repository") or "an unnamed repository"
    commit = f" at commit {facts['commit']}" if facts.get("commit") else ""
    return Provenance("verified", f"published by {built}{commit}", **facts)


def _pypi_problem(kind: str, statement: object, filename: str, sha256: str) -> str | None:
    """Why a verified PEP 740 statement does not speak for this file (None: it does)."""
    if kind != IN_TOTO or not isinstance(statement, dict):
        return "the signed payload is not an in-toto statement"
    if statement.get("_type") not in STATEMENTS:
        return "the signed payload is not an in-toto statement"
    if statement.get("predicateType") not in PYPI_TYPES:
        return f"the statement is {statement.get('predicateType')!r}, not a PyPI attestation"
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        return "the statement must name exactly one subject"
    subject = subjects[0]
    if subject.get("name") != filename:
        return f"the statement attests {subject.get('name')!r}, not {filename!r}"
    digest = subject.get("digest")
    if not isinstance(digest, dict) or digest.get("sha256") != sha256.lower():
        return "the attested digest is not the sha256 the mirror serves"
    return None
