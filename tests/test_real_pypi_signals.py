"""PEP 740 provenance against a real PyPI index server: devpi-server (from PyPI, the `test`
extra) on loopback serves real wheels through its PEP 691 JSON index, with the `hashes.sha256`
the gateway binds provenance to.

devpi serves no provenance (nor do the registries reachable here: see the trust-signals page),
so its index, read straight, says `absent`. To verify provenance over devpi's own digests, a
front on loopback passes devpi's JSON index through and adds each file's `provenance` URL, as a
PEP 740 index does; the provenance objects there are made by the test's own signing setup over
the wheels' real digests. Verified against a test CA; production roots are pinned from
configuration.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import loopback
from tests.test_federation import all_entries, keys
from tests.test_pypi_provenance import SETUP, provenance
from tests.test_pypi_signals import PROJECT, SERVER, entries
from tests.test_real_mirrors import (
    PIP_INSTALL,
    build_wheel,
    free_port,
    require_tool,
    running,
    tool_env,
)
from tests.trusted import ROOT, explained, start_gateway

pytestmark = [pytest.mark.mirrors, pytest.mark.slow]

VERSIONS = ("1.0.0", "1.1.0")  # 1.1.0's provenance attests other bytes
PASSWORD = "devpi-test"
JSON_INDEX = "application/vnd.pypi.simple.v1+json"


@dataclass
class Devpi:
    index: str  # the stage index's simple URL
    wheels: dict[str, Path]  # version -> the wheel uploaded


def _devpi(name: str) -> Path | None:
    import sys

    beside = Path(sys.executable).with_name(name)
    return beside if beside.exists() else None


def _request(url: str, data: bytes | None, headers: dict[str, str], method: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with opener.open(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def _upload(index: str, wheel: Path, version: str) -> None:
    """What `twine upload` sends: the legacy upload form, with basic auth."""
    boundary = uuid.uuid4().hex
    fields = {":action": "file_upload", "name": PROJECT, "version": version}
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{wheel.name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    )  # fmt: skip
    auth = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Authorization": f"Basic {auth}"}  # fmt: skip
    _request(index, b"".join(parts), headers, "POST")


@pytest.fixture(scope="module")
def devpi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devpi]:
    """devpi-server, offline, with a stage index `root/dev` holding acme-tools 1.0.0 and
    1.1.0, uploaded as twine uploads them."""
    init = require_tool(_devpi("devpi-init"), "devpi-server", PIP_INSTALL)
    server = require_tool(_devpi("devpi-server"), "devpi-server", PIP_INSTALL)
    root = tmp_path_factory.mktemp("devpi")
    env = tool_env(root / "home")
    import subprocess

    subprocess.run([str(init), "--serverdir", str(root / "srv"), "--root-passwd", PASSWORD],
                   env=env, cwd=root, check=True, capture_output=True, timeout=60)  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(server), "--serverdir", str(root / "srv"), "--host", "127.0.0.1",
            "--port", str(port), "--offline-mode"]  # fmt: skip
    with running(args, env=env, cwd=root, log=root / "devpi.log", ready_url=f"{base}/+api"):
        login = orjson.loads(_request(
            f"{base}/+login", orjson.dumps({"user": "root", "password": PASSWORD}),
            {"Content-Type": "application/json", "Accept": "application/json"}, "POST"))  # fmt: skip
        token = base64.b64encode(f"root:{login['result']['password']}".encode()).decode()
        _request(f"{base}/root/dev", orjson.dumps({"type": "stage", "bases": []}),
                 {"X-Devpi-Auth": token, "Content-Type": "application/json",
                  "Accept": "application/json"}, "PUT")  # fmt: skip
        wheels = {v: build_wheel(root / "dist", PROJECT, v) for v in VERSIONS}
        for version, wheel in wheels.items():
            _upload(f"{base}/root/dev/", wheel, version)
        yield Devpi(f"{base}/root/dev/+simple/", wheels)


class Front:
    """devpi's JSON index passed through, each file given a `provenance` URL (as a PEP 740
    index gives it); and the provenance source those URLs point at."""

    def __init__(self, devpi: Devpi) -> None:
        self.devpi = devpi
        self.url = ""
        self.source = ""
        self.source_down = False
        data = {v: w.read_bytes() for v, w in devpi.wheels.items()}
        self.provenance = {
            devpi.wheels["1.0.0"].name: provenance(
                name=devpi.wheels["1.0.0"].name, digest=hashlib.sha256(data["1.0.0"]).hexdigest()),
            devpi.wheels["1.1.0"].name: provenance(
                name=devpi.wheels["1.1.0"].name, digest=hashlib.sha256(b"other").hexdigest()),
        }  # fmt: skip

    def index_app(self) -> web.Application:
        async def project(request: web.Request) -> web.Response:
            url = f"{self.devpi.index}{request.match_info['project']}/"
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, headers={"Accept": JSON_INDEX}) as answer,
            ):
                assert answer.content_type == JSON_INDEX  # devpi speaks PEP 691
                page = await answer.json(content_type=None)
            for file in page["files"]:
                file["provenance"] = f"{self.source}/{file['filename']}/provenance"
            return web.Response(body=orjson.dumps(page), content_type=JSON_INDEX)

        app = web.Application()
        app.router.add_get("/simple/{project}/", project)
        return app

    def source_app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            found = self.provenance.get(request.match_info["file"])
            if self.source_down or found is None:
                return web.Response(status=503 if self.source_down else 404)
            return web.Response(body=found, content_type="application/vnd.pypi.integrity.v1+json")

        app = web.Application()
        app.router.add_get("/{file}/provenance", answer)
        return app


@pytest.fixture
async def front(devpi: Devpi) -> AsyncIterator[Front]:
    made = Front(devpi)
    async with loopback(made.index_app()) as url, loopback(made.source_app()) as source:
        made.url, made.source = url, source
        yield made


async def start(tmp_path: Path, make_config: Any, serve: Any, mirror: str, source: str) -> Any:
    return await start_gateway(
        tmp_path, make_config, serve, entries(list(VERSIONS)),
        trust={"pypi": {"trusted_root": ROOT, "provenance_sources": [f"{source}/"]}},
        mirrors={"pypi": mirror, "verify": {"mode": "annotate", "ttl": "1h"}},
        deny={"provenance": "invalid"}, view=("secure", {"provenance": "verified"}), setup=SETUP,
    )  # fmt: skip


async def package_of(client: Any, version: str) -> dict[str, Any]:
    body = await (
        await client.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/{version}")
    ).json()
    [package] = body["_meta"]["com.example.mcp-gateway"]["packages"]
    found: dict[str, Any] = package
    return found


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def test_devpi_read_straight_has_the_version_and_no_provenance(
    devpi: Devpi, front: Front, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    client = await start(tmp_path, make_config, serve, devpi.index, front.source)
    package = await package_of(client, "1.0.0")
    assert package["verification"] == "available"  # its PEP 691 JSON index lists the wheel
    assert package["signals"]["provenance"]["state"] == "absent"
    assert "lists no provenance" in package["signals"]["provenance"]["why"]
    wheel = devpi.wheels["1.0.0"]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert package["signals"]["integrity"] == f"{wheel.name} sha256:{digest}"  # devpi's own
    assert versions_of(keys(await all_entries(client))) == set(VERSIONS)
    assert versions_of(keys(await all_entries(client, "/views/secure"))) == set()


async def test_provenance_over_devpis_digest_is_verified_and_over_other_bytes_invalid(
    front: Front, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    client = await start(tmp_path, make_config, serve, f"{front.url}/simple/", front.source)
    package = await package_of(client, "1.0.0")
    provenance_found = package["signals"]["provenance"]
    assert provenance_found["state"] == "verified"
    assert provenance_found["repository"] == "https://github.com/acme/tools"
    assert versions_of(keys(await all_entries(client))) == {"1.0.0"}  # 1.1.0: invalid
    assert versions_of(keys(await all_entries(client, "/views/secure"))) == {"1.0.0"}
    read = (await explained(client, SERVER, "1.1.0"))["default"]["signals"]
    assert read[0].startswith("provenance invalid")
    assert any("not the sha256 the mirror serves" in line for line in read)


async def test_with_the_provenance_source_down_nothing_is_hidden(
    front: Front, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    front.source_down = True
    client = await start(tmp_path, make_config, serve, f"{front.url}/simple/", front.source)
    assert (await package_of(client, "1.1.0"))["signals"]["provenance"]["state"] == "unknown"
    assert versions_of(keys(await all_entries(client))) == set(VERSIONS)
    assert versions_of(keys(await all_entries(client, "/views/secure"))) == set()
