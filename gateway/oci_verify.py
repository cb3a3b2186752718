"""Verifying a Sigstore bundle attached to an OCI image (a referrer, or a layer of a cosign
tag) over the manifest digest **the mirror** serves. Pure, run in the helper process.

A bundle holds a DSSE envelope with an in-toto statement: one of its subjects must carry the
mirror's manifest digest. SLSA provenance (`predicateType` https://slsa.dev/provenance/...)
is the image's provenance; any other statement (cosign's `sign` writes
https://sigstore.dev/cosign/sign/v1) is a signature. Either is verified with `sigstore`
against the pinned trusted root for an identity of an accepted issuer; its repository, read
from the certificate, is bound to the server's own later (`signals.bound`). A bundle with a
bare message signature says nothing verifiable here of which bytes it signed: `present`.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from gateway.provenance import IN_TOTO, SLSA, STATEMENTS, certified, issuer_policy, pinned_root
from gateway.provenance import claimed_repository as claimed
from gateway.signals import Provenance, Signature, repository_key


def verify_oci_bundle(
    body: bytes, digest: str, root: Path, issuers: tuple[str, ...]
) -> Signature | Provenance:
    """A Sigstore bundle over the image whose manifest digest is `digest` ("sha256:<hex>")."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

    kind = _kind(body)
    if kind is None:
        return Signature("invalid", "not a Sigstore bundle")
    if kind == "message":
        return Signature("present", "a Sigstore message signature: it names no image digest")
    trusted = pinned_root(root)
    if isinstance(trusted, Provenance):
        return Signature("unknown", trusted.why)
    try:
        bundle = Bundle.from_json(body)
        payload_type, payload = Verifier(trusted_root=trusted).verify_dsse(
            bundle, issuer_policy(issuers)
        )
    except SigstoreError as exc:
        return Signature("invalid", f"the Sigstore bundle does not verify: {exc}")
    except (ValueError, TypeError, KeyError) as exc:  # a malformed bundle
        return Signature("invalid", f"not a valid Sigstore bundle ({type(exc).__name__})")
    facts = certified(bundle.signing_certificate)
    try:
        statement = orjson.loads(payload) if payload_type == IN_TOTO else None
    except orjson.JSONDecodeError:
        statement = None
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENTS:
        return Signature("invalid", "the signed payload is not an in-toto statement")
    provenance = statement.get("predicateType") in SLSA
    problem = _problem(statement, digest, facts.get("repository"))
    who = facts.get("repository") or facts.get("workflow") or "an unnamed identity"
    if provenance:
        if problem is not None:
            return Provenance("invalid", problem, **facts)
        commit = f" at commit {facts['commit']}" if facts.get("commit") else ""
        return Provenance("verified", f"built by {who}{commit}", **facts)
    identity = {
        "identity": facts.get("workflow") or who,
        "repository": facts.get("repository"),
        "repository_id": facts.get("repository_id"),
    }
    if problem is not None:
        return Signature("invalid", problem, **identity)
    return Signature("verified", f"signed by {who} over {digest}", **identity)


def _kind(body: bytes) -> str | None:
    """ "dsse" or "message" for a JSON bundle, None for anything else (read only to route it:
    what it says is verified after)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("dsseEnvelope"), dict):
        return "dsse"
    if isinstance(document.get("messageSignature"), dict):
        return "message"
    return None


def _problem(statement: dict[str, object], digest: str, repository: str | None) -> str | None:
    """Why a verified statement does not speak for this image (None: it does)."""
    algorithm, _, value = digest.partition(":")
    subjects = statement.get("subject")
    found = [
        subject.get("digest", {}).get(algorithm)
        for subject in (subjects if isinstance(subjects, list) else ())
        if isinstance(subject, dict) and isinstance(subject.get("digest"), dict)
    ]  # fmt: skip
    if value not in found:
        return f"the statement does not attest the mirror's manifest {digest}"
    named = claimed(statement.get("predicate"))
    if named is None or repository is None or repository_key(named) == repository_key(repository):
        return None
    return f"the statement names {named}, its certificate {repository}"
