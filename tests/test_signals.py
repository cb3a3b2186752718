"""npm registry signatures and provenance, read at the view's own mirror, end to end.

Material is made by the test's own signing setup (`tests/signing.py`: a registry key, a test
CA, CT log and transparency log whose trusted root is pinned through trust.yaml), over the
real sha512 of each version's bytes: the verification path is the production one. The mirror
is a real aiohttp server on loopback serving full package documents, the keys endpoint and
attestations. Every broken copy (a signature over other bytes, an unknown or expired key,
another repository, another CA, another digest) must come out `invalid`; a mirror that is
down, `unknown`, with nothing hidden that a rule did not ask to hide.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.loader import load_config
from gateway.provenance import purl, verify_provenance, verify_signature
from gateway.signals import (
    Dist,
    Keys,
    Provenance,
    Signals,
    Signature,
    bound,
    combined,
    repository_key,
)
from tests.conftest import examples, file_upstream, loopback
from tests.fakes import server_entry
from tests.signing import GITHUB_ISSUER, NpmKey, SigningSetup, github_identity, slsa_statement
from tests.test_federation import all_entries, keys
from tests.trusted import settle, write_yaml

TOKEN = {"Authorization": "Bearer tok3n"}
NAME = "@acme/weather"
SERVER = "io.github.acme/weather"
REPOSITORY = {"url": "https://github.com/acme/weather", "source": "github", "id": "1001"}
COMMIT = "c0ffee" * 6 + "c0ff"
KEY, STRANGER = NpmKey(), NpmKey()
SETUP, OTHER_CA = SigningSetup(), SigningSetup("other")


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def attestation(
    version: str,
    data: bytes,
    *,
    setup: SigningSetup = SETUP,
    repository: str = "acme/weather",
    claimed: str | None = None,
    repository_id: str = "1001",
) -> dict[str, Any]:
    """An npm attestations document holding SLSA provenance for `data`, signed by a build of
    `repository` (its statement may claim another: `claimed`)."""
    statement = slsa_statement(
        name=NAME, version=version, integrity_sha512_hex=hashlib.sha512(data).hexdigest(),
        repository=claimed or repository, repository_id=repository_id, owner_id="77",
        commit=COMMIT,
    )  # fmt: skip
    san, extensions = github_identity(
        repository=repository, repository_id=repository_id, owner_id="77", commit=COMMIT
    )
    bundle = setup.attest(statement, san=san, issuer=GITHUB_ISSUER, extensions=extensions)
    return {"attestations": [{"predicateType": "https://slsa.dev/provenance/v1", "bundle": bundle}]}


@dataclass
class Published:
    """One version in the mirror: its bytes, its dist facts, its attestations document."""

    data: bytes
    signatures: list[dict[str, str]] = field(default_factory=list)
    attestations: dict[str, Any] | None = None


def catalog() -> dict[str, Published]:
    """Versions of @acme/weather, each with one thing right or wrong (see the test names)."""
    tarballs = {v: f"tarball of {v}".encode() for v in
                ("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0")}  # fmt: skip
    good = {v: KEY.sign(NAME, v, integrity_of(data)) for v, data in tarballs.items()}
    return {
        "1.0.0": Published(tarballs["1.0.0"], [good["1.0.0"]],
                           attestation("1.0.0", tarballs["1.0.0"])),
        # signed over other bytes; provenance right
        "1.1.0": Published(tarballs["1.1.0"], [KEY.sign(NAME, "1.1.0", integrity_of(b"other"))],
                           attestation("1.1.0", tarballs["1.1.0"])),
        # built from another repository (its certificate says so)
        "1.2.0": Published(tarballs["1.2.0"], [good["1.2.0"]],
                           attestation("1.2.0", tarballs["1.2.0"], repository="evil/weather",
                                       repository_id="666")),
        # a certificate from another CA
        "1.3.0": Published(tarballs["1.3.0"], [good["1.3.0"]],
                           attestation("1.3.0", tarballs["1.3.0"], setup=OTHER_CA)),
        # a key nobody trusts; no provenance
        "1.4.0": Published(tarballs["1.4.0"], [STRANGER.sign(NAME, "1.4.0",
                                                              integrity_of(tarballs["1.4.0"]))]),
        "1.5.0": Published(tarballs["1.5.0"]),  # neither
        # provenance for other bytes
        "1.6.0": Published(tarballs["1.6.0"], [good["1.6.0"]],
                           attestation("1.6.0", b"other bytes")),
    }  # fmt: skip


class SignedMirror:
    """An npm mirror on loopback: full package documents, keys, attestations."""

    def __init__(self, versions: dict[str, Published]) -> None:
        self.versions = versions
        self.down = False
        self.url = ""
        self.keys: dict[str, Any] | None = None  # what /-/npm/v1/keys answers (None: 404)
        self.asked: list[str] = []

    def document(self) -> dict[str, Any]:
        versions, times = {}, {}
        for version, published in self.versions.items():
            dist: dict[str, Any] = {
                "integrity": integrity_of(published.data),
                "tarball": f"{self.url}/npm/{NAME}/-/weather-{version}.tgz",
            }
            if published.signatures:
                dist["signatures"] = published.signatures
            if published.attestations is not None:
                dist["attestations"] = {
                    "url": f"https://registry.npmjs.org/-/npm/v1/attestations/{NAME}@{version}",
                    "provenance": {"predicateType": "https://slsa.dev/provenance/v1"},
                }
            versions[version] = {"name": NAME, "version": version, "dist": dist}
            times[version] = "2026-03-01T00:00:00.000Z"
        return {"name": NAME, "versions": versions, "time": times}

    def app(self) -> web.Application:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            self.asked.append(request.path)
            if self.down:
                return web.Response(status=503)
            response: web.StreamResponse = await handler(request)
            return response

        async def keys_endpoint(_: web.Request) -> web.Response:
            if self.keys is None:
                return web.Response(status=404)
            return web.json_response(self.keys)

        async def attestations(request: web.Request) -> web.Response:
            spec = request.match_info["spec"]
            version = spec.rpartition("@")[2]
            published = self.versions.get(version)
            if not spec.startswith(NAME) or published is None or published.attestations is None:
                return web.Response(status=404)
            return web.json_response(published.attestations)

        async def packument(request: web.Request) -> web.Response:
            if request.match_info["name"] != NAME:
                return web.Response(status=404)
            return web.Response(body=orjson.dumps(self.document()), content_type="application/json")

        app = web.Application(middlewares=[gate])
        app.router.add_get("/npm/-/npm/v1/keys", keys_endpoint)
        app.router.add_get("/npm/-/npm/v1/attestations/{spec:.*}", attestations)
        app.router.add_get("/npm/{name:.*}", packument)
        return app


@pytest.fixture
async def signed_mirror() -> AsyncIterator[SignedMirror]:
    mirror = SignedMirror(catalog())
    async with loopback(mirror.app()) as url:
        mirror.url = url
        yield mirror


def entries() -> list[dict[str, Any]]:
    package = {"registryType": "npm", "identifier": NAME, "registryBaseUrl":
               "https://registry.npmjs.org", "transport": {"type": "stdio"}}  # fmt: skip
    return [
        server_entry(SERVER, version, published=f"2026-03-0{index + 1}T00:00:00Z",
                     packages=[{**package, "version": version}], repository=REPOSITORY)
        for index, version in enumerate(catalog())
    ] + [server_entry("io.github.acme/remote", "1.0.0",
                      remotes=[{"type": "streamable-http", "url": "https://mcp.acme.example/"}])]  # fmt: skip


def trust_config(directory: Path, mirror: SignedMirror) -> None:
    """policy.yaml hides invalid signatures everywhere; `payments` serves only verified
    provenance; trust.yaml pins the registry key and the test CA's trusted root."""
    (directory / "sigstore").mkdir()
    (directory / "sigstore" / "trusted_root.json").write_bytes(orjson.dumps(SETUP.trusted_root()))
    write_yaml(directory / "trust.yaml", {"npm": {
        "keys": [{"keyid": KEY.keyid, "key": base64.b64encode(KEY.public_der).decode()}],
        "trusted_root": "./sigstore/trusted_root.json",
    }})  # fmt: skip
    write_yaml(directory / "mirrors.yaml", {"npm": f"{mirror.url}/npm/"})
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": [
        {"deny": {"signature": "invalid"}}]})  # fmt: skip
    write_yaml(directory / "views" / "payments.yaml",
               {"default": "deny", "rules": [{"allow": {"provenance": "verified"}}]})  # fmt: skip


@pytest.fixture
async def gateway(tmp_path: Path, make_config: Any, serve: Any, signed_mirror: SignedMirror) -> Any:
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    trust_config(config.directory, signed_mirror)
    client = await serve(load_config(config.directory))
    await settle(client)
    return client


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def test_invalid_signatures_are_hidden_and_only_verified_provenance_in_payments(
    gateway: Any,
) -> None:
    served = versions_of(keys(await all_entries(gateway)))
    # 1.1.0 is signed over other bytes, 1.4.0 by a key nobody trusts
    assert served == {"1.0.0", "1.2.0", "1.3.0", "1.5.0", "1.6.0"}
    latest = await (
        await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/latest")
    ).json()
    assert latest["server"]["version"] == "1.6.0"
    payments = keys(await all_entries(gateway, "/views/payments"))
    assert versions_of(payments) == {"1.0.0"}  # 1.1.0's provenance is right, its signature not
    assert ("io.github.acme/remote", "1.0.0") not in payments  # nothing to attest: absent
    latest = await gateway.get(
        f"/views/payments/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/latest"
    )
    assert (await latest.json())["server"]["version"] == "1.0.0"


async def test_served_entries_say_what_was_verified_against_which_digest_and_where(
    gateway: Any,
) -> None:
    body = await (
        await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.0.0")
    ).json()
    [package] = body["_meta"]["com.example.mcp-gateway"]["packages"]
    signals = package["signals"]
    assert signals["integrity"] == integrity_of(catalog()["1.0.0"].data)
    assert signals["source"].endswith("/npm/")
    assert signals["checkedAt"].endswith("Z")
    assert signals["signature"] == {"state": "verified", "keyid": KEY.keyid,
                                    "why": f"signed by {KEY.keyid} over {signals['integrity']}"}  # fmt: skip
    provenance = signals["provenance"]
    assert provenance["state"] == "verified"
    assert provenance["repository"] == "https://github.com/acme/weather"
    assert provenance["repositoryId"] == "1001"
    assert provenance["commit"] == COMMIT
    assert provenance["why"] == f"built by https://github.com/acme/weather at commit {COMMIT}"


@pytest.mark.parametrize(
    ("version", "signature", "provenance", "why"),
    [
        ("1.1.0", "invalid", "verified", "does not verify"),
        ("1.2.0", "verified", "invalid", "not the server's github.com/acme/weather"),
        ("1.3.0", "verified", "invalid", "does not verify"),
        ("1.4.0", "invalid", "absent", "is not a trusted registry key"),
        ("1.5.0", "absent", "absent", "no dist.signatures"),
        ("1.6.0", "verified", "invalid", "not the mirror's dist.integrity"),
    ],
)
async def test_each_broken_copy_is_invalid_and_explain_says_why(
    gateway: Any, version: str, signature: str, provenance: str, why: str
) -> None:
    report = await (await gateway.get(f"/admin/explain?name={SERVER}&version={version}",
                                      headers=TOKEN)).json()  # fmt: skip
    [item] = report["versions"]
    payments = item["views"]["payments"]
    assert payments["served"] is False
    read = payments["signals"]  # what hid it there: policy.yaml's signature rule comes first
    first = "signature invalid" if signature == "invalid" else f"provenance {provenance}"
    assert read[0].startswith(first)
    default = item["views"]["default"]
    if signature == "invalid":
        assert default["served"] is False
        assert default["signals"][0].startswith("signature invalid")
        assert any(why in line for line in default["signals"] + read)
    else:
        [package] = default["packages"]
        assert package["signals"]["signature"]["state"] == signature
        assert package["signals"]["provenance"]["state"] == provenance
        found = package["signals"]["provenance"]["why"] + package["signals"]["signature"]["why"]
        assert why in found


async def test_metrics_and_status_count_versions_per_signal_state(gateway: Any) -> None:
    status = await (await gateway.get("/admin/status", headers=TOKEN)).json()
    views = {view["name"]: view for view in status["views"]}
    assert views["default"]["signals"]["signature"] == {"verified": 4, "absent": 2}
    assert views["default"]["signals"]["provenance"] == {"verified": 1, "invalid": 3, "absent": 2}
    assert views["payments"]["signals"]["provenance"] == {"verified": 1}
    metrics = await (await gateway.get("/metrics", headers=TOKEN)).text()
    line = (
        'mcp_gateway_view_signal_versions{signal="provenance",state="invalid",view="default"} 3.0'
    )
    assert line in metrics


async def test_with_the_mirror_down_nothing_is_hidden_but_what_a_rule_asks(
    tmp_path: Path, make_config: Any, serve: Any, signed_mirror: SignedMirror
) -> None:
    signed_mirror.down = True
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    trust_config(config.directory, signed_mirror)
    client = await serve(load_config(config.directory))
    await settle(client)
    assert versions_of(keys(await all_entries(client))) == set(catalog())  # unknown: not invalid
    assert versions_of(keys(await all_entries(client, "/views/payments"))) == set()  # it asks
    body = await (
        await client.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.0.0")
    ).json()
    signals = body["_meta"]["com.example.mcp-gateway"]["packages"][0]["signals"]
    assert signals["signature"]["state"] == signals["provenance"]["state"] == "unknown"


async def test_attestations_are_asked_only_of_the_mirror(
    gateway: Any, signed_mirror: SignedMirror
) -> None:
    """The documents point at the public registry's attestations: the mirror's own endpoint
    is asked instead (nothing here could reach the public registry anyway: it would be
    `unknown`, and 1.0.0 is verified)."""
    asked = [p for p in signed_mirror.asked if "/attestations/" in p]
    assert f"/npm/-/npm/v1/attestations/{NAME}@1.0.0" in asked
    assert len(set(asked)) == 5  # each version listing provenance, once
    body = await (
        await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.0.0")
    ).json()
    signals = body["_meta"]["com.example.mcp-gateway"]["packages"][0]["signals"]
    assert signals["provenance"]["state"] == "verified"


async def test_keys_listed_by_the_mirror_are_used_and_a_mirror_without_any_is_present(
    tmp_path: Path, make_config: Any, serve: Any, signed_mirror: SignedMirror
) -> None:
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    trust_config(config.directory, signed_mirror)
    write_yaml(config.directory / "trust.yaml", {"npm": {"mirror_keys": True}})
    write_yaml(config.directory / "views" / "payments.yaml", {"default": "allow"})
    signed_mirror.keys = KEY.keys_document()
    client = await serve(load_config(config.directory))
    await settle(client)
    assert versions_of(keys(await all_entries(client))) == {
        "1.0.0",
        "1.2.0",
        "1.3.0",
        "1.5.0",
        "1.6.0",
    }
    assert "/npm/-/npm/v1/keys" in signed_mirror.asked


async def test_with_no_key_anywhere_signatures_are_present_and_hide_nothing(
    tmp_path: Path, make_config: Any, serve: Any, signed_mirror: SignedMirror
) -> None:
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    trust_config(config.directory, signed_mirror)
    write_yaml(config.directory / "trust.yaml", {"npm": {"mirror_keys": True}})
    write_yaml(config.directory / "views" / "payments.yaml", {"default": "allow"})
    client = await serve(load_config(config.directory))  # the mirror lists no keys: 404
    await settle(client)
    assert versions_of(keys(await all_entries(client))) == set(catalog())
    status = await (await client.get("/admin/status", headers=TOKEN)).json()
    default = next(view for view in status["views"] if view["name"] == "default")
    assert default["signals"]["signature"] == {"present": 6, "absent": 2}


# -- the pieces, table by table -----------------------------------------------------------


def dist(data: bytes, signatures: list[dict[str, str]], published: datetime | None = None) -> Dist:
    pairs = tuple((s["keyid"], s["sig"]) for s in signatures)
    return Dist(integrity_of(data), pairs, None, False, published)


PINNED: Keys = {KEY.keyid: (KEY.public_der, None)}
EXPIRES = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("made", "keys", "state", "why"),
    [
        (
            dist(b"x", [KEY.sign(NAME, "1.0.0", integrity_of(b"x"))]),
            PINNED,
            "verified",
            "signed by",
        ),
        (
            dist(b"x", [KEY.sign(NAME, "1.0.1", integrity_of(b"x"))]),
            PINNED,
            "invalid",
            "does not verify",
        ),  # signed for another version
        (
            dist(b"x", [KEY.sign(NAME, "1.0.0", integrity_of(b"y"))]),
            PINNED,
            "invalid",
            "does not verify",
        ),  # over other bytes
        (
            dist(b"x", [STRANGER.sign(NAME, "1.0.0", integrity_of(b"x"))]),
            PINNED,
            "invalid",
            "not a trusted registry key",
        ),
        (
            dist(b"x", [{"keyid": KEY.keyid, "sig": "not base64!"}]),
            PINNED,
            "invalid",
            "does not verify",
        ),
        (
            dist(
                b"x",
                [KEY.sign(NAME, "1.0.0", integrity_of(b"x"))],
                published=datetime(2026, 2, 1, tzinfo=UTC),
            ),
            {KEY.keyid: (KEY.public_der, EXPIRES)},
            "invalid",
            "expired on 2026-01-01",
        ),
        (
            dist(
                b"x",
                [KEY.sign(NAME, "1.0.0", integrity_of(b"x"))],
                published=datetime(2025, 12, 1, tzinfo=UTC),
            ),
            {KEY.keyid: (KEY.public_der, EXPIRES)},
            "verified",
            "signed by",
        ),  # before it expired
        (
            dist(b"x", [KEY.sign(NAME, "1.0.0", integrity_of(b"x"))]),
            None,
            "present",
            "no registry key",
        ),
        (dist(b"x", []), PINNED, "absent", "no dist.signatures"),
        (
            Dist(None, ((KEY.keyid, "AAAA"),), None, False, None),
            PINNED,
            "invalid",
            "no dist.integrity",
        ),
    ],
)
def test_registry_signatures(made: Dist, keys: Any, state: str, why: str) -> None:
    found = verify_signature(NAME, "1.0.0", made, keys)
    assert (found.state, why in found.why) == (state, True), found.why


def test_a_second_signature_by_a_trusted_key_is_enough() -> None:
    data = b"x"
    made = dist(data, [STRANGER.sign(NAME, "1.0.0", integrity_of(data)),
                       KEY.sign(NAME, "1.0.0", integrity_of(data))])  # fmt: skip
    assert verify_signature(NAME, "1.0.0", made, PINNED).keyid == KEY.keyid


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("root") / "trusted_root.json"
    path.write_bytes(orjson.dumps(SETUP.trusted_root()))
    return path


def provenance_of(document: object, root: Path, data: bytes = b"bytes") -> Provenance:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return verify_provenance(body, NAME, "2.0.0", integrity_of(data), root, (GITHUB_ISSUER,))


def test_provenance_verified_and_each_broken_copy(root: Path) -> None:
    good = attestation("2.0.0", b"bytes")
    found = provenance_of(good, root)
    assert found.state == "verified", found.why
    assert bound(found, REPOSITORY).state == "verified"
    # the same statement, a byte of its signed payload flipped
    broken = orjson.loads(orjson.dumps(good))
    envelope = broken["attestations"][0]["bundle"]["dsseEnvelope"]
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[len(payload) // 2] ^= 1
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    assert provenance_of(broken, root).state == "invalid"
    assert provenance_of(good, root, b"other bytes").state == "invalid"  # not the mirror's
    other_ca = attestation("2.0.0", b"bytes", setup=OTHER_CA)
    assert provenance_of(other_ca, root).state == "invalid"
    claims_other = attestation("2.0.0", b"bytes", claimed="evil/weather")
    found = provenance_of(claims_other, root)
    assert (found.state, "the statement names" in found.why) == ("invalid", True)
    wrong_issuer = verify_provenance(orjson.dumps(good), NAME, "2.0.0", integrity_of(b"bytes"),
                                     root, ("https://gitlab.com",))  # fmt: skip
    assert wrong_issuer.state == "invalid"
    assert provenance_of({"attestations": []}, root).state == "invalid"  # no provenance in it
    assert provenance_of({"attestations": [{"predicateType": "https://slsa.dev/provenance/v1",
                                            "bundle": {"mediaType": "x"}}]}, root).state == "invalid"  # fmt: skip
    assert provenance_of(b"<html>", root).state == "unknown"  # garbled in transit: not invalid
    assert provenance_of(good, root.parent / "missing.json").state == "unknown"


@pytest.mark.parametrize(
    ("server_repository", "state"),
    [
        (REPOSITORY, "verified"),
        ({"url": "https://GitHub.com/Acme/Weather.git", "source": "github"}, "verified"),
        ({"url": "https://github.com/acme/weather", "source": "github", "id": "2002"}, "invalid"),
        ({"url": "https://github.com/acme/weather-fork", "source": "github"}, "invalid"),
        ({"url": "https://github.com/acme/weather.evil", "source": "github"}, "invalid"),
        ({"url": "https://gitlab.com/acme/weather", "source": "gitlab"}, "invalid"),
        (None, "present"),
        ({"url": "not a url"}, "present"),
    ],
)
def test_provenance_binds_to_the_servers_own_repository(
    root: Path, server_repository: object, state: str
) -> None:
    found = provenance_of(attestation("2.0.0", b"bytes"), root)
    assert bound(found, server_repository).state == state


def test_states_combine_worst_first_and_purls_are_npms() -> None:
    assert combined([]) == "absent"
    assert combined(["verified", "unknown"]) == "unknown"
    assert combined(["verified", "absent", "unknown"]) == "absent"
    assert combined(["present", "invalid", "verified"]) == "invalid"
    assert purl("@acme/weather", "1.0.0+build.1") == "pkg:npm/%40acme/weather@1.0.0+build.1"
    assert purl("weather", "1.0.0") == "pkg:npm/weather@1.0.0"
    assert repository_key("git+https://github.com/Acme/Weather.git/") == "github.com/acme/weather"
    assert repository_key("github.com/acme/weather") is None  # not a URL: nothing to compare


# -- hostile documents and config -------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
DIST_KEYS = st.sampled_from(["integrity", "signatures", "attestations", "keyid", "sig", "url",
                             "provenance", "1.0.0", "versions", "dist", "time"])  # fmt: skip
SHAPED = st.recursive(
    JSON, lambda inner: st.dictionaries(DIST_KEYS, inner, max_size=5), max_leaves=30
)


@settings(max_examples=examples(150), deadline=None)
@given(SHAPED)
def test_any_package_document_reads_as_dist_facts_or_is_garbled(document: object) -> None:
    """Whatever a mirror answers, reading it gives well-typed facts or `MirrorGarbled`."""
    from gateway.errors import MirrorGarbled
    from gateway.registries.base import Check
    from gateway.registries.npm import NPM

    body = orjson.dumps({"versions": {"1.0.0": document}, "time": document})
    for raw in (body, orjson.dumps(document)):
        try:
            found = NPM.dists(raw, "application/json", Check("npm", "http://m/", NAME, "1.0.0"))
        except MirrorGarbled:
            continue
        for facts in found.values():
            assert facts.integrity is None or isinstance(facts.integrity, str)
            assert all(isinstance(k, str) and isinstance(s, str) for k, s in facts.signatures)
            assert facts.attestations is None or isinstance(facts.attestations, str)
            assert facts.published is None or facts.published.tzinfo is not None
            verify_signature(NAME, "1.0.0", facts, PINNED)  # never raises


@pytest.mark.parametrize(
    ("trust", "rule", "error"),
    [
        ({"npm": {"mirror_key": True}}, None, "mirror_key"),
        ({"npm": {"keys": [{"keyid": "SHA256:x", "key": "AAAA"}]}}, None, "keyid"),
        ({"npm": {"keys": [{"keyid": KEY.keyid, "key": "bm90IGEga2V5"}]}}, None, "public key"),
        ({"npm": {"trusted_root": "./missing.json"}}, None, "missing.json"),
        ({"npm": {"trusted_root": "./policy.yaml"}}, None, "not a Sigstore trusted root"),
        ({}, {"deny": {"signature": "invalid"}}, "nothing collects signatures"),
        ({"pypi": {"trusted_root": "./missing.json"}}, None, "pypi.trusted_root"),
        ({"oci": {"trusted_root": "./policy.yaml"}}, None, "oci.trusted_root"),
        (
            {"npm": {"mirror_keys": True}},
            {"allow": {"provenance": "verified"}},
            "nothing collects provenance",
        ),
        ({"npm": {"mirror_keys": True}}, {"deny": {"digest": "invalid"}}, "mcpb: true"),
        ({"npm": {"mirror_keys": True}}, {"deny": {"signature": "unsigned"}}, "signature"),
    ],
)
def test_check_refuses_what_would_never_verify(
    tmp_path: Path, capsys: Any, trust: dict[str, Any], rule: Any, error: str
) -> None:
    from gateway.cli import main

    write_yaml(tmp_path / "gateway.yaml", {"upstreams": [{"name": "u", "file": "x.json"}]})
    write_yaml(tmp_path / "trust.yaml", trust)
    write_yaml(tmp_path / "policy.yaml", {"rules": [rule] if rule else []})
    assert main(["check", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert error in err.out + err.err


# -- the commands: explain and diff ask the mirrors too ----------------------------------------


@contextlib.contextmanager
def mirror_in_thread() -> Iterator[SignedMirror]:
    """The signed mirror on its own loop in a thread (the commands run their own loops)."""
    mirror = SignedMirror(catalog())
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(mirror.app(), access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        mirror.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield mirror
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_explain_and_diff_ask_the_mirror_for_signals(tmp_path: Path, capsys: Any) -> None:
    from gateway.cli import main
    from tests.conftest import write_config

    with mirror_in_thread() as mirror:
        configs = {}
        for name, rules in (("current", [{"deny": {"signature": "invalid"}}]),
                            ("proposed", [{"deny": {"signature": "invalid"}},
                                          {"deny": {"provenance": "invalid"}}])):  # fmt: skip
            directory = tmp_path / name
            write_config(directory, {"upstreams": [file_upstream(tmp_path / "data", "official", entries())],
                                     "state_dir": str(tmp_path / "state")})  # fmt: skip
            trust_config(directory, mirror)
            (directory / "views" / "payments.yaml").unlink()
            write_yaml(directory / "policy.yaml", {"default": "allow", "rules": rules})
            configs[name] = str(directory)
        assert main(["sync", "--config", configs["current"]]) == 0
        capsys.readouterr()
        assert main(["explain", SERVER, "--config", configs["current"]]) == 0
        text = capsys.readouterr().out
        assert (
            f"provenance verified: built by https://github.com/acme/weather at commit {COMMIT}"
            in text
        )
        assert "denied by policy.yaml rules[0]: signature invalid: key" in text  # 1.4.0
        assert main(["diff", "--config", configs["current"], "--against", configs["proposed"],
                     "--verify", "--json"]) == 0  # fmt: skip
        diff = orjson.loads(capsys.readouterr().out)
        gone = {f"{SERVER}@{v}" for v in ("1.2.0", "1.3.0", "1.6.0")}  # provenance invalid
        assert set(diff["views"]["default"]["disappear"]) == gone
        # a view admitting only verified provenance: explain asks its mirror too
        write_yaml(Path(configs["current"]) / "views" / "payments.yaml", {
            "default": "deny", "rules": [{"allow": {"provenance": "verified"}}],
            "mirrors": {"npm": f"{mirror.url}/npm"},  # its own location: its own checks
        })  # fmt: skip
        assert main(["explain", SERVER, "--config", configs["current"], "--json"]) == 0
        report = orjson.loads(capsys.readouterr().out)
        served = {v["version"] for v in report["versions"] if v["views"]["payments"]["served"]}
        assert served == {"1.0.0"}


async def test_the_server_page_says_which_signal_hid_a_version(gateway: Any) -> None:
    import re

    response = await gateway.get(f"/server/{SERVER}")
    assert response.status == 200
    markup = await response.text()
    row = next(
        r for r in re.findall(r"<tr>.*?</tr>", markup) if '<td data-label="Version">1.4.0</td>' in r
    )
    assert "hidden: denied" in row
    assert "signature invalid: key" in row
    assert "is not a trusted registry key" in row


# -- what a build keeps of the signals follows the answers --------------------------------------


class Answers:
    """Mirror answers for a build, as the gateway's verifier gives them: a `generation` that
    changes when an answer is stored, and answers fresh until a time."""

    def __init__(self) -> None:
        self.generation = 0
        self.known: dict[str, tuple[Signals, float]] = {}
        self.asked: list[str] = []
        self.at = datetime.now(UTC)

    def set(self, version: str, state: Any, until: float = float("inf")) -> None:
        self.known[version] = (
            Signals("m", "sha512-x", Signature(state, "why"), None, self.at),
            until,
        )
        self.generation += 1

    def __call__(self, check: Any) -> Any:
        from gateway.registries.base import Verdict

        self.asked.append(check.version)
        signals, until = self.known[check.version]
        return Verdict("available", self.at, time.monotonic() < until, signals, until)


def signed_builder(tmp_path: Path, versions: int) -> tuple[Any, Any, Any]:
    """A snapshot builder whose policy hides invalid npm signatures, and a source of the
    server's first `versions` versions: (builder, source, origins)."""
    from gateway.catalog import Origin
    from gateway.entry import parse_item
    from gateway.merge import Source
    from gateway.snapshot import Builder
    from tests.conftest import write_config

    config = write_config(tmp_path / "config",
                          {"upstreams": [file_upstream(tmp_path / "data", "official", [])]})  # fmt: skip
    directory = config.directory
    write_yaml(directory / "trust.yaml", {"npm": {"mirror_keys": True}})
    write_yaml(directory / "mirrors.yaml", {"npm": "https://mirror.example/npm/"})
    write_yaml(directory / "policy.yaml", {"rules": [{"deny": {"signature": "invalid"}}]})
    now = datetime.now(UTC)
    items = [e for e in entries() if e["server"]["name"] == SERVER][:versions]
    source = Source("official", [parse_item(item, seen_at=now) for item in items])
    return Builder(load_config(directory)), source, {"official": Origin("official", now)}


def test_signals_kept_between_builds_follow_every_changed_or_stale_answer(tmp_path: Path) -> None:
    builder, source, origins = signed_builder(tmp_path, 3)
    answers = Answers()
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        answers.set(version, "verified")

    def served() -> set[str]:
        snapshot = builder.build([source], origins, datetime.now(UTC), answers)
        return {item.version for item in snapshot.views["default"].every.items}

    assert served() == {"1.0.0", "1.1.0", "1.2.0"}
    answers.asked.clear()
    assert served() == {"1.0.0", "1.1.0", "1.2.0"}
    assert answers.asked == []  # nothing changed: what was read is kept
    answers.set("1.1.0", "invalid")  # a new answer: read again, decided again
    assert served() == {"1.0.0", "1.2.0"}
    answers.set("1.0.0", "verified", until=time.monotonic() + 0.2)
    snapshot = builder.build([source], origins, datetime.now(UTC), answers)
    assert not snapshot.pending
    time.sleep(0.3)  # it turns stale with no new answer stored: read again, and asked for
    snapshot = builder.build([source], origins, datetime.now(UTC), answers)
    assert {check.version for check in snapshot.pending} == {"1.0.0"}


def test_a_catalog_of_one_entry_is_decided_anew_when_its_answers_change(tmp_path: Path) -> None:
    """The entry a build decides last is the one the next decides first: what was worked out
    for it must not outlive its build (a one-server catalog showed it)."""
    builder, source, origins = signed_builder(tmp_path, 1)
    nothing_yet = builder.build([source], origins, datetime.now(UTC))  # no answers: asked for
    assert {check.version for check in nothing_yet.pending} == {"1.0.0"}
    answers = Answers()
    answers.set("1.0.0", "invalid")
    answered = builder.build([source], origins, datetime.now(UTC), answers)
    assert not answered.pending
    assert [i.version for i in answered.views["default"].every.items] == []  # hidden


# -- what a hostile or changing mirror cannot do --------------------------------------------------


def test_an_integrity_naming_two_sha512s_binds_no_provenance(root: Path) -> None:
    """npm accepts bytes matching any sha512 of the integrity: a second one would let other
    bytes install under the attested one's provenance."""
    good = orjson.dumps(attestation("2.0.0", b"bytes"))
    both = f"{integrity_of(b'bytes')} {integrity_of(b'evil')}"
    found = verify_provenance(good, NAME, "2.0.0", both, root, (GITHUB_ISSUER,))
    assert found.state == "invalid"
    alone = verify_provenance(good, NAME, "2.0.0", integrity_of(b"bytes"), root, (GITHUB_ISSUER,))
    assert alone.state == "verified"


def test_not_an_attestations_document_is_unknown(
    root: Path,
) -> None:
    assert provenance_of({}, root).state == "unknown"  # a proxy's error page, as JSON
    assert provenance_of({"errors": ["no"]}, root).state == "unknown"


def test_an_expiring_key_with_no_publish_time_cannot_tell() -> None:
    made = dist(b"x", [KEY.sign(NAME, "1.0.0", integrity_of(b"x"))])  # no `time` for it
    found = verify_signature(NAME, "1.0.0", made, {KEY.keyid: (KEY.public_der, EXPIRES)})
    assert found.state == "unknown"


@pytest.mark.parametrize(
    ("server", "state"),
    [
        ("https://github.com/acme/weather/tree/main/servers/weather", "verified"),
        ("https://www.github.com/acme/weather", "verified"),
        ("https://github.com/acme/weather-other/tree/main", "invalid"),
    ],
)
def test_github_repository_urls_name_owner_and_repository(
    root: Path, server: str, state: str
) -> None:
    found = provenance_of(attestation("2.0.0", b"bytes"), root)
    assert bound(found, {"url": server, "source": "github"}).state == state


async def test_a_document_read_again_has_its_signals_read_again(
    signed_mirror: SignedMirror,
) -> None:
    """The mirror swaps 1.0.0's bytes: when its document is read again (`verify.ttl`), the
    signals are too, whatever `npm.ttl` says."""
    import aiohttp

    from gateway.config import VerifySettings
    from gateway.registries.base import Check
    from gateway.trust_config import TrustSettings
    from gateway.verify import Verifier

    signing = TrustSettings.model_validate(
        {"npm": {"keys": [{"keyid": KEY.keyid, "key": base64.b64encode(KEY.public_der).decode()}]}}
    )
    check = Check("npm", f"{signed_mirror.url}/npm/", NAME, "1.0.0")
    async with aiohttp.ClientSession() as session:
        verifier = Verifier(VerifySettings(), session, signing)
        await verifier.run([check])
        found = verifier.lookup(check)
        assert found is not None
        assert found.signals is not None
        assert found.signals.state("signature") == "verified"
        signed_mirror.versions["1.0.0"] = Published(b"other bytes, unsigned")
        for key, (document, _) in list(verifier._documents.items()):
            verifier._documents[key] = (document, 0.0)  # as when verify.ttl has run out
        await verifier.run([check])
        found = verifier.lookup(check)
        assert found is not None
        assert found.signals is not None
        assert found.signals.state("signature") == "absent"
        assert found.signals.integrity == integrity_of(b"other bytes, unsigned")


async def test_a_view_with_its_own_mirror_learns_the_signals_policy_yaml_reads(
    tmp_path: Path, make_config: Any, serve: Any, signed_mirror: SignedMirror
) -> None:
    """policy.yaml admits only verified signatures; only the view has an npm mirror: its
    mirror is asked, and what it verifies is served there."""
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    directory = config.directory
    trust_config(directory, signed_mirror)
    write_yaml(directory / "mirrors.yaml", {})
    write_yaml(directory / "policy.yaml", {"default": "deny", "rules": [
        {"allow": {"signature": "verified"}}]})  # fmt: skip
    write_yaml(directory / "views" / "payments.yaml",
               {"default": "allow", "mirrors": {"npm": f"{signed_mirror.url}/npm/"}})  # fmt: skip
    client = await serve(load_config(directory))
    await settle(client)
    assert versions_of(keys(await all_entries(client))) == set()  # no mirror: unknown
    payments = versions_of(keys(await all_entries(client, "/views/payments")))
    assert payments == {"1.0.0", "1.2.0", "1.3.0", "1.6.0"}


def test_signals_find_a_version_as_the_mirror_check_does() -> None:
    """npm compares versions as written (`1.0.0+build.7` is not `1.0.0` to the mirror
    check): the signals read the same version the mirror check found, or none."""
    from gateway.npm_trust import _dist_of
    from gateway.registries.npm import NPM

    found = _dist(b"x")
    for asked in ("1.0.0", "1.0.0+build.7", "1.0.1", "v1.0.0"):
        same = NPM.same_version(asked, "1.0.0")
        assert _dist_of({"1.0.0": found}, asked) == (("1.0.0", found) if same else None)


def _dist(data: bytes) -> Dist:
    return dist(data, [KEY.sign(NAME, "1.0.0", integrity_of(data))])


async def test_a_mirror_back_from_an_outage_is_asked_again_within_its_minute(
    tmp_path: Path,
    make_config: Any,
    serve: Any,
    signed_mirror: SignedMirror,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown answers are kept a minute (here a fifth of a second), then asked again without
    waiting for an upstream change or `ttl`: a view admitting only verified provenance serves
    again soon after its mirror is back."""
    monkeypatch.setattr("gateway.verify.UNKNOWN_TTL", 0.2)  # mirror checks
    monkeypatch.setattr("gateway.collecting.UNKNOWN_TTL", 0.2)  # the signals collected
    monkeypatch.setattr("gateway.npm_trust.UNKNOWN_TTL", 0.2)  # the mirror's registry keys
    signed_mirror.down = True
    upstream = file_upstream(tmp_path / "data", "official", entries())
    config = make_config(upstreams=[upstream], admin_token="tok3n", access_log=False)
    trust_config(config.directory, signed_mirror)
    client = await serve(load_config(config.directory))
    await settle(client)
    assert versions_of(keys(await all_entries(client, "/views/payments"))) == set()
    signed_mirror.down = False
    for _ in range(150):  # the refresher's own rounds, nothing else
        if versions_of(keys(await all_entries(client, "/views/payments"))) == {"1.0.0"}:
            break
        await asyncio.sleep(0.05)
    assert versions_of(keys(await all_entries(client, "/views/payments"))) == {"1.0.0"}


def test_a_repository_that_is_not_a_url_binds_nothing_and_stops_nothing() -> None:
    assert repository_key("https://[x/acme") is None
    verified = Provenance("verified", "built by", "https://github.com/acme/weather")
    assert bound(verified, {"url": "https://[x/acme"}).state == "present"
    claimed = Provenance("verified", "built by", "https://[x")
    assert bound(claimed, REPOSITORY).state == "invalid"


def test_a_job_that_fails_unforeseen_is_unknown_and_its_batch_answered() -> None:
    from gateway.provenance import verify_all

    good = ("signature", NAME, "1.0.0", _dist(b"x"), None)
    broken = ("signature", NAME, "1.0.0", None, None)  # not a Dist: raises inside
    answers = verify_all([broken, good])
    assert answers[0].state == "unknown"
    assert answers[0].why.startswith("not verified: AttributeError")
    assert answers[1].state in ("absent", "present", "invalid", "verified")


def test_bundles_go_to_the_helper_bounded_in_count_and_bytes() -> None:
    from gateway.collecting import _BATCH, _BATCH_BYTES, _batches

    big = [("oci", b"x" * (_BATCH_BYTES // 3), "d", None, ()) for _ in range(7)]
    assert [len(b) for b in _batches(big)] == [3, 3, 1]
    small = [("signature", NAME, "1", None, None)] * (_BATCH + 1)
    assert [len(b) for b in _batches(small)] == [_BATCH, 1]
