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
from hypothesis import given, settings
from hypothesis import strategies as st
from pypi_attestations import Attestation
from sigstore.models import Bundle

from gateway.provenance import verify_pypi_provenance
from gateway.signals import bound
from tests.conftest import examples
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


# -- what a PEP 691 index says of each file -----------------------------------------------------


def test_a_pep_691_page_gives_each_versions_files_sha256_and_provenance() -> None:
    from gateway.registries.base import Check
    from gateway.registries.pypi import PYPI

    page = orjson.dumps({"meta": {"api-version": "1.1"}, "name": "acme-tools", "files": [
        {"filename": WHEEL, "url": "x", "hashes": {"sha256": SHA256.upper()},
         "provenance": "https://mirror.example/simple/acme-tools/p/1.json"},
        {"filename": "acme-tools-1.0.0.tar.gz", "url": "y", "hashes": {"sha256": "zz"}},
        {"filename": "acme_tools-1.1.0-py3-none-any.whl", "hashes": {}, "yanked": "broken"},
        {"filename": "other-1.0.0-py3-none-any.whl", "hashes": {"sha256": SHA256}},
        "not a file", {"filename": 7},
    ]})  # fmt: skip
    check = Check("pypi", "https://mirror.example/simple/", "Acme_Tools", "1.0.0")
    found = PYPI.distributions(page, "application/vnd.pypi.simple.v1+json", check)
    assert set(found) == {"1.0.0", "1.1.0"}
    wheel, sdist = found["1.0.0"]
    assert (wheel.filename, wheel.sha256, wheel.yanked) == (WHEEL, SHA256, False)
    assert wheel.provenance == "https://mirror.example/simple/acme-tools/p/1.json"
    assert (sdist.sha256, sdist.provenance) == (None, None)  # not a sha256: none
    assert found["1.1.0"][0].yanked is True


def test_an_html_page_gives_each_links_sha256_provenance_and_yanked_mark() -> None:
    from gateway.registries.base import Check
    from gateway.registries.pypi import PYPI

    page = (
        f'<a href="../../p/{WHEEL}#sha256={SHA256}" data-provenance="../../p/{WHEEL}.prov">w</a>'
        '<a href="/x/acme-tools-1.0.0.zip" data-yanked="">z</a>'
    )
    check = Check("pypi", "https://mirror.example/simple/", "acme-tools", "1.0.0")
    files = PYPI.distributions(page.encode(), "text/html", check)["1.0.0"]
    assert [(f.filename, f.sha256, f.provenance, f.yanked) for f in files] == [
        (WHEEL, SHA256, f"../../p/{WHEEL}.prov", False),  # PEP 740's data-provenance
        ("acme-tools-1.0.0.zip", None, None, True),  # PEP 592's data-yanked
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["files", "filename", "hashes", "sha256", "provenance",
                                       "yanked", "url"]), inner, max_size=5),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=examples(150), deadline=None)
@given(JSON)
def test_any_index_page_reads_as_files_or_is_garbled(document: object) -> None:
    from gateway.errors import MirrorGarbled
    from gateway.registries.base import Check
    from gateway.registries.pypi import PYPI

    check = Check("pypi", "https://mirror.example/simple/", "acme-tools", "1.0.0")
    for body, kind in ((orjson.dumps(document), "application/vnd.pypi.simple.v1+json"),
                       (str(document).encode(), "text/html")):  # fmt: skip
        try:
            found = PYPI.distributions(body, kind, check)
        except MirrorGarbled:
            continue
        for files in found.values():
            for item in files:
                assert isinstance(item.filename, str)
                assert item.sha256 is None or len(item.sha256) == 64
                assert item.provenance is None or isinstance(item.provenance, str)
