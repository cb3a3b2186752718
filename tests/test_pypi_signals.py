"""PyPI PEP 740 provenance through the gateway: read at each view's own PyPI mirror (a PEP 691
JSON index on loopback), verified for the sha256 the mirror serves against the test's own
trusted root (`tests/signing.py`), bound to the server's repository, decided on by policy and
said in the served `_meta`, the server page and `explain`. Broken copies come out `invalid`;
a source that is down comes out `unknown` and hides nothing a rule did not ask to hide."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import loopback
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys
from tests.test_pypi_provenance import SETUP, provenance
from tests.trusted import ROOT, explained, start_gateway

SERVER = "io.github.acme/tools"
PROJECT = "acme-tools"
REPOSITORY = {"url": "https://github.com/acme/tools", "source": "github"}


def wheel(version: str) -> str:
    return f"acme_tools-{version}-py3-none-any.whl"


def sdist(version: str) -> str:
    return f"acme_tools-{version}.tar.gz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class File:
    """A distribution file the mirror lists: its bytes, and where its provenance is."""

    filename: str
    data: bytes
    provenance: bytes | None = None  # served by the provenance source (or the mirror)
    where: str = "source"  # "source", "mirror", "elsewhere" (a location nobody named)


def release(version: str, **changes: Any) -> File:
    data = f"wheel of {version}".encode()
    made = provenance(name=wheel(version), digest=sha(data))
    return File(wheel(version), data, **{"provenance": made, **changes})


def files() -> dict[str, list[File]]:
    """Versions of acme-tools, each with one thing right or wrong (see the test names)."""
    v11 = release("1.1.0")
    return {
        "1.0.0": [release("1.0.0")],
        # attested over other bytes than the mirror serves
        "1.1.0": [File(v11.filename, b"other bytes", v11.provenance)],
        # published from another repository
        "1.2.0": [release("1.2.0", provenance=provenance(
            name=wheel("1.2.0"), digest=sha(b"wheel of 1.2.0"), repository="evil/tools"))],
        "1.3.0": [File(wheel("1.3.0"), b"wheel of 1.3.0")],  # none listed
        "1.4.0": [release("1.4.0", where="elsewhere")],  # at a location trust.yaml does not name
        # the wheel is attested, the sdist is not: uvx may install either
        "1.5.0": [release("1.5.0"), File(sdist("1.5.0"), b"sdist of 1.5.0")],
        "1.6.0": [release("1.6.0", where="mirror")],  # the mirror serves it itself
        # two wheels, one published from another repository: invalid, whichever comes first
        "1.7.0": [release("1.7.0"), evil_wheel("1.7.0")],
        "1.8.0": [evil_wheel("1.8.0"), release("1.8.0")],
    }  # fmt: skip


def evil_wheel(version: str) -> File:
    """A second wheel of the version, attested, but published from another repository."""
    name, data = f"acme_tools-{version}-cp311-none-any.whl", f"cp311 wheel of {version}".encode()
    return File(name, data, provenance(name=name, digest=sha(data), repository="evil/tools"))


@dataclass
class PypiMirror:
    """A PyPI mirror (PEP 691 JSON) and a provenance source, both on loopback."""

    versions: dict[str, list[File]] = field(default_factory=files)
    url: str = ""
    source: str = ""
    down: bool = False  # the mirror
    source_down: bool = False  # the provenance source
    asked: list[str] = field(default_factory=list)

    def provenance_url(self, file: File) -> str:
        base = {"source": self.source, "mirror": f"{self.url}/simple/_provenance",
                "elsewhere": "https://pypi.org/integrity/acme-tools"}[file.where]  # fmt: skip
        return f"{base}/{file.filename}/provenance"

    def page(self) -> dict[str, Any]:
        listed = []
        for found in self.versions.values():
            for file in found:
                item: dict[str, Any] = {
                    "filename": file.filename,
                    "url": f"{self.url}/files/{file.filename}",
                    "hashes": {"sha256": sha(file.data)},
                }
                if file.provenance is not None:
                    item["provenance"] = self.provenance_url(file)
                listed.append(item)
        return {"meta": {"api-version": "1.1"}, "name": PROJECT, "files": listed}

    def served(self, filename: str) -> bytes | None:
        for found in self.versions.values():
            for file in found:
                if file.filename == filename:
                    return file.provenance
        return None

    def mirror_app(self) -> web.Application:
        async def project(request: web.Request) -> web.Response:
            self.asked.append(request.path)
            if self.down:
                return web.Response(status=503)
            if request.match_info["project"] != PROJECT:
                return web.Response(status=404)
            body = orjson.dumps(self.page())
            return web.Response(body=body, content_type="application/vnd.pypi.simple.v1+json")

        async def own(request: web.Request) -> web.Response:
            self.asked.append(request.path)
            found = self.served(request.match_info["file"])
            if self.down or found is None:
                return web.Response(status=503 if self.down else 404)
            return web.Response(body=found, content_type="application/vnd.pypi.integrity.v1+json")

        app = web.Application()
        app.router.add_get("/simple/_provenance/{file}/provenance", own)
        app.router.add_get("/simple/{project}/", project)
        return app

    def source_app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            self.asked.append(request.path)
            if self.source_down:
                return web.Response(status=503)
            found = self.served(request.match_info["file"])
            if found is None:
                return web.Response(status=404)
            return web.Response(body=found, content_type="application/vnd.pypi.integrity.v1+json")

        app = web.Application()
        app.router.add_get("/{file}/provenance", answer)
        return app


@pytest.fixture
async def pypi_mirror() -> AsyncIterator[PypiMirror]:
    mirror = PypiMirror()
    async with loopback(mirror.mirror_app()) as url, loopback(mirror.source_app()) as source:
        mirror.url, mirror.source = url, source
        yield mirror


def entries(versions: list[str]) -> list[dict[str, Any]]:
    """The server's versions, each with the acme-tools release of that version, and a
    remote-only server."""
    package = {"registryType": "pypi", "identifier": PROJECT, "registryBaseUrl":
               "https://pypi.org", "transport": {"type": "stdio"}}  # fmt: skip
    return [
        server_entry(SERVER, version, published=f"2026-03-0{index + 1}T00:00:00Z",
                     packages=[{**package, "version": version}], repository=REPOSITORY)
        for index, version in enumerate(versions)
    ] + [server_entry("io.github.acme/remote", "1.0.0",
                      remotes=[{"type": "streamable-http", "url": "https://mcp.acme.example/"}])]  # fmt: skip


async def start(
    tmp_path: Path, make_config: Any, serve: Any, mirror: PypiMirror, name: str = "config"
) -> Any:
    """policy.yaml hides invalid provenance everywhere; `secure` serves only verified."""
    return await start_gateway(
        tmp_path, make_config, serve, entries(list(files())),
        trust={"pypi": {"trusted_root": ROOT, "provenance_sources": [f"{mirror.source}/"]}},
        mirrors={"pypi": f"{mirror.url}/simple/"}, deny={"provenance": "invalid"},
        view=("secure", {"provenance": "verified"}), setup=SETUP, name=name,
    )  # fmt: skip


@pytest.fixture
async def gateway(tmp_path: Path, make_config: Any, serve: Any, pypi_mirror: PypiMirror) -> Any:
    return await start(tmp_path, make_config, serve, pypi_mirror)


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def signals_of(client: Any, version: str) -> dict[str, Any]:
    body = await (
        await client.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/{version}")
    ).json()
    [package] = body["_meta"]["com.example.mcp-gateway"]["packages"]
    found: dict[str, Any] = package["signals"]
    return found


async def test_invalid_provenance_is_hidden_and_only_verified_in_the_secure_view(
    gateway: Any,
) -> None:
    served = versions_of(keys(await all_entries(gateway)))
    assert served == {"1.0.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0"}  # the others: invalid
    secure = keys(await all_entries(gateway, "/views/secure"))
    assert versions_of(secure) == {"1.0.0", "1.6.0"}
    assert ("io.github.acme/remote", "1.0.0") not in secure  # nothing to attest: absent
    latest = await gateway.get(
        f"/views/secure/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/latest"
    )
    assert (await latest.json())["server"]["version"] == "1.6.0"


async def test_served_entries_say_what_was_verified_against_which_digest(gateway: Any) -> None:
    signals = await signals_of(gateway, "1.0.0")
    assert signals["integrity"] == f"{wheel('1.0.0')} sha256:{sha(b'wheel of 1.0.0')}"
    assert signals["source"].endswith("/simple/")
    assert "signature" not in signals  # PyPI has no registry signatures
    provenance = signals["provenance"]
    assert provenance["state"] == "verified"
    assert provenance["repository"] == "https://github.com/acme/tools"
    assert provenance["why"].startswith(
        f"{wheel('1.0.0')}: published by https://github.com/acme/tools"
    )


@pytest.mark.parametrize(
    ("version", "state", "why"),
    [
        ("1.1.0", "invalid", "not the sha256 the mirror serves"),
        ("1.2.0", "invalid", "not the server's github.com/acme/tools"),
        ("1.3.0", "absent", "lists no provenance"),
        ("1.4.0", "present", "a location trust.yaml does not name"),
        ("1.5.0", "absent", f"{sdist('1.5.0')}: the mirror's index lists no provenance"),
        ("1.6.0", "verified", "published by"),
        ("1.7.0", "invalid", "not the server's github.com/acme/tools"),
        ("1.8.0", "invalid", "not the server's github.com/acme/tools"),
    ],
)
async def test_each_file_and_broken_copy_gets_its_state_and_explain_says_why(
    gateway: Any, version: str, state: str, why: str
) -> None:
    views = await explained(gateway, SERVER, version)
    default, secure = views["default"], views["secure"]
    if state == "invalid":  # policy.yaml's rule hid it, and says what it read
        assert default["served"] is False
        assert default["signals"][0].startswith("provenance invalid")
        assert any(why in line for line in default["signals"])
    else:
        [package] = default["packages"]
        assert package["signals"]["provenance"]["state"] == state
        assert why in package["signals"]["provenance"]["why"]
    assert secure["served"] is (state == "verified")
    if state != "verified":
        assert secure["signals"][0].startswith(f"provenance {state}")


async def test_nothing_is_asked_at_a_location_trust_yaml_does_not_name(
    gateway: Any, pypi_mirror: PypiMirror
) -> None:
    assert pypi_mirror.asked  # the index and provenance objects were asked
    assert all("1.4.0" not in path for path in pypi_mirror.asked)


async def test_with_the_mirror_or_the_source_down_nothing_is_hidden_but_what_a_rule_asks(
    tmp_path: Path, make_config: Any, serve: Any, pypi_mirror: PypiMirror
) -> None:
    pypi_mirror.source_down = True
    client = await start(tmp_path, make_config, serve, pypi_mirror)
    assert (await signals_of(client, "1.0.0"))["provenance"]["state"] == "unknown"
    assert (await signals_of(client, "1.6.0"))["provenance"]["state"] == "verified"  # the mirror's
    assert versions_of(keys(await all_entries(client))) == set(files())  # unknown: not invalid
    pypi_mirror.down = True
    other = await start(tmp_path, make_config, serve, pypi_mirror, "again")
    assert versions_of(keys(await all_entries(other))) == set(files())  # unknown: not invalid
    assert versions_of(keys(await all_entries(other, "/views/secure"))) == set()  # it asks
    assert (await signals_of(other, "1.0.0"))["provenance"]["state"] == "unknown"


async def test_the_server_page_says_which_file_hid_a_version(gateway: Any) -> None:
    response = await gateway.get(f"/server/{SERVER}")
    assert response.status == 200
    markup = await response.text()
    row = next(
        r for r in re.findall(r"<tr>.*?</tr>", markup) if '<td data-label="Version">1.1.0</td>' in r
    )
    assert "hidden: denied" in row
    assert "provenance invalid" in row
    assert wheel("1.1.0") in row
