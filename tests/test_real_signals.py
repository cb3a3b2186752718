"""npm signatures and provenance through a real Verdaccio on loopback.

A real tarball (`npm pack`) and its real integrity are published to Verdaccio with
`dist.signatures` and `dist.attestations` made by the test's own signing setup (a registry key
and a test CA whose trusted root trust.yaml pins). This shows that Verdaccio (6.8) keeps both in
the package documents it serves (full and abbreviated), and that the gateway verifies them
there: the signature over the mirror's `dist.integrity`, and the provenance fetched from an
attestation source trust.yaml names (Verdaccio serves no `/-/npm/v1/attestations`), for the
mirror's bytes. Broken copies come out `invalid`.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import yaml
from aiohttp import web

from gateway.loader import load_config
from tests.conftest import file_upstream, loopback
from tests.fakes import server_entry
from tests.signing import GITHUB_ISSUER, NpmKey, SigningSetup, github_identity, slsa_statement
from tests.test_real_mirrors import (
    NPM_INSTALL,
    TOOL_TIMEOUT,
    VERDACCIO,
    free_port,
    require_tool,
    running,
    tool_env,
    verdaccio_config,
)
from tests.trusted import settle

pytestmark = [pytest.mark.mirrors, pytest.mark.slow]

NAME = "@acme/signed-mcp"
SERVER = "io.github.acme/signed-mcp"
NS = "com.example.mcp-gateway"
REPOSITORY = {"url": "https://github.com/acme/signed-mcp", "source": "github", "id": "4242"}
KEY, STRANGER = NpmKey(), NpmKey()
SETUP, OTHER_CA = SigningSetup(), SigningSetup("other")
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")  # right; provenance from another CA; unknown key
SENT: dict[str, list[dict[str, str]]] = {}  # the dist.signatures published, by version


def packed(work: Path, version: str, env: dict[str, str]) -> bytes:
    """A real npm tarball of a tiny package, made by `npm pack`."""
    directory = work / f"pack-{version}"
    directory.mkdir(parents=True)
    manifest = {"name": NAME, "version": version, "description": "A signed test MCP server."}
    (directory / "package.json").write_bytes(orjson.dumps(manifest))
    (directory / "index.js").write_text("module.exports = {};\n", encoding="utf-8")
    done = subprocess.run(["npm", "pack", "--pack-destination", str(directory)], cwd=directory,
                          env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [tarball] = directory.glob("*.tgz")
    return tarball.read_bytes()


def provenance(version: str, data: bytes, setup: SigningSetup) -> dict[str, Any]:
    commit = "ab" * 20
    statement = slsa_statement(
        name=NAME, version=version, integrity_sha512_hex=hashlib.sha512(data).hexdigest(),
        repository="acme/signed-mcp", repository_id="4242", owner_id="7", commit=commit,
    )  # fmt: skip
    san, extensions = github_identity(
        repository="acme/signed-mcp", repository_id="4242", owner_id="7", commit=commit
    )
    bundle = setup.attest(statement, san=san, issuer=GITHUB_ISSUER, extensions=extensions)
    return {"attestations": [{"predicateType": "https://slsa.dev/provenance/v1", "bundle": bundle}]}


def publish(registry: str, version: str, data: bytes, attestations_url: str) -> None:
    """What `npm publish` sends, with the dist signals a signing registry adds."""
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    signer = STRANGER if version == "1.2.0" else KEY
    filename = f"signed-mcp-{version}.tgz"
    SENT[version] = [signer.sign(NAME, version, integrity)]
    document = {
        "_id": NAME, "name": NAME, "dist-tags": {"latest": version},
        "versions": {version: {
            "_id": f"{NAME}@{version}", "name": NAME, "version": version,
            "dist": {
                "integrity": integrity, "shasum": hashlib.sha1(data).hexdigest(),
                "tarball": f"{registry}{NAME}/-/{filename}",
                "signatures": SENT[version],
                "attestations": {"url": f"{attestations_url}{NAME}@{version}",
                                 "provenance": {"predicateType": "https://slsa.dev/provenance/v1"}},
            },
        }},
        "_attachments": {filename: {"content_type": "application/octet-stream",
                                    "data": base64.b64encode(data).decode(), "length": len(data)}},
    }  # fmt: skip
    request = urllib.request.Request(
        f"{registry}{quote(NAME, safe='@')}", data=orjson.dumps(document), method="PUT",
        headers={"Content-Type": "application/json", "Authorization": "Bearer anything"},
    )  # fmt: skip
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=TOOL_TIMEOUT) as response:
        assert response.status in (200, 201)


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tool(VERDACCIO, "Verdaccio (tests/mirrors)", NPM_INSTALL)
    if shutil.which("npm") is None:
        require_tool(None, "npm", "apt-get install nodejs npm")
    work = tmp_path_factory.mktemp("pack")
    env = tool_env(work / "home")
    return {version: packed(work, version, env) for version in VERSIONS}


@pytest.fixture
async def attestation_source(tarballs: dict[str, bytes]) -> AsyncIterator[str]:
    """Where the attestations are served from: Verdaccio serves none."""
    documents = {
        version: provenance(version, data, OTHER_CA if version == "1.1.0" else SETUP)
        for version, data in tarballs.items()
    }

    async def answer(request: web.Request) -> web.Response:
        name, _, version = request.match_info["spec"].rpartition("@")
        if name != NAME or version not in documents:
            return web.Response(status=404)
        return web.json_response(documents[version])

    app = web.Application()
    app.router.add_get("/attestations/{spec:.*}", answer)
    async with loopback(app) as url:
        yield f"{url}/attestations/"


@pytest.fixture
def verdaccio_signed(
    tmp_path: Path, tarballs: dict[str, bytes], attestation_source: str
) -> Iterator[str]:
    root = tmp_path / "verdaccio"
    root.mkdir()
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/"
    args = [str(VERDACCIO), "--config", str(verdaccio_config(root)), "--listen", listen]
    env = tool_env(root / "home")
    with running(args, env=env, cwd=root, log=root / "verdaccio.log", ready_url=url + "-/ping"):
        for version, data in tarballs.items():
            publish(url, version, data, attestation_source)
        yield url


def fetched(url: str, accept: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=TOOL_TIMEOUT) as response:
        found: dict[str, Any] = orjson.loads(response.read())
        return found


def test_verdaccio_keeps_signatures_and_attestations_in_what_it_serves(
    verdaccio_signed: str, tarballs: dict[str, bytes]
) -> None:
    for accept in ("application/json", "application/vnd.npm.install-v1+json"):
        document = fetched(f"{verdaccio_signed}{quote(NAME, safe='@')}", accept)
        dist = document["versions"]["1.0.0"]["dist"]
        integrity = (
            "sha512-" + base64.b64encode(hashlib.sha512(tarballs["1.0.0"]).digest()).decode()
        )
        assert dist["integrity"] == integrity
        assert dist["signatures"] == SENT["1.0.0"]  # passed through unchanged
        assert dist["attestations"]["provenance"]["predicateType"].startswith("https://slsa.dev")


async def test_the_gateway_verifies_what_verdaccio_serves(
    tmp_path: Path, make_config: Any, serve: Any, verdaccio_signed: str, attestation_source: str
) -> None:
    package = {"registryType": "npm", "identifier": NAME, "registryBaseUrl":
               "https://registry.npmjs.org", "transport": {"type": "stdio"}}  # fmt: skip
    items = [server_entry(SERVER, v, published=f"2026-04-0{i + 1}T00:00:00Z",
                          packages=[{**package, "version": v}], repository=REPOSITORY)
             for i, v in enumerate(VERSIONS)]  # fmt: skip
    upstream = file_upstream(tmp_path / "data", "upstream", items)
    config = make_config(upstreams=[upstream], access_log=False)
    directory = config.directory
    (directory / "trusted_root.json").write_bytes(orjson.dumps(SETUP.trusted_root()))
    files = {
        "mirrors.yaml": {"npm": verdaccio_signed},
        "trust.yaml": {"npm": {
            "keys": [{"keyid": KEY.keyid, "key": base64.b64encode(KEY.public_der).decode()}],
            "trusted_root": "./trusted_root.json", "attestations": [attestation_source]}},
        "policy.yaml": {"rules": [{"deny": {"signature": "invalid"}}]},
        "views/payments.yaml": {"default": "deny", "rules": [{"allow": {"provenance": "verified"}}]},
    }  # fmt: skip
    for name, document in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(yaml.safe_dump(document), encoding="utf-8")
    client = await serve(load_config(directory))
    await settle(client)

    async def versions(base: str = "") -> list[str]:
        answer = await client.get(f"{base}/v0.1/servers/{quote(SERVER, safe='')}/versions")
        return sorted(e["server"]["version"] for e in (await answer.json())["servers"])

    assert await versions() == ["1.0.0", "1.1.0"]  # 1.2.0: signed by a key nobody pinned
    assert await versions("/views/payments") == ["1.0.0"]  # 1.1.0: a certificate of another CA
    answer = await client.get(f"/v0.1/servers/{quote(SERVER, safe='')}/versions/1.0.0")
    signals = (await answer.json())["_meta"][NS]["packages"][0]["signals"]
    assert signals["source"] == verdaccio_signed
    assert signals["signature"]["state"] == "verified"
    assert signals["provenance"]["state"] == "verified"
    assert signals["provenance"]["repository"] == REPOSITORY["url"]
    answer = await client.get(f"/v0.1/servers/{quote(SERVER, safe='')}/versions/1.1.0")
    signals = (await answer.json())["_meta"][NS]["packages"][0]["signals"]
    assert signals["provenance"]["state"] == "invalid"
    assert "does not verify" in signals["provenance"]["why"]
