"""OCI signatures, provenance and SBOMs against a real registry: Debian's `docker-registry`
(the CNCF distribution registry, 2.8) on loopback. It has no referrers API, so the gateway
reads what cosign and oras write there instead: the referrers tag `sha256-<hex>` and the
legacy cosign tags. The images and what is attached to them are `tests/oci_images.py`'s,
pushed over the registry's own HTTP API; Sigstore bundles are made by the test's signing
setup over the manifest digests the registry computed (verified against a test CA;
production roots are pinned from configuration)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.oci_images import Scenario, digest_of, push_all
from tests.test_federation import all_entries, keys
from tests.test_oci_signals import check_every_version, start
from tests.test_real_mirrors import free_port, require_tool, running, tool_env
from tests.test_signals import OTHER_CA, SETUP

pytestmark = [pytest.mark.mirrors, pytest.mark.slow]

INSTALL = "apt-get install docker-registry (Debian's CNCF distribution registry)"


class HttpWriter:
    """Pushes blobs and manifests with the distribution API (monolithic blob uploads)."""

    tag_schema = True  # distribution 2.8 has no referrers API

    def __init__(self, base: str) -> None:
        self.base = base
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        return self._opener.open(request, timeout=30)

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        with self._send("POST", f"{self.base}/v2/{repo}/blobs/uploads/", b"", {}) as started:
            location = started.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        joiner = "&" if "?" in location else "?"
        with self._send("PUT", f"{location}{joiner}digest={digest}", data,
                        {"Content-Type": "application/octet-stream"}) as done:  # fmt: skip
            assert done.status == 201
        return digest

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        with self._send("PUT", url, body, {"Content-Type": media_type}) as done:
            assert done.status == 201
            digest: str = done.headers["Docker-Content-Digest"]
        assert digest == digest_of(body)  # the registry computed the same digest
        return digest


def registry_process(root: Path) -> tuple[list[str], int]:
    """The command line of a registry storing under `root`, on a free loopback port."""
    found = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    binary = require_tool(Path(found), "docker-registry", INSTALL)
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    return [str(binary), "serve", str(root / "config.yml")], port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Scenario]]:
    root = tmp_path_factory.mktemp("registry")
    args, port = registry_process(root)
    base = f"http://127.0.0.1:{port}"
    env = tool_env(root / "home")
    with running(args, env=env, cwd=root, log=root / "registry.log", ready_url=f"{base}/v2/"):
        scenario = push_all(HttpWriter(base), SETUP, OTHER_CA)
        yield f"127.0.0.1:{port}", scenario


def test_the_registry_has_no_referrers_api(registry: tuple[str, Scenario]) -> None:
    host, scenario = registry
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(f"http://{host}/v2/acme/tool/referrers/{scenario.digests['1.0.0']}")
    raised.value.close()
    assert raised.value.code == 404  # so the tag schema below is what is read


async def test_each_image_gets_its_signature_and_provenance_through_the_tag_schema(
    registry: tuple[str, Scenario], tmp_path: Path, make_config: Any, serve: Any
) -> None:
    host, scenario = registry
    client = await start(tmp_path, make_config, serve, host, scenario)
    await check_every_version(client, scenario)


async def test_with_the_registry_stopped_nothing_is_hidden_but_what_a_rule_asks(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, make_config: Any, serve: Any
) -> None:
    root = tmp_path_factory.mktemp("stopped")
    args, port = registry_process(root)
    base = f"http://127.0.0.1:{port}"
    with running(args, env=tool_env(root / "home"), cwd=root, log=root / "registry.log",
                 ready_url=f"{base}/v2/"):  # fmt: skip
        scenario = push_all(HttpWriter(base), SETUP, OTHER_CA)
    client = await start(tmp_path, make_config, serve, f"127.0.0.1:{port}", scenario)
    served = {v for name, v in keys(await all_entries(client)) if name == "io.github.acme/tool"}
    assert served == set(scenario.expected)  # unknown, never invalid
    signed = keys(await all_entries(client, "/views/signed"))
    assert [v for name, v in signed if name == "io.github.acme/tool"] == []
