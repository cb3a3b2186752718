"""Images with signatures, provenance and SBOMs attached, pushed the way cosign and oras push
them, to any OCI registry a `Writer` can write to: a real distribution registry over HTTP, or
the loopback fake (`FakeOciRegistry`) that serves the referrers API.

Attaching a referrer pushes a manifest whose `subject` is the image; a registry without the
referrers API also gets the referrers tag `sha256-<hex>` (an index of the referrers), which
is what cosign and oras write there. Legacy cosign tags (`sha256-<hex>.sig`/`.att`/`.sbom`)
are manifests of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from tests.signing import GITHUB_ISSUER, SigningSetup, github_identity, slsa_statement

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
NOTATION = "application/vnd.cncf.notary.signature"
SPDX = "application/spdx+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
REPO = "acme/tool"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Writer(Protocol):
    tag_schema: bool  # the registry has no referrers API: referrers go in the tag index too

    def put_blob(self, repo: str, data: bytes) -> str: ...

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str: ...


def _manifest(config: tuple[str, bytes], layers: list[tuple[str, bytes]], **extra: Any) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": config[0], "digest": digest_of(config[1]), "size": len(config[1])},
        "layers": [{"mediaType": m, "digest": digest_of(d), "size": len(d)} for m, d in layers],
        **extra,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def push_image(writer: Writer, tag: str, marker: str) -> tuple[str, bytes]:
    """An image (a config and one layer) at `tag`: its manifest digest and bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "marker": marker}).encode()
    layer = f"layer of {marker}".encode()
    writer.put_blob(REPO, config)
    writer.put_blob(REPO, layer)
    body = _manifest(("application/vnd.oci.image.config.v1+json", config),
                     [("application/vnd.oci.image.layer.v1.tar", layer)])  # fmt: skip
    return writer.put_manifest(REPO, tag, body, MANIFEST), body


@dataclass
class Attacher:
    """Attaches artifacts to one image, keeping its referrers tag up to date."""

    writer: Writer
    subject: str  # the image's manifest digest
    size: int
    index: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, artifact_type: str, layer_type: str, data: bytes) -> None:
        self.writer.put_blob(REPO, b"{}")
        self.writer.put_blob(REPO, data)
        body = _manifest((EMPTY, b"{}"), [(layer_type, data)], artifactType=artifact_type,
                         subject={"mediaType": MANIFEST, "digest": self.subject,
                                  "size": self.size})  # fmt: skip
        digest = self.writer.put_manifest(REPO, digest_of(body), body, MANIFEST)
        self.index.append({"mediaType": MANIFEST, "digest": digest, "size": len(body),
                           "artifactType": artifact_type})  # fmt: skip
        if self.writer.tag_schema:
            tag = self.subject.replace(":", "-")
            listing = {"schemaVersion": 2, "mediaType": INDEX, "manifests": self.index}
            self.writer.put_manifest(REPO, tag, json.dumps(listing).encode(), INDEX)

    def legacy(self, suffix: str, layer_type: str, data: bytes) -> None:
        """A legacy cosign tag (`sha256-<hex>.sig`, `.att`, `.sbom`)."""
        self.writer.put_blob(REPO, b"{}")
        self.writer.put_blob(REPO, data)
        body = _manifest(("application/vnd.oci.image.config.v1+json", b"{}"), [(layer_type, data)])
        self.writer.put_manifest(REPO, f"{self.subject.replace(':', '-')}.{suffix}", body, MANIFEST)


def bundle(
    setup: SigningSetup, digest: str, *, provenance: bool = False, repository: str = REPO
) -> bytes:
    """A Sigstore bundle (cosign's bundle format) over an image digest: a signature (cosign's
    sign statement) or SLSA provenance, by a GitHub Actions identity of `repository`."""
    hexdigest = digest.split(":", 1)[1]
    if provenance:
        statement = slsa_statement(name="tool", version="1", integrity_sha512_hex="00",
                                   repository=repository, repository_id="4242", owner_id="7",
                                   commit="ab" * 20)  # fmt: skip
        statement["subject"] = [{"name": f"registry/{REPO}", "digest": {"sha256": hexdigest}}]
    else:
        statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": COSIGN_SIGN,
                     "subject": [{"name": f"registry/{REPO}", "digest": {"sha256": hexdigest}}],
                     "predicate": {}}  # fmt: skip
    san, extensions = github_identity(repository=repository, repository_id="4242",
                                      owner_id="7", commit="ab" * 20)  # fmt: skip
    made = setup.attest(statement, san=san, issuer=GITHUB_ISSUER, extensions=extensions)
    return json.dumps(made).encode()


@dataclass
class Scenario:
    """The versions pushed, and what each should come out as (signature, provenance)."""

    expected: dict[str, tuple[str, str]]
    digests: dict[str, str]


def push_all(writer: Writer, setup: SigningSetup, other_ca: SigningSetup) -> Scenario:
    """Versions of acme/tool, each with one thing right or wrong (see `expected`)."""
    expected: dict[str, tuple[str, str]] = {}
    digests: dict[str, str] = {}

    def image(version: str) -> Attacher:
        digest, body = push_image(writer, version, version)
        digests[version] = digest
        return Attacher(writer, digest, len(body))

    one = image("1.0.0")  # a signature and provenance as referrers, and an SBOM
    one.attach(BUNDLE, BUNDLE, bundle(setup, one.subject))
    one.attach(BUNDLE, BUNDLE, bundle(setup, one.subject, provenance=True))
    one.attach(SPDX, SPDX, b'{"spdxVersion": "SPDX-2.3"}')
    expected["1.0.0"] = ("verified", "verified")
    image("1.1.0").legacy("sig", SIMPLE_SIGNING, b'{"critical": {}}')  # legacy simple signing
    expected["1.1.0"] = ("present", "absent")
    other = image("1.2.0")  # signed over another image's digest
    other.attach(BUNDLE, BUNDLE, bundle(setup, digests["1.0.0"]))
    expected["1.2.0"] = ("invalid", "absent")
    foreign = image("1.3.0")  # a certificate from another CA
    foreign.attach(BUNDLE, BUNDLE, bundle(other_ca, foreign.subject))
    expected["1.3.0"] = ("invalid", "absent")
    stranger = image("1.4.0")  # signed by another repository's workflow
    stranger.attach(BUNDLE, BUNDLE, bundle(setup, stranger.subject, repository="evil/tool"))
    expected["1.4.0"] = ("invalid", "absent")
    image("1.5.0")  # nothing attached
    expected["1.5.0"] = ("absent", "absent")
    tagged = image("1.6.0")  # a cosign .sig tag holding a bundle, and a legacy attestation
    tagged.legacy("sig", BUNDLE, bundle(setup, tagged.subject))
    tagged.legacy("att", "application/vnd.dsse.envelope.v1+json", b'{"payload": ""}')
    expected["1.6.0"] = ("verified", "present")
    notation = image("1.7.0")  # Notation: present, never verified
    notation.attach(NOTATION, "application/jose+json", b'{"payload": "..."}')
    expected["1.7.0"] = ("present", "absent")
    both = image("1.8.0")  # another repository's signature first, then its own: one suffices
    both.attach(BUNDLE, BUNDLE, bundle(setup, both.subject, repository="evil/tool"))
    both.attach(BUNDLE, BUNDLE, bundle(setup, both.subject))
    expected["1.8.0"] = ("verified", "absent")
    return Scenario(expected, digests)


class FakeOciRegistry:
    """A distribution registry with the referrers API, on loopback: manifests and blobs
    by digest, tags, and `GET /v2/<repo>/referrers/<digest>` from the manifests' subjects."""

    tag_schema = False

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest -> (body, media type)
        self.tags: dict[str, str] = {}
        self.asked: list[str] = []
        self.down = False
        self.delay = 0.0  # seconds before each answer

    def put_blob(self, repo: str, data: bytes) -> str:
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        digest = digest_of(body)
        self.manifests[digest] = (body, media_type)
        if not reference.startswith("sha256:"):
            self.tags[reference] = digest
        return digest

    def app(self) -> web.Application:
        async def manifest(request: web.Request) -> web.Response:
            reference = request.match_info["reference"]
            digest = self.tags.get(reference, reference)
            found = self.manifests.get(digest)
            if found is None:
                return web.Response(status=404)
            body, media_type = found
            headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(body))})
            return web.Response(body=body, headers=headers)

        async def blob(request: web.Request) -> web.Response:
            found = self.blobs.get(request.match_info["digest"])
            return web.Response(body=found) if found is not None else web.Response(status=404)

        async def referrers(request: web.Request) -> web.Response:
            subject = request.match_info["digest"]
            listed = []
            for digest, (body, media_type) in self.manifests.items():
                document = json.loads(body)
                if (document.get("subject") or {}).get("digest") == subject:
                    listed.append({"mediaType": media_type, "digest": digest, "size": len(body),
                                   "artifactType": document.get("artifactType")})  # fmt: skip
            index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": listed}
            return web.Response(body=json.dumps(index).encode(), content_type=INDEX)

        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            self.asked.append(request.path)
            if self.down:
                return web.Response(status=503)
            if self.delay:
                await asyncio.sleep(self.delay)
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[gate])
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{reference}", manifest)
        app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blob)
        app.router.add_get("/v2/{repo:.+}/referrers/{digest}", referrers)
        return app
