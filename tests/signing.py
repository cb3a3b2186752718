"""Test signers: the npm registry's key, and a private Sigstore (Fulcio, CT log, Rekor).

All keys are made fresh in memory, so tests can sign npm-style material offline.
Bundles from `SigningSetup.attest` pass sigstore's real `Verifier` when it is given
that setup's `trusted_root()`, and fail against any other setup's root.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"

# Fulcio's certificate extensions: https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"  # raw bytes; what sigstore's Identity policy reads
GITHUB_WORKFLOW_TRIGGER = "1.3.6.1.4.1.57264.1.2"  # 1.2 to 1.6: deprecated, still issued
GITHUB_WORKFLOW_SHA = "1.3.6.1.4.1.57264.1.3"
GITHUB_WORKFLOW_NAME = "1.3.6.1.4.1.57264.1.4"
GITHUB_WORKFLOW_REPOSITORY = "1.3.6.1.4.1.57264.1.5"
GITHUB_WORKFLOW_REF = "1.3.6.1.4.1.57264.1.6"
ISSUER = "1.3.6.1.4.1.57264.1.8"
BUILD_SIGNER_URI = "1.3.6.1.4.1.57264.1.9"
BUILD_SIGNER_DIGEST = "1.3.6.1.4.1.57264.1.10"
RUNNER_ENVIRONMENT = "1.3.6.1.4.1.57264.1.11"
SOURCE_REPOSITORY_URI = "1.3.6.1.4.1.57264.1.12"
SOURCE_REPOSITORY_DIGEST = "1.3.6.1.4.1.57264.1.13"
SOURCE_REPOSITORY_REF = "1.3.6.1.4.1.57264.1.14"
SOURCE_REPOSITORY_IDENTIFIER = "1.3.6.1.4.1.57264.1.15"
SOURCE_REPOSITORY_OWNER_URI = "1.3.6.1.4.1.57264.1.16"
SOURCE_REPOSITORY_OWNER_IDENTIFIER = "1.3.6.1.4.1.57264.1.17"
BUILD_CONFIG_URI = "1.3.6.1.4.1.57264.1.18"
BUILD_CONFIG_DIGEST = "1.3.6.1.4.1.57264.1.19"
BUILD_TRIGGER = "1.3.6.1.4.1.57264.1.20"
RUN_INVOCATION_URI = "1.3.6.1.4.1.57264.1.21"
SOURCE_REPOSITORY_VISIBILITY = "1.3.6.1.4.1.57264.1.22"
# Fulcio writes 1.1 to 1.6 as raw bytes, and the later ones as DER UTF8String.
_RAW_OIDS = {f"1.3.6.1.4.1.57264.1.{n}" for n in range(1, 7)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a key."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope signature covers."""
    return b"DSSEv1 %d %s %d %s" % (
        len(payload_type),
        payload_type.encode(),
        len(payload),
        payload,
    )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# The Rekor log is an RFC 6962 Merkle tree over its entries' canonicalized bodies.


def _leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two below `size` (where RFC 6962 splits a tree)."""
    return 1 << ((size - 1).bit_length() - 1)


def _tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def _audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """The inclusion proof for leaf `index`, hashes ordered from the leaf up."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_audit_path(index, leaves[:k]), _tree_hash(leaves[k:])]
    return [*_audit_path(index - k, leaves[k:]), _tree_hash(leaves[:k])]


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf (a build's signing key) signs what it attests."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class NpmKey:
    """An ECDSA P-256 key standing in for the npm registry's signing key."""

    def __init__(self) -> None:
        self._key = _new_key()
        self.public_der = _spki(self._key.public_key())
        # npm's key ID: "SHA256:" and the unpadded base64 of the key's SHA-256.
        digest = hashlib.sha256(self.public_der).digest()
        self.keyid = "SHA256:" + _b64(digest).rstrip("=")

    def sign(self, name: str, version: str, integrity: str) -> dict[str, str]:
        """An entry for a packument's `dist.signatures`."""
        message = f"{name}@{version}:{integrity}".encode()
        return {"keyid": self.keyid, "sig": _b64(_sign(self._key, message))}

    def key_entry(self, expires: str | None = None) -> dict[str, Any]:
        """This key as one item of the keys endpoint's list."""
        return {
            "expires": expires,
            "keyid": self.keyid,
            "keytype": "ecdsa-sha2-nistp256",
            "scheme": "ecdsa-sha2-nistp256",
            "key": _b64(self.public_der),
        }

    def keys_document(self, expires: str | None = None) -> dict[str, Any]:
        """The body of `GET /-/npm/v1/keys` with this key alone."""
        return {"keys": [self.key_entry(expires)]}


def github_identity(
    *,
    repository: str,
    repository_id: str,
    owner_id: str,
    commit: str,
    ref: str = "refs/heads/main",
    workflow_path: str = ".github/workflows/publish.yml",
    event_name: str = "push",
    run_id: str = "1",
) -> tuple[str, dict[str, str]]:
    """The SAN and Fulcio extensions of a GitHub Actions certificate.

    `repository` is "owner/name". Pass the two parts on to `SigningSetup.attest`
    as `san=` and `extensions=`, with `issuer=GITHUB_ISSUER`.
    """
    url = f"https://github.com/{repository}"
    owner = repository.split("/", 1)[0]
    workflow = f"{url}/{workflow_path}@{ref}"
    extensions = {
        GITHUB_WORKFLOW_TRIGGER: event_name,
        GITHUB_WORKFLOW_SHA: commit,
        GITHUB_WORKFLOW_NAME: "Publish",
        GITHUB_WORKFLOW_REPOSITORY: repository,
        GITHUB_WORKFLOW_REF: ref,
        BUILD_SIGNER_URI: workflow,
        BUILD_SIGNER_DIGEST: commit,
        RUNNER_ENVIRONMENT: "github-hosted",
        SOURCE_REPOSITORY_URI: url,
        SOURCE_REPOSITORY_DIGEST: commit,
        SOURCE_REPOSITORY_REF: ref,
        SOURCE_REPOSITORY_IDENTIFIER: repository_id,
        SOURCE_REPOSITORY_OWNER_URI: f"https://github.com/{owner}",
        SOURCE_REPOSITORY_OWNER_IDENTIFIER: owner_id,
        BUILD_CONFIG_URI: workflow,
        BUILD_CONFIG_DIGEST: commit,
        BUILD_TRIGGER: event_name,
        RUN_INVOCATION_URI: f"{url}/actions/runs/{run_id}/attempts/1",
        SOURCE_REPOSITORY_VISIBILITY: "public",
    }
    return workflow, extensions


def npm_purl(name: str, version: str) -> str:
    """The package URL npm puts in a provenance subject (a scope's "@" is escaped)."""
    if name.startswith("@"):
        name = "%40" + name[1:]
    return f"pkg:npm/{name}@{version}"


def slsa_statement(
    *,
    name: str,
    version: str,
    integrity_sha512_hex: str,
    repository: str,
    repository_id: str,
    owner_id: str,
    commit: str,
    ref: str = "refs/heads/main",
    workflow_path: str = ".github/workflows/publish.yml",
    event_name: str = "push",
    run_id: str = "1",
) -> dict[str, Any]:
    """An in-toto statement with SLSA v1 provenance, as `npm publish --provenance` writes it.

    `repository` is "owner/name", as in GITHUB_REPOSITORY.
    """
    url = f"https://github.com/{repository}"
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": npm_purl(name, version), "digest": {"sha512": integrity_sha512_hex}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
                "externalParameters": {
                    "workflow": {"ref": ref, "repository": url, "path": workflow_path}
                },
                "internalParameters": {
                    "github": {
                        "event_name": event_name,
                        "repository_id": repository_id,
                        "repository_owner_id": owner_id,
                    }
                },
                "resolvedDependencies": [
                    {"uri": f"git+{url}@{ref}", "digest": {"gitCommit": commit}}
                ],
            },
            "runDetails": {
                "builder": {"id": "https://github.com/actions/runner/github-hosted"},
                "metadata": {"invocationId": f"{url}/actions/runs/{run_id}/attempts/1"},
            },
        },
    }


class SigningSetup:
    """A private Sigstore: a Fulcio CA, a CT log and a Rekor log, all with fresh keys.

    Two setups never trust each other's bundles.
    """

    def __init__(self, name: str = "test", *, intermediate: bool = True) -> None:
        self.name = name
        now = datetime.now(UTC).replace(microsecond=0)
        self.valid_from = now - timedelta(days=365)
        self._valid_to = now + timedelta(days=3650)
        self._root_key = _new_key()
        root_name = self._ca_name(f"{name}-sigstore")
        self._root = self._ca_cert(root_name, self._root_key, root_name, self._root_key, 1)
        self._ca_chain = [self._root]
        self._issuer, self._issuer_key = self._root, self._root_key
        if intermediate:
            self._issuer_key = _new_key()
            self._issuer = self._ca_cert(
                self._ca_name(f"{name}-sigstore-intermediate"),
                self._issuer_key,
                root_name,
                self._root_key,
                0,
            )
            self._ca_chain.insert(0, self._issuer)
        self._ct_key = _new_key()
        self._rekor_key = _new_key()
        self.rekor_log_id = hashlib.sha256(_spki(self._rekor_key.public_key())).digest()
        self._leaves: list[bytes] = []  # leaf hashes of the Rekor log, in order

    def _ca_name(self, common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{self.name}.sigstore.test"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def _ca_cert(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
        path_length: int,
    ) -> x509.Certificate:
        usage = _key_usage(ca=True)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.valid_from)
            .not_valid_after(self._valid_to)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if issuer_key is not key:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    @staticmethod
    def _log_instance(key: ec.EllipticCurvePrivateKey, url: str, start: datetime) -> dict[str, Any]:
        """A transparency log instance of a trusted root."""
        der = _spki(key.public_key())
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": _b64(der),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": _iso(start)},
            },
            "logId": {"keyId": _b64(hashlib.sha256(der).digest())},
        }

    def trusted_root(self) -> dict[str, Any]:
        """The trusted root document for this setup (load it with `TrustedRoot.from_file`)."""
        host = f"{self.name}.sigstore.test"
        return {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [
                self._log_instance(self._rekor_key, f"https://rekor.{host}", self.valid_from)
            ],
            "certificateAuthorities": [
                {
                    "subject": {"organization": host, "commonName": f"{self.name}-sigstore"},
                    "uri": f"https://fulcio.{host}",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                            for c in self._ca_chain
                        ]
                    },
                    "validFor": {"start": _iso(self.valid_from)},
                }
            ],
            "ctlogs": [self._log_instance(self._ct_key, f"https://ctfe.{host}", self.valid_from)],
            "timestampAuthorities": [],
        }

    def _sct_extension(self, tbs: bytes, when: datetime) -> x509.UnrecognizedExtension:
        """An embedded SCT list (RFC 6962) from the CT log, over the precertificate `tbs`."""
        log_id = hashlib.sha256(_spki(self._ct_key.public_key())).digest()
        issuer_key_hash = hashlib.sha256(_spki(self._issuer_key.public_key())).digest()
        millis = int(when.timestamp()) * 1000
        # version v1, certificate_timestamp, timestamp, precert_entry, ..., no extensions
        signed = (
            struct.pack("!BBQH", 0, 0, millis, 1)
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)
        )
        signature = _sign(self._ct_key, signed)
        # version, log id, timestamp, no extensions, then sha256 (4) / ecdsa (3) and the signature
        sct = struct.pack("!B32sQH", 0, log_id, millis, 0)
        sct += struct.pack("!BBH", 4, 3, len(signature)) + signature
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        return x509.UnrecognizedExtension(
            ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, asn1.encode_der(sct_list)
        )

    def _leaf_cert(
        self,
        key: ec.EllipticCurvePublicKey,
        san: str,
        extensions: dict[str, str],
        when: datetime,
    ) -> x509.Certificate:
        """A Fulcio-style signing certificate for `key`, valid for ten minutes around `when`."""
        name: x509.GeneralName
        if "@" in san and "://" not in san:
            name = x509.RFC822Name(san)
        else:
            name = x509.UniformResourceIdentifier(san)
        usage = _key_usage(ca=False)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._issuer.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(when - timedelta(minutes=1))
            .not_valid_after(when + timedelta(minutes=9))
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuer_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([name]), critical=True)
        )
        for oid, value in extensions.items():
            raw = value.encode() if oid in _RAW_OIDS else asn1.encode_der(value)
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), raw), critical=False
            )
        # Like Fulcio: the CT log signs the certificate without its SCT list (the
        # precertificate), and the SCT then goes into the certificate that is issued.
        tbs = builder.sign(self._issuer_key, hashes.SHA256()).tbs_certificate_bytes
        builder = builder.add_extension(self._sct_extension(tbs, when), critical=False)
        cert = builder.sign(self._issuer_key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == tbs
        return cert

    def _log_entry(
        self,
        cert: x509.Certificate,
        envelope: dict[str, Any],
        payload: bytes,
        signature: bytes,
        when: datetime,
    ) -> dict[str, Any]:
        """Record a Rekor v1 "dsse" entry and return it as a bundle's tlog entry."""
        envelope_json = json.dumps(envelope, separators=(",", ":")).encode()
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(envelope_json).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": [{"signature": _b64(signature), "verifier": _b64(pem)}],
                },
            }
        )
        index = len(self._leaves)
        self._leaves.append(_leaf_hash(body))
        size = len(self._leaves)
        root_hash = _tree_hash(self._leaves)
        integrated_time = int(when.timestamp())
        # The inclusion promise: Rekor's signature over the entry as it was accepted.
        promise = rfc8785.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated_time,
                "logID": self.rekor_log_id.hex(),
                "logIndex": index,
            }
        )
        # The checkpoint: a signed note naming the tree's size and root hash.
        origin = f"rekor.{self.name}.sigstore.test"
        note = f"{origin} - 1\n{size}\n{_b64(root_hash)}\n"
        note_sig = _b64(self.rekor_log_id[:4] + _sign(self._rekor_key, note.encode()))
        return {
            "logIndex": str(index),
            "logId": {"keyId": _b64(self.rekor_log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self._rekor_key, promise))},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": _b64(root_hash),
                "treeSize": str(size),
                "hashes": [_b64(h) for h in _audit_path(index, self._leaves)],
                "checkpoint": {"envelope": f"{note}\n\u2014 {origin} {note_sig}\n"},
            },
            "canonicalizedBody": _b64(body),
        }

    def attest(
        self,
        statement: dict[str, Any],
        *,
        san: str,
        issuer: str,
        extensions: dict[str, str] | None = None,
        signed_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Sign an in-toto statement the way npm's provenance is signed: a Sigstore bundle.

        The certificate names `san` (a URI, or an email address) and the OIDC `issuer`,
        and carries `extensions` (Fulcio OID -> value). `signed_at` defaults to now.
        """
        when = (signed_at or datetime.now(UTC)).replace(microsecond=0)
        key = _new_key()
        cert = self._leaf_cert(
            key.public_key(), san, {ISSUER_V1: issuer, ISSUER: issuer, **(extensions or {})}, when
        )
        payload = json.dumps(statement, separators=(",", ":")).encode()
        signature = _sign(key, _pae(INTOTO_PAYLOAD_TYPE, payload))
        envelope = {
            "payload": _b64(payload),
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        }
        entry = self._log_entry(cert, envelope, payload, signature, when)
        return {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [entry],
            },
            "dsseEnvelope": envelope,
        }
