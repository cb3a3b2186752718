"""PyPI PEP 740 provenance, verified against a pinned trusted root for the file and sha256 a
mirror serves: material made by the test's own signing setup (`tests/signing.py`) over a
distribution's real digest, in the shape PyPI serves (a provenance object of attestation
bundles, each attestation converted from a Sigstore bundle by `pypi-attestations`)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pypi_attestations import Attestation
from sigstore.models import Bundle

from gateway.provenance import verify_pypi_provenance
from gateway.signals import bound
from tests.signing import GITHUB_ISSUER, SigningSetup, github_identity

SETUP, OTHER_CA = SigningSetup(), SigningSetup("other")
WHEEL = "acme_tools-1.0.0-py3-none-any.whl"
DATA = b"PK\x03\x04 a wheel's bytes"
SHA256 = hashlib.sha256(DATA).hexdigest()
PUBLISH = "https://docs.pypi.org/attestations/publish/v1"


def provenance(
    *,
    name: str = WHEEL,
    digest: str = SHA256,
    setup: SigningSetup = SETUP,
    repository: str = "acme/tools",
    subjects: int = 1,
) -> bytes:
    """A PEP 740 provenance object with one GitHub-published attestation."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest}}] * subjects,
        "predicateType": PUBLISH,
        "predicate": None,
    }
    san, extensions = github_identity(
        repository=repository, repository_id="31337", owner_id="7", commit="ab" * 20,
        workflow_path=".github/workflows/release.yml",
    )  # fmt: skip
    bundle = setup.attest(statement, san=san, issuer=GITHUB_ISSUER, extensions=extensions)
    attestation = Attestation.from_bundle(Bundle.from_json(orjson.dumps(bundle)))
    return orjson.dumps({
        "version": 1,
        "attestation_bundles": [{
            "publisher": {"kind": "GitHub", "repository": repository, "workflow": "release.yml"},
            "attestations": [orjson.loads(attestation.model_dump_json())],
        }],
    })  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("root") / "trusted_root.json"
    path.write_bytes(orjson.dumps(SETUP.trusted_root()))
    return path


def verify(body: bytes, root: Path, sha256: str = SHA256) -> Any:
    return verify_pypi_provenance(body, WHEEL, sha256, root, (GITHUB_ISSUER,))


def test_provenance_for_the_mirrors_file_is_verified_and_bound_to_the_repository(
    root: Path,
) -> None:
    found = verify(provenance(), root)
    assert found.state == "verified", found.why
    assert found.repository == "https://github.com/acme/tools"
    assert found.repository_id == "31337"
    assert bound(found, {"url": "https://github.com/acme/tools", "id": "31337"}).state == "verified"
    assert bound(found, {"url": "https://github.com/evil/tools"}).state == "invalid"


@pytest.mark.parametrize(
    ("body", "sha256", "state", "why"),
    [
        (lambda: provenance(), hashlib.sha256(b"other").hexdigest(), "invalid", "not the sha256"),
        (
            lambda: provenance(digest=hashlib.sha256(b"x").hexdigest()),
            SHA256,
            "invalid",
            "not the sha256",
        ),
        (
            lambda: provenance(name="acme_tools-1.0.1-py3-none-any.whl"),
            SHA256,
            "invalid",
            "not 'acme_tools-1.0.0",
        ),
        (lambda: provenance(setup=OTHER_CA), SHA256, "invalid", "does not verify"),
        (lambda: provenance(subjects=2), SHA256, "invalid", "exactly one subject"),
        (lambda: b"<html>", SHA256, "unknown", "not a PEP 740"),
        (
            lambda: b'{"version": 1, "attestation_bundles": []}',
            SHA256,
            "invalid",
            "holds no attestation",
        ),
    ],
)
def test_each_broken_copy_is_invalid_and_garbage_unknown(
    root: Path, body: Any, sha256: str, state: str, why: str
) -> None:
    found = verify(body(), root, sha256)
    assert found.state == state, found.why
    assert why in found.why


def test_a_flipped_byte_in_the_signed_statement_is_invalid(root: Path) -> None:
    document = orjson.loads(provenance())
    attestation = document["attestation_bundles"][0]["attestations"][0]
    statement = bytearray(base64.b64decode(attestation["envelope"]["statement"]))
    statement[len(statement) // 2] ^= 1
    attestation["envelope"]["statement"] = base64.b64encode(bytes(statement)).decode()
    assert verify(orjson.dumps(document), root).state == "invalid"
